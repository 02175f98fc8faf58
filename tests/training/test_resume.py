"""Resuming: bit-exact continuation after a stop, a signal or a kill; what a resumed run may change."""

import json
import os
import shutil
import signal
import subprocess

import numpy as np
import pytest

import chargen
from chargen.checkpoint import BEST_NAME, LAST_NAME, load_checkpoint
from chargen.training import AutoChosen, StepDone, TrainConfig, Trainer, TrainingInterrupted
from chargen.training.auto import auto_ar, auto_dropout, auto_lr, auto_tar, auto_weight_decay
from chargen.training.resume import corpus_fingerprint
from tests.conftest import (CHARGEN, CLI_RUN, RUN, TINY_OPTIONS, assert_bit_identical, make_text, spawn_train,
                            subprocess_env, train_until_stopped, wait_for_line)
from tests.test_checkpoint import as_written_before


@pytest.mark.parametrize("stop_step", [20, 15, 1])  # mid-interval, on an eval step, at once
def test_resume_is_bit_identical_to_an_uninterrupted_run(straight, tiny_corpus, tmp_path, stop_step):
    train_until_stopped(tiny_corpus, tmp_path / "resumed", stop_step)
    chargen.train(resume=str(tmp_path / "resumed"))

    assert_bit_identical(straight / LAST_NAME, tmp_path / "resumed" / LAST_NAME)
    reference = load_checkpoint(straight / LAST_NAME, training_state=True)
    resumed = load_checkpoint(tmp_path / "resumed" / LAST_NAME, training_state=True)
    assert reference.training_state.keys() == resumed.training_state.keys()
    for name, tensor in reference.training_state.items():  # optimizer moments, RNG, carried state
        assert (tensor == resumed.training_state[name]).all(), name
    assert resumed.summary["step"] == reference.summary["step"] == RUN["max_steps"]
    assert resumed.summary["best_val_loss"] == reference.summary["best_val_loss"]


def test_resume_crossing_an_epoch_and_with_a_gru(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text(make_text(80), encoding="utf-8")  # ~20 steps per epoch: 40 steps cross it
    options = dict(cell="gru", val_frac=0.0)
    chargen.train(str(corpus), out=str(tmp_path / "straight"), **RUN, **options)
    train_until_stopped(corpus, tmp_path / "resumed", 17, **options)
    chargen.train(resume=str(tmp_path / "resumed"))
    assert_bit_identical(tmp_path / "straight" / LAST_NAME, tmp_path / "resumed" / LAST_NAME)


def test_resume_with_weight_drop_locked_and_embedding_dropout_is_bit_identical(tmp_path):
    # Every regularizer draws from the RNG that a checkpoint carries; a 2-layer model, so that the
    # locked masks between layers take part too.
    options = dict(layers=2, weight_drop=0.3, locked_dropout=True, embed_dropout=0.1)
    corpus = tmp_path / "small.txt"
    corpus.write_text(make_text(300), encoding="utf-8")
    chargen.train(str(corpus), out=str(tmp_path / "straight"), **{**RUN, **options})
    train_until_stopped(corpus, tmp_path / "resumed", 17, **options)
    chargen.train(resume=str(tmp_path / "resumed"))
    assert_bit_identical(tmp_path / "straight" / LAST_NAME, tmp_path / "resumed" / LAST_NAME)
    config = load_checkpoint(tmp_path / "resumed" / LAST_NAME).model.config
    assert (config.weight_drop, config.locked_dropout, config.embed_dropout) == (0.3, True, 0.1)


def test_resumed_run_appends_metrics_without_duplicating_steps(straight, tiny_corpus, tmp_path):
    run = tmp_path / "resumed"
    train_until_stopped(tiny_corpus, run, 22)
    # A crash after the checkpoint leaves lines past it, one of them torn: resume drops them.
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 25, "train_loss": 9.0}) + "\n" + '{"step": 30, "tra')
    chargen.train(resume=str(run))

    def records(path):
        return [json.loads(line) for line in path.read_text().splitlines()]

    got, want = records(run / "metrics.jsonl"), records(straight / "metrics.jsonl")
    keys = [(r["step"], "val_loss" in r) for r in got]
    assert keys == [(r["step"], "val_loss" in r) for r in want]  # same lines, none twice
    assert len(keys) == len(set(keys))
    # Evaluations come from identical weights: identical numbers.
    assert [r["val_loss"] for r in got if "val_loss" in r] == [r["val_loss"] for r in want if "val_loss" in r]


def test_resume_can_extend_the_budget_but_not_change_the_model(tiny_run, tmp_path, cli):
    code, _, err = cli("train", "--resume", tiny_run, "--hidden", "64", "--plain")
    assert code == 2 and "--hidden 64: this run was trained with --hidden 32" in err
    code, _, err = cli("train", "--resume", tiny_run / BEST_NAME, "--plain")
    assert code == 2 and "no optimizer state" in err and "--init-from" in err
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    code, _, err = cli("train", "--resume", run, "--max-steps", "64", "--plain")
    assert code == 0, err
    assert load_checkpoint(run / LAST_NAME).summary["step"] == 64


def test_resume_refuses_a_different_corpus(tiny_corpus, tmp_path, cli):
    train_until_stopped(tiny_corpus, tmp_path / "run", 5)
    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=1), encoding="utf-8")
    code, _, err = cli("train", other, "--resume", tmp_path / "run", "--plain")
    assert code == 2 and "not the text this run was trained on" in err and "--init-from" in err
    # The same text under another name (the corpus moved) is fine.
    moved = tmp_path / "moved.txt"
    moved.write_bytes(tiny_corpus.read_bytes())
    code, _, err = cli("train", moved, "--resume", tmp_path / "run", "--max-steps", "6", "--plain")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "run" / LAST_NAME).summary["step"] == 6


def test_the_corpus_fingerprint_sees_the_count_and_the_content():
    tokens = np.arange(3_000_000, dtype=np.uint32) % 251
    same = corpus_fingerprint(tokens.copy())
    assert corpus_fingerprint(tokens) == same and same.startswith("3000000:")
    edited = tokens.copy()
    edited[0] += 1  # the first run of tokens is always read
    assert corpus_fingerprint(edited) != same
    assert corpus_fingerprint(tokens[:-1]) != same
    assert corpus_fingerprint(tokens[:1000]) != corpus_fingerprint(tokens[1:1001])  # small corpora: every token


def test_a_resumed_run_keeps_the_auto_options_it_chose(tiny_corpus, tmp_path):
    options = {**TINY_OPTIONS, "seq_len": 64, "eval_every": 1000, "max_steps": None}
    events = []
    first = Trainer(TrainConfig(**options, epochs=8, out=str(tmp_path / "run")), [str(tiny_corpus)],
                    on_event=events.append)
    first.run()
    chosen = [e for e in events if isinstance(e, AutoChosen)]
    events.clear()
    resumed = Trainer(TrainConfig(**options, epochs=12), resume=str(tmp_path / "run"), on_event=events.append)
    resumed.run()
    assert not any(isinstance(e, AutoChosen) for e in events)
    assert resumed.model.drop.p == chosen[0].dropout != auto_dropout(12)
    assert resumed.optimizer.param_groups[0]["weight_decay"] == chosen[0].weight_decay != auto_weight_decay(12)
    assert resumed.peak_lr == chosen[0].lr != auto_lr(12)
    assert (resumed.ar, resumed.tar) == (chosen[0].ar, chosen[0].tar) == (auto_ar(8), auto_tar(8))


def test_a_resumed_short_run_keeps_its_activation_penalties(tiny_corpus, tmp_path):
    options = {**TINY_OPTIONS, "seq_len": 64, "eval_every": 1000, "max_steps": None}
    Trainer(TrainConfig(**options, epochs=4, out=str(tmp_path / "run")), [str(tiny_corpus)]).run()
    resumed = Trainer(TrainConfig(**options, epochs=12), resume=str(tmp_path / "run"))
    assert (resumed.ar, resumed.tar) == (auto_ar(4), auto_tar(4)) != (auto_ar(12), auto_tar(12))


def test_a_run_from_before_skip_connections_locked_dropout_and_ar_resumes_without_them(tiny_corpus, tmp_path):
    options = {**TINY_OPTIONS, "layers": 2, "max_steps": 20, "eval_every": 20, "dropout": 0.1}
    Trainer(TrainConfig(**options, skip_connections=False, locked_dropout=False, ar=0.0, tar=0.0,
                        out=str(tmp_path / "run")), [str(tiny_corpus)]).run()
    as_written_before(tmp_path / "run" / "last.safetensors",
                      ("skip_connections", "weight_drop", "locked_dropout", "embed_dropout", "ar", "tar"))
    resumed = Trainer(TrainConfig(**{**options, "max_steps": 30}), resume=str(tmp_path / "run"))
    assert resumed.model.skip_head is None and resumed.config.skip_connections is False
    assert resumed.config.locked_dropout is False and not resumed.model.rnn.locked
    assert resumed.config.ar == resumed.config.tar == 0.0 == resumed.ar == resumed.tar
    resumed.run()
    saved = load_checkpoint(tmp_path / "run" / "last.safetensors", training_state=True)
    assert saved.summary["step"] == 30 and saved.summary["train_config"]["skip_connections"] is False


# ---- signals and kills -------------------------------------------------------------------------------

def test_sigint_through_the_handler_saves_and_resumes_exactly(straight, tiny_corpus, tmp_path):
    """The real signal path: the handler runs, the step finishes, last is written."""

    def on_event(event):
        if isinstance(event, StepDone) and event.step == 12:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as info:
        chargen.train(str(tiny_corpus), out=str(tmp_path / "run"), on_event=on_event, **RUN)
    assert info.value.step == 12 and info.value.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers are put back
    assert load_checkpoint(tmp_path / "run" / LAST_NAME).summary["step"] == 12
    chargen.train(resume=str(tmp_path / "run"))
    assert_bit_identical(straight / LAST_NAME, tmp_path / "run" / LAST_NAME)


def test_cli_train_killed_inside_its_checkpoint_save_keeps_the_old_one(straight, tmp_path):
    """The trainer's own save path, through the CLI: killed half-way through writing
    last.safetensors, and again with the new file complete but not yet renamed."""
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = (run / LAST_NAME).read_bytes()
    for stage in ("write", "rename"):
        proc = spawn_train(["--resume", "run", "--max-steps", "45", "--eval-every", "1"], tmp_path,
                           fault=f"kill@{stage}")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, err
        assert (run / LAST_NAME).read_bytes() == before  # the old checkpoint, byte for byte
        assert list(run.glob(".*.tmp*"))  # the dead process's temp file is still there...
    proc = subprocess.run([str(CHARGEN), "train", "--resume", "run", "--max-steps", "45"], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not list(run.glob(".*.tmp*"))  # ...until the next run in that directory removes it
    assert load_checkpoint(run / LAST_NAME).summary["step"] == 45


def test_cli_train_killed_at_random_moments_always_resumes(tiny_corpus, tmp_path):
    """SIGKILL the real CLI mid-run (eval and save every step), then resume it: never corrupt."""
    run = tmp_path / "run"
    args = [tiny_corpus, "--out", "run", "--max-steps", "100000", *CLI_RUN, "--eval-every", "1"]
    for round_ in range(3):
        proc = spawn_train(args if round_ == 0 else ["--resume", "run", "--eval-every", "1"], tmp_path)
        for _ in range(2 + round_):
            wait_for_line(proc, "saved")
        proc.kill()
        proc.communicate(timeout=60)
        load_checkpoint(run / LAST_NAME, training_state=True)
        load_checkpoint(run / BEST_NAME)
    proc = spawn_train(["--resume", "run", "--max-steps", "1"], tmp_path)  # budget already used
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not list(run.glob(".*.tmp*"))  # the killed savers' temp files were cleaned up
