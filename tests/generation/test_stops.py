"""Stop strings (several, the first wins), --min-length, --max-time, and how each stream ended."""

import math

import pytest
import torch

import chargen
from chargen.generation.settings import SamplingSettings
from chargen.generation.stops import StopFilter


@pytest.fixture(scope="module")
def model(tiny_run):
    return chargen.load(tiny_run)


def run(stop_filter: StopFilter, text: str, armed_from: int = 0) -> str:
    out = ""
    for i, c in enumerate(text):
        out += stop_filter.push(c, armed=i + 1 >= armed_from)
        if stop_filter.stopped:
            return out
    return out + stop_filter.flush()


def test_the_first_stop_string_to_appear_wins():
    f = StopFilter(("dog", "cat"))
    assert run(f, "the cat and the dog") == "the " and f.stopped_by == "cat"
    f = StopFilter(("cat", "dog"))
    assert run(f, "a dog, a cat") == "a " and f.stopped_by == "dog"
    f = StopFilter(("xyz", "b"))
    assert run(f, "aaxyb") == "aaxy" and f.stopped_by == "b"  # 'xy' held back, then released


def test_a_single_string_or_none_still_work():
    assert run(StopFilter(("\n\n",)), "a\nb\n\nc") == "a\nb"
    assert run(StopFilter(()), "a\n\nb") == "a\n\nb"


def test_stops_before_the_minimum_length_are_ignored():
    f = StopFilter(("x",))
    assert run(f, "axbxc", armed_from=3) == "axb" and f.stopped_by == "x"
    f = StopFilter(("\n\n",))
    assert run(f, "\n\nab\n\ncd", armed_from=5) == "\n\nab"


def test_generated_text_never_holds_the_first_stop(model):
    free = model.generate("the ", length=300, seed=4)
    stops = ("e", "o")
    text = model.generate("the ", length=300, seed=4, stop=list(stops))
    first = min(free.find(s) for s in stops if s in free)
    assert text == free[:first]
    assert model.generate("the ", length=300, seed=4, stop_strings=["o", "e"]) == text  # the HF name


def test_min_length_holds(model):
    for seed in range(4):
        text = model.generate("the ", length=200, seed=seed, stop=" ", min_length=30)
        assert len(text) >= 30 and " " not in text[30:]  # chars are tokens here
        free = model.generate("the ", length=200, seed=seed)
        assert free.startswith(text)


def test_outcomes_say_why_and_how_likely(model):
    sampler = model.sampler(3)
    sampler.feed("the ")
    settings = SamplingSettings(length=80, seed=1, stop=("q", "z"), temp=1.5)
    texts = [""] * 3
    for pieces in sampler.stream_batch(settings, score=True):
        texts = [t + p for t, p in zip(texts, pieces)]
    for text, outcome in zip(texts, sampler.outcomes):
        assert outcome.stop_reason in ("stop", "length")
        if outcome.stop_reason == "stop":
            assert outcome.stop_string in ("q", "z") and outcome.tokens == len(text) + 1
        else:
            assert outcome.tokens == 80 and outcome.stop_string is None
        assert 0 < outcome.nats_per_char < 10


def test_nats_are_those_of_the_model_on_the_generated_text(model):
    sample = next(model.samples("the ", length=60, seed=2, temp=1.2, repetition_penalty=1.3))
    ids = torch.as_tensor(model.tokenizer.encode("\nthe " + sample.text))
    with torch.inference_mode():
        logits, _ = model.model(ids[None, :-1])
    logp = torch.log_softmax(logits[0].float(), -1).gather(1, ids[1:, None])[:, 0]
    expected = -logp[-60:].sum().item() / 60
    assert math.isclose(sample.outcome.nats_per_char, expected, rel_tol=1e-3)


def test_max_time_ends_a_sample_by_the_clock(model):
    ticks = iter(range(1000))
    sampler = model.sampler()
    sampler.feed("the ")
    text = "".join(p[0] for p in sampler.stream_batch(SamplingSettings(length=100, seed=0, max_time=10),
                                                      clock=lambda: float(next(ticks))))
    assert len(text) == 9 and sampler.outcomes[0].stop_reason == "time"


def test_stop_string_ends_and_is_not_included(model):
    full = model.generate("the ", length=200, temp=0)
    stop = full[10:13]
    cut = model.generate("the ", length=200, temp=0, stop=stop)
    assert cut == full[:full.index(stop)]
    assert "".join(model.stream("the ", length=200, temp=0, stop=stop)) == cut


def test_a_possible_start_of_the_stop_string_is_held_back_until_it_is_decided():
    f = StopFilter(("END",))
    assert f.push("abcE") == "abc"  # "E" may begin "END"
    assert f.push("N") == ""
    assert f.push("x") == "ENx" and not f.stopped  # it did not: released
    assert f.push("yyEN") == "yy"
    assert f.push("Dzz") == "" and f.stopped
    assert f.pending == ""


def test_the_stop_string_may_arrive_in_one_piece_or_across_many():
    for pieces in (["hello\n\nworld"], list("hello\n\nworld"), ["hel", "lo\n", "\nwor", "ld"]):
        f = StopFilter(("\n\n",))
        shown = "".join(f.push(p) for p in pieces if not f.stopped)
        assert shown == "hello" and f.stopped


def test_flush_gives_back_what_was_held_when_the_text_ends():
    f = StopFilter(("\n\n",))
    assert f.push("last line\n") == "last line"
    assert f.flush() == "\n" and f.flush() == ""


def test_beam_search_cuts_at_the_first_of_several_stops(model):
    free = model.generate("the ", beam=3, length=60)
    stops = [free[40:43], free[20:22]]  # the second given appears first
    first = min(free.index(s) for s in stops)
    assert first <= 20 and model.generate("the ", beam=3, length=60, stop=stops) == free[:first]
