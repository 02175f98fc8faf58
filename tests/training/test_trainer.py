"""The training loop: clipping, learning, fine-tuning, the auto options it settles, NaN steps, full disks."""

import json
import math

import pytest
import torch

import chargen
from chargen.checkpoint import BEST_NAME, LAST_NAME, load_checkpoint
from chargen.errors import ChargenError
from chargen.training import AutoChosen, StepDone, TrainConfig, Trainer
from chargen.training.auto import EVAL_EVERY_TOKENS, auto_ar, auto_dropout, auto_lr, auto_tar, auto_weight_decay
from chargen.training.trainer import MAX_BAD_STEPS_IN_A_ROW
from tests import faults
from tests.conftest import RUN, TINY_OPTIONS, make_text


def test_gradient_clipping_caps_the_norm(tiny_corpus, tmp_path):
    config = TrainConfig(**{**TINY_OPTIONS, "max_steps": 5, "grad_clip": 0.05, "lr": 0.5, "warmup_steps": 0},
                         out=str(tmp_path / "run"))
    reported, applied = [], []
    trainer = Trainer(config, [str(tiny_corpus)], on_event=lambda e: isinstance(e, StepDone) and reported.append(e.grad_norm))
    original_step = trainer.optimizer.step

    def step_and_measure(*args, **kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        applied.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        return original_step(*args, **kwargs)

    trainer.optimizer.step = step_and_measure
    trainer.run()
    assert len(applied) == 5
    assert all(norm <= 0.05 * 1.0001 for norm in applied)
    assert all(norm > 0.05 for norm in reported)  # the log shows the norm before clipping


def test_tiny_model_overfits_tiny_corpus(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_text("abcdefghij" * 400)
    result = chargen.train(str(path), out=str(tmp_path / "run"), layers=1, hidden=32, seq_len=20,
                           batch_size=8, max_steps=150, eval_every=150, lr=1e-2, dropout=0.0, ar=0.0, tar=0.0,
                           warmup_steps=10, preview_length=0, precision="fp32", device="cpu")
    assert result.best_val_loss < 0.05  # a deterministic sequence: near-zero loss
    assert result.step == 150 and result.reason == "max_steps"


def test_fine_tuning_starts_from_the_checkpoint_weights(tiny_run, tmp_path):
    corpus = tmp_path / "same.txt"
    corpus.write_text(make_text(200, seed=9))
    before = load_checkpoint(tiny_run)
    trainer = Trainer(TrainConfig(**{**TINY_OPTIONS, "max_steps": 1}, init_from=str(tiny_run),
                                  out=str(tmp_path / "ft")), [str(corpus)])
    torch.testing.assert_close(trainer.model.rnn.weight_hh_l0, before.model.rnn.weight_hh_l0)
    assert trainer.optimizer.state_dict()["state"] == {}  # a fresh optimizer


def test_metrics_file_records_the_run(tiny_run):
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in records if "train_loss" in r]
    val_rows = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in val_rows] == [30, 60]
    assert [r["step"] for r in train_rows] == list(range(10, 61, 10))  # every --log-every steps
    assert {"step", "time", "train_loss", "lr", "grad_norm", "chars_per_sec"} <= set(train_rows[0])
    assert val_rows[-1]["val_bpc"] == pytest.approx(val_rows[-1]["val_loss"] / math.log(2))


def test_auto_eval_every_spaces_evaluations_by_training_tokens(tiny_corpus, tmp_path):
    intervals = []
    for seq_len in (16, 32):
        config = TrainConfig(**{**TINY_OPTIONS, "seq_len": seq_len, "eval_every": "auto"},
                             out=str(tmp_path / f"s{seq_len}"))
        trainer = Trainer(config, [str(tiny_corpus)])
        intervals.append(trainer.config.eval_every * 8 * seq_len)  # tokens between evaluations
        trainer.lock.close()
    assert intervals == [EVAL_EVERY_TOKENS, EVAL_EVERY_TOKENS]


# ---- the auto options, settled from the planned epochs ---------------------------------------------

def _auto_events(tiny_corpus, tmp_path, **options):
    events = []
    # 64-token windows: a few dozen steps per epoch of the tiny corpus, so several epochs are quick.
    trainer = Trainer(TrainConfig(**{**TINY_OPTIONS, "seq_len": 64, "eval_every": 1000, **options},
                                  out=str(tmp_path / "run")),
                      [str(tiny_corpus)], on_event=events.append)
    trainer.run()
    return trainer, [e for e in events if isinstance(e, AutoChosen)]


def test_auto_options_follow_a_step_budget_from_the_start(tiny_corpus, tmp_path):
    trainer, chosen = _auto_events(tiny_corpus, tmp_path, max_steps=None, epochs=8)
    epochs = math.ceil(8 * len(trainer.batches)) / len(trainer.batches)
    assert [(e.step, e.planned_epochs) for e in chosen] == [(0, pytest.approx(epochs))]
    assert trainer.model.config.dropout == trainer.model.drop.p == auto_dropout(epochs) > 0
    assert trainer.optimizer.param_groups[0]["weight_decay"] == chosen[0].weight_decay == auto_weight_decay(epochs)
    assert trainer.peak_lr == chosen[0].lr == auto_lr(epochs) > 5e-3
    assert (trainer.ar, trainer.tar) == (chosen[0].ar, chosen[0].tar) == (auto_ar(epochs), auto_tar(epochs)) == (0, 0)
    assert trainer.optimizer.param_groups[1]["weight_decay"] == 0  # biases and the embedding: never
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 0, "planned_epochs": round(epochs, 2), "dropout": chosen[0].dropout,
            "weight_decay": chosen[0].weight_decay, "lr": chosen[0].lr, "ar": 0.0, "tar": 0.0} in records


def test_auto_options_for_a_time_budget_are_set_after_timing_a_few_steps(tiny_corpus, tmp_path):
    # The time budget is ample for these tiny steps, so the step limit is what bounds the epochs.
    trainer, chosen = _auto_events(tiny_corpus, tmp_path, max_steps=200, max_time=600.0)
    assert [(e.step, e.planned_epochs) for e in chosen] == [(100, pytest.approx(200 / len(trainer.batches)))]
    assert trainer.model.drop.p == chosen[0].dropout > 0
    assert trainer.optimizer.param_groups[0]["weight_decay"] == chosen[0].weight_decay
    assert trainer.peak_lr == chosen[0].lr
    assert (trainer.ar, trainer.tar) == (chosen[0].ar, chosen[0].tar)


def test_explicit_dropout_weight_decay_lr_and_ar_are_kept(tiny_corpus, tmp_path):
    trainer, chosen = _auto_events(tiny_corpus, tmp_path, max_steps=30, dropout=0.05, weight_decay=0.01, lr=3e-3,
                                   ar=0.5, tar=0.25)
    assert chosen == [] and trainer.model.drop.p == trainer.model.config.dropout == 0.05
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.01 and trainer.peak_lr == 3e-3
    assert (trainer.ar, trainer.tar) == (0.5, 0.25)


def test_only_the_auto_option_is_chosen(tiny_corpus, tmp_path):
    trainer, chosen = _auto_events(tiny_corpus, tmp_path, max_steps=None, epochs=8, dropout=0.05, lr=3e-3, ar=1.0, tar=1.0)
    assert [(e.dropout, e.weight_decay, e.lr) for e in chosen] == [(None, auto_weight_decay(chosen[0].planned_epochs), None)]
    assert trainer.model.drop.p == 0.05
    assert chosen[0].describe() == f"weight decay {chosen[0].weight_decay:g}"


# ---- NaN / inf -------------------------------------------------------------------------------------

def _poison(trainer: Trainer, bad_calls: set[int]):
    """Make the forward pass return NaN logits on the given (1-based) calls."""
    real, calls = trainer.step_fn, [0]

    def step_fn(x, state, **options):
        calls[0] += 1
        logits, *rest = real(x, state, **options)
        return (logits * float("nan") if calls[0] in bad_calls else logits), *rest

    trainer.step_fn = step_fn


def test_nan_steps_are_skipped_and_counted(tiny_corpus, tmp_path):
    trainer = Trainer(TrainConfig(**RUN, out=str(tmp_path / "run")), [str(tiny_corpus)])
    _poison(trainer, {3, 4, 10})
    finished = trainer.run()
    assert finished.step == RUN["max_steps"]
    ckpt = load_checkpoint(tmp_path / "run" / LAST_NAME)
    assert ckpt.summary["skipped_steps"] == 3
    assert all(torch.isfinite(p).all() for p in ckpt.model.parameters())


def test_nan_steps_in_a_row_stop_with_a_clear_message_and_keep_the_checkpoint(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(TrainConfig(**RUN, out=str(run)), [str(tiny_corpus)])
    _poison(trainer, set(range(20, 20 + MAX_BAD_STEPS_IN_A_ROW)))
    before = None

    def remember(event):
        nonlocal before
        before = (run / LAST_NAME).read_bytes() if (run / LAST_NAME).exists() else None

    trainer.on_event = remember
    with pytest.raises(ChargenError) as info:
        trainer.run()
    message = str(info.value)
    assert f"diverged at step {19 + MAX_BAD_STEPS_IN_A_ROW}" in message
    assert "lower the learning rate" in message and "--lr" in message and f"--resume {run}" in message
    assert (run / LAST_NAME).read_bytes() == before  # nothing written after the trouble
    load_checkpoint(run / LAST_NAME)


def test_nan_weights_are_never_saved(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(TrainConfig(**RUN, out=str(run)), [str(tiny_corpus)])
    trainer.run()
    good = (run / LAST_NAME).read_bytes()
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = float("inf")
    with pytest.raises(ChargenError, match="NaN/inf; not saving"):
        trainer.save(LAST_NAME, 0.0)
    assert (run / LAST_NAME).read_bytes() == good


# ---- a full or read-only disk ---------------------------------------------------------------------

@pytest.mark.parametrize("fault, message", [
    ("enospc@write", "No space left on device; earlier files are untouched; free some disk space (or choose another --out); then continue with: chargen train --resume"),
    ("erofs@open", "Read-only file system; earlier files are untouched; the directory is not writable"),
    ("enospc@rename", "No space left on device; earlier files are untouched"),
])
def test_full_or_read_only_disk_while_saving_is_a_clear_error(tiny_run, tmp_path, monkeypatch, cli, fault, message):
    run = tmp_path / "run"
    run.mkdir()
    for name in (LAST_NAME, BEST_NAME):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    before = {name: (run / name).read_bytes() for name in (LAST_NAME, BEST_NAME)}
    faults.install(fault, monkeypatch)
    code, out, err = cli("train", "--resume", run, "--max-steps", "70", "--plain")
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{run / LAST_NAME}: cannot save the checkpoint: {message}" in err
    assert {name: (run / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in run.iterdir()) == [".lock", BEST_NAME, LAST_NAME, "metrics.jsonl"]


def test_a_first_save_that_fails_says_to_start_again(tiny_corpus, tmp_path, monkeypatch):
    faults.install("enospc@write", monkeypatch)
    with pytest.raises(ChargenError, match="cannot save the checkpoint: No space left on device; .*; then start the run again$"):
        chargen.train(str(tiny_corpus), out=str(tmp_path / "run"), **RUN)
