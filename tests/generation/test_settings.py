"""SamplingSettings: the Hugging Face names, several stops, and one clear error per bad value."""

import pytest

import chargen
from chargen.errors import ChargenError
from chargen.generation.settings import HF_NAMES, SamplingSettings, check_length
from chargen.limits import MAX_LENGTH


def test_hugging_face_names_map_to_ours():
    s = SamplingSettings.from_kwargs(temperature=0.5, max_new_tokens=30, stop_strings=["a", "b"],
                                     no_repeat_ngram_size=3, min_new_tokens=4, repetition_penalty=1.2, max_time=2.0)
    assert (s.temp, s.length, s.stops, s.no_repeat_ngram, s.min_length, s.repetition_penalty, s.max_time) == \
        (0.5, 30, ("a", "b"), 3, 4, 1.2, 2.0)
    assert set(HF_NAMES.values()) <= {f for f in SamplingSettings.__dataclass_fields__}


def test_from_kwargs_keeps_the_base_and_names_mistakes():
    base = SamplingSettings(temp=0.3, top_p=0.9)
    s = SamplingSettings.from_kwargs(base, length=7)
    assert (s.temp, s.top_p, s.length) == (0.3, 0.9, 7)
    with pytest.raises(ChargenError, match="unknown sampling setting 'tmep'; did you mean temp"):
        SamplingSettings.from_kwargs(tmep=1)
    with pytest.raises(ChargenError, match="given twice"):
        SamplingSettings.from_kwargs(temp=1, temperature=2)


@pytest.mark.parametrize("field,value,option", [
    ("repetition_penalty", 0, "--repetition-penalty"), ("repetition_penalty", float("nan"), "--repetition-penalty"),
    ("repetition_penalty", 1000, "--repetition-penalty"), ("no_repeat_ngram", -1, "--no-repeat-ngram"),
    ("no_repeat_ngram", 1.5, "--no-repeat-ngram"), ("repeat_window", -2, "--repeat-window"),
    ("min_length", -1, "--min-length"), ("max_time", 0, "--max-time"), ("max_time", float("inf"), "--max-time"),
    ("stop", ("a", ""), "--stop"), ("stop", ("a", 3), "--stop"),
])
def test_bad_values_are_one_line_naming_the_option(field, value, option):
    with pytest.raises(ChargenError) as info:
        SamplingSettings(**{field: value}).validate()
    assert str(info.value).startswith(option) and "\n" not in str(info.value)


def test_stops_accept_one_several_or_none():
    assert SamplingSettings(stop="x").stops == ("x",)
    assert SamplingSettings(stop=["x", "y"]).stops == ("x", "y")
    assert SamplingSettings().stops == ()
    assert not SamplingSettings().controls_on and SamplingSettings(no_repeat_ngram=2).controls_on


@pytest.mark.parametrize("bad, message", [
    (dict(temp=-1), "--temp -1: must be a number >= 0"), (dict(temp=float("nan")), "--temp nan"),
    (dict(temp=float("inf")), "--temp inf"), (dict(top_k=-2), "--top-k -2: must be >= 0"),
    (dict(top_p=0), r"--top-p 0: must be in \(0, 1\]"), (dict(top_p=1.5), "--top-p 1.5"),
    (dict(length=-1), "--length -1: must be between 0 and 10,000,000"),
    (dict(length=MAX_LENGTH + 1), "--length 10000001"),
    (dict(seed=1 << 64), "--seed 18446744073709551616: must be a whole number that fits in 64 bits"),
    (dict(stop=""), "--stop: a stop string must not be empty"),
])
def test_bad_settings_are_rejected(bad, message):
    with pytest.raises(ChargenError, match=message):
        SamplingSettings(**bad).validate()


def test_bad_settings_are_rejected_before_generating(tiny_run):
    model = chargen.load(tiny_run)
    for bad in (dict(temp=-1), dict(temp=float("nan")), dict(top_k=-2), dict(top_p=0), dict(top_p=1.5),
                dict(length=-1), dict(stop="")):
        with pytest.raises(ChargenError):
            model.generate("the", **bad)


def test_defaults_are_valid_and_the_edges_allowed():
    assert SamplingSettings().validate() == SamplingSettings(temp=0.8, top_k=0, top_p=1.0, length=500)
    SamplingSettings(temp=0, top_k=0, top_p=1.0, length=0, seed=-(1 << 63)).validate()
    SamplingSettings(length=MAX_LENGTH, seed=(1 << 64) - 1).validate()


def test_check_length_names_the_option():
    check_length(MAX_LENGTH)
    with pytest.raises(ChargenError, match="^/len -5: must be between 0 and 10,000,000$"):
        check_length(-5, "/len")
