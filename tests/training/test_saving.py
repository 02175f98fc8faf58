"""--save-every: time-capped saves of ``last`` between evaluations, and exact resume from one.

The trainer's clock is faked (one second per step), so nothing sleeps and the saves fall on
known steps.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import chargen.training.trainer as trainer_module
from chargen.checkpoint import BEST_NAME, LAST_NAME, load_checkpoint
from chargen.errors import ChargenError
from chargen.limits import MAX_SECONDS
from chargen.training import CheckpointSaved, StepDone, TrainConfig, Trainer, read_metrics
from chargen.training.auto import AUTO_SAVE_EVERY_SECONDS
from chargen.training.config import RESUME_OVERRIDABLE
from chargen.training.saving import save_due, save_interval
from chargen.ui.cli import build_parser, main

# Tiny and fast, with dropout on so that the RNG state matters for exactness; evaluations only at
# the end, so that every save before it is a time-capped one.
RUN = dict(layers=1, hidden=32, seq_len=16, batch_size=8, max_steps=25, eval_every=1000, log_every=1,
           preview_length=0, seed=0, device="cpu", precision="fp32", warmup_steps=5, dropout=0.2, save_every=5)


@pytest.fixture
def corpus(tiny_corpus) -> Path:
    return tiny_corpus


class FakeClock:
    """Stands in for the trainer's ``time`` module: the clock moves one second per step."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class Killed(Exception):
    """What a kill -9 would do: the trainer goes away with nothing more saved."""


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(trainer_module, "time", fake)
    return fake


def train(clock: FakeClock, corpus: Path | None, out: Path, kill_at: int | None = None, resume: bool = False,
          **options) -> list:
    """Run (or resume) a fake-clocked run; ``kill_at`` drops it right after a save at that step."""
    events = []

    def on_event(event):
        events.append(event)
        if isinstance(event, StepDone):
            clock.now += 1.0
        if isinstance(event, CheckpointSaved) and event.step == kill_at:
            raise Killed

    config = TrainConfig(**dict(RUN, **options), out=None if resume else str(out))
    trainer = Trainer(config, [str(corpus)] if corpus else None, on_event=on_event, resume=str(out) if resume else None)
    if kill_at is None:
        trainer.run()
    else:
        with pytest.raises(Killed):
            trainer.run()
    return events


def saves(events) -> list[tuple[int, str]]:
    return [(e.step, e.path.name) for e in events if isinstance(e, CheckpointSaved)]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


# ---- the decision ------------------------------------------------------------------------------

def test_save_is_due_once_the_interval_has_passed_since_the_newest_save():
    assert not save_due(4.9, 0.0, 5)
    assert save_due(5.0, 0.0, 5)
    assert not save_due(104.0, 100.0, 5)  # counts from the newest save (or the resume), not from 0
    assert save_due(105.0, 100.0, 5.0)


def test_auto_is_the_documented_constant_and_off_never_saves():
    assert save_interval("auto") == AUTO_SAVE_EVERY_SECONDS == 600
    assert save_interval("off") is None
    assert save_interval(90) == 90.0
    assert not save_due(AUTO_SAVE_EVERY_SECONDS - 1, 0.0, "auto")
    assert save_due(AUTO_SAVE_EVERY_SECONDS, 0.0, "auto")
    assert not save_due(1e9, 0.0, "off")


# ---- the option ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["auto", "off", 1, 0.5, 600.0, MAX_SECONDS])
def test_valid_values(value):
    assert TrainConfig(save_every=value).validate().save_every == value


@pytest.mark.parametrize("value", [0, -5, math.nan, math.inf, MAX_SECONDS + 1, "never", "", True, None])
def test_invalid_values_are_one_clear_error(value):
    with pytest.raises(ChargenError) as info:
        TrainConfig(save_every=value).validate()
    message = str(info.value)
    assert message.startswith(f"--save-every {value}: must be auto, off or a duration")
    assert "\n" not in message


def test_help_names_the_default_from_the_constant_and_it_may_change_on_resume():
    field = next(f for f in fields(TrainConfig) if f.name == "save_every")
    assert field.default == "auto"
    assert f"auto for {AUTO_SAVE_EVERY_SECONDS // 60} minutes" in field.metadata["help"]
    assert "off" in field.metadata["help"]
    assert "save_every" in RESUME_OVERRIDABLE


@pytest.mark.parametrize("text, value", [("10m", 600.0), ("90s", 90.0), ("1h30m", 5400.0), ("off", "off"),
                                          ("OFF", "off"), ("auto", "auto")])
def test_cli_reads_durations_auto_and_off(text, value):
    args = build_parser().parse_args(["train", "corpus.txt", "--save-every", text])
    assert args.save_every == value
    assert build_parser().parse_args(["train", "corpus.txt"]).save_every == "auto"


@pytest.mark.parametrize("text", ["5x", "0", "-1m", "soon", ""])
def test_cli_bad_values_exit_2_with_one_line(text, corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:  # argparse's own usage error
        main(["train", str(corpus), "--out", str(tmp_path / "run"), f"--save-every={text}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--save-every" in err and repr(text) in err


def test_cli_out_of_range_value_exits_2_with_one_line(corpus, tmp_path, capsys):
    code = main(["train", str(corpus), "--out", str(tmp_path / "run"), "--save-every", "9000h"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"chargen train: error: --save-every {9000 * 3600.0}: must be auto, off "
                                        "or a duration > 0 and at most a year (e.g. 90s, 5m, 2h)"]
    assert not (tmp_path / "run" / LAST_NAME).exists()


# ---- the trainer -------------------------------------------------------------------------------

def test_last_alone_is_saved_between_evaluations(clock, corpus, tmp_path):
    events = train(clock, corpus, tmp_path / "run")
    # The clock reads k - 1 seconds after step k: due at 5 seconds, then 5 after each save.
    timed = [(step, LAST_NAME) for step in (6, 11, 16, 21)]
    assert saves(events) == timed + [(25, LAST_NAME), (25, BEST_NAME)]  # best only with the evaluation


def test_time_capped_checkpoint_holds_the_training_state(clock, corpus, tmp_path):
    train(clock, corpus, tmp_path / "run", kill_at=11)
    assert not (tmp_path / "run" / BEST_NAME).exists()
    saved = load_checkpoint(tmp_path / "run" / LAST_NAME, training_state=True)
    assert saved.summary["step"] == 11
    assert saved.summary["elapsed"] == 10.0
    assert any(name.startswith("optim.") for name in saved.training_state)
    assert "rng.torch" in saved.training_state


def test_off_saves_at_evaluations_only(clock, corpus, tmp_path):
    events = train(clock, corpus, tmp_path / "run", save_every="off", eval_every=10)
    assert saves(events) == [(10, LAST_NAME), (10, BEST_NAME), (20, LAST_NAME), (20, BEST_NAME),
                             (25, LAST_NAME), (25, BEST_NAME)]


def test_an_evaluation_restarts_the_interval(clock, corpus, tmp_path):
    events = train(clock, corpus, tmp_path / "run", eval_every=8, val_frac=0.0)
    steps = [step for step, name in saves(events) if name == LAST_NAME]
    assert steps == [6, 8, 13, 16, 21, 24, 25]  # 13: five seconds after the evaluation at 8, not after 6


def test_resume_after_a_kill_is_bit_exact_and_counts_from_the_resume(clock, corpus, tmp_path):
    train(clock, corpus, tmp_path / "straight")
    run = tmp_path / "killed"
    train(clock, corpus, run, kill_at=16)
    assert load_checkpoint(run / LAST_NAME).summary["step"] == 16
    # A kill after the save: lines past it, the last one cut in the middle of a write.
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": 17, "train_loss": 9.0}) + "\n" + '{"step": 18, "tra')

    events = train(clock, None, run, resume=True)

    # The interval counts from the resume: 5 seconds after it is step 22, not 21 as in a straight run.
    assert saves(events) == [(22, LAST_NAME), (25, LAST_NAME), (25, BEST_NAME)]
    straight, resumed = tensors(tmp_path / "straight" / LAST_NAME), tensors(run / LAST_NAME)
    assert straight.keys() == resumed.keys()
    for name in straight:  # weights, optimizer moments, RNG, carried state
        assert torch.equal(straight[name], resumed[name]), name
    want = [r["step"] for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if "train_loss" in r]
    got = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "train_loss" in r]
    assert got == want == list(range(1, 26))  # every step once: the torn line and steps past 16 are gone
    assert [r["train_loss"] for r in read_metrics(run / "metrics.jsonl") if r["step"] == 17] != [9.0]
