"""``chargen eval``: streamed, windowed and dynamic figures, and its errors."""

import json

import pytest

import chargen
from chargen.dynamic import DYNAMIC_LR
from chargen.ui.evaluate import progress_bar


def test_eval_reports_the_windowed_and_dynamic_figures_beside_the_streamed_one(tiny_run, tiny_corpus, cli):
    checkpoint = tiny_run / "best.safetensors"
    before = checkpoint.read_bytes()
    code, out, err = cli("eval", tiny_run, tiny_corpus, "--json")
    assert code == 0, err
    plain = json.loads(out)
    code, out, err = cli("eval", tiny_run, tiny_corpus, "--windows", "64", "--dynamic", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["nats_per_char"] == pytest.approx(plain["nats_per_char"])  # the streamed figure is unchanged
    assert result["windowed"]["window"] == 64 and result["windowed"]["tokens"] == plain["tokens"]
    assert result["windowed"]["nats_per_char"] > plain["nats_per_char"]  # less context, higher loss
    assert result["dynamic"]["lr"] == DYNAMIC_LR and result["dynamic"]["tokens"] == plain["tokens"]
    assert checkpoint.read_bytes() == before  # dynamic evaluation changed nothing on disk
    code, out, err = cli("eval", tiny_run, tiny_corpus, "--windows", "64", "--dynamic")
    assert [line.split()[0] for line in out.splitlines()] == ["streamed", "windowed", "dynamic"]
    assert "non-overlapping windows, each from a fresh state" in out


def test_eval_matches_the_api_on_the_whole_text(tiny_run, tiny_corpus, cli):
    code, out, err = cli("eval", tiny_run, tiny_corpus, "--json")
    whole = chargen.load(tiny_run).evaluate(tiny_corpus.read_text())
    assert json.loads(out)["nats_per_char"] == pytest.approx(whole.nats_per_char, rel=1e-6)


@pytest.mark.parametrize("option, message", [
    (["--windows", "0"], "--windows 0: give a window length"),
    (["--dynamic-lr", "-1"], "--dynamic-lr -1.0: give a rate"),
    (["--dynamic-decay", "2"], "--dynamic-decay 2.0: give a fraction"),
    (["--dynamic-segment", "0"], "--dynamic-segment 0: give 1"),
])
def test_bad_options_are_one_line_errors(tiny_run, tiny_corpus, cli, option, message):
    code, out, err = cli("eval", tiny_run, tiny_corpus, *option)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_unknown_characters_name_the_file(tiny_run, tmp_path, cli):
    held = tmp_path / "held.txt"
    held.write_text("some text \u2603 here")
    code, out, err = cli("eval", tiny_run, held)
    assert code == 2 and f"{held} has characters the model never saw" in err


def test_the_progress_bar_is_only_drawn_when_asked():
    with progress_bar(100, show=False) as start:
        assert start("scoring") is None
    with progress_bar(100, show=True) as start:
        update = start("scoring")
        update(50)
        update(500)  # past the estimate (multi-byte text): capped, no error
