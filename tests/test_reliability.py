"""Reliability: exact resume, interrupts, kills during saves, full or read-only disks, NaN steps.

Everything runs on tiny models on the CPU; nothing sleeps. The kill tests fork a child that saves
checkpoints in a loop and SIGKILL it (at injected points inside the write, and at arbitrary
moments); the previous checkpoint must always load. ``CHARGEN_KILL_ROUNDS=500`` runs more rounds.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import chargen
from chargen.checkpoint import FAULT_ENV, LAST_NAME, BEST_NAME, load_checkpoint, save_checkpoint
from chargen.errors import ChargenError
from chargen.train import MAX_BAD_STEPS_IN_A_ROW, StepDone, TrainConfig, Trainer, TrainingInterrupted

from .conftest import TINY_OPTIONS, make_text

CHARGEN = Path(sys.executable).with_name("chargen")
# Small and fast, with dropout on so the RNG state matters for exactness.
RUN = dict(TINY_OPTIONS, max_steps=40, eval_every=15, log_every=5, preview_length=0, dropout=0.2)


def weights(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}


def assert_bit_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted reference run (deterministic, so made once and shared)."""
    root = tmp_path_factory.mktemp("straight")
    corpus = root / "tiny.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    chargen.train(str(corpus), out=str(root / "run"), **RUN)
    return root / "run"


def stop_at(step: int):
    """An on_event callback that asks the trainer to stop after ``step`` (what Ctrl-C does)."""
    holder = {}

    def on_event(event):
        if isinstance(event, StepDone) and event.step == step:
            holder["trainer"].request_stop(signal.SIGINT)

    return holder, on_event


def train_until_stopped(corpus: Path, out: Path, stop_step: int, **options) -> None:
    holder, on_event = stop_at(stop_step)
    trainer = Trainer(TrainConfig(**dict(RUN, **options), out=str(out)), [str(corpus)], on_event=on_event)
    holder["trainer"] = trainer
    with pytest.raises(TrainingInterrupted) as info:
        trainer.run()
    assert info.value.step == stop_step


# ---- resume exactly ---------------------------------------------------------------------------

@pytest.mark.parametrize("stop_step", [20, 15, 1])  # mid-interval, on an eval step, at once
def test_resume_is_bit_identical_to_an_uninterrupted_run(straight, tiny_corpus, tmp_path, stop_step):
    train_until_stopped(tiny_corpus, tmp_path / "resumed", stop_step)
    chargen.train(resume=str(tmp_path / "resumed"))

    assert_bit_identical(straight / LAST_NAME, tmp_path / "resumed" / LAST_NAME)
    reference = load_checkpoint(straight / LAST_NAME, training_state=True)
    resumed = load_checkpoint(tmp_path / "resumed" / LAST_NAME, training_state=True)
    assert reference.training_state.keys() == resumed.training_state.keys()
    for name, tensor in reference.training_state.items():  # optimizer moments, RNG, carried state
        assert torch.equal(tensor, resumed.training_state[name]), name
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


# ---- signals ----------------------------------------------------------------------------------

def test_sigint_through_the_handler_saves_and_resumes_exactly(straight, tiny_corpus, tmp_path):
    """The real signal path: the handler runs, the step finishes, last is written."""

    def on_event(event):
        if isinstance(event, StepDone) and event.step == 12:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as info:
        chargen.train(str(tiny_corpus), out=str(tmp_path / "run"), on_event=on_event, **RUN)
    assert info.value.step == 12 and info.value.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers are put back
    chargen.train(resume=str(tmp_path / "run"))
    assert_bit_identical(straight / LAST_NAME, tmp_path / "run" / LAST_NAME)


def _spawn_train(args, cwd):
    # One thread: on a busy machine a spinning thread pool makes these tiny runs many times slower.
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", OMP_NUM_THREADS="1")
    return subprocess.Popen([str(CHARGEN), "train", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc, needle: str) -> str:
    for line in proc.stdout:
        if needle in line:
            return line
    raise AssertionError(f"never printed {needle!r}: {proc.stderr.read()}")


CLI_RUN = ["--layers", "1", "--hidden", "32", "--seq-len", "16", "--batch-size", "8", "--device", "cpu",
           "--eval-every", "10", "--preview-length", "0", "--seed", "0", "--plain", "--warmup-steps", "5",
           "--precision", "fp32"]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_signal_saves_says_how_to_resume_and_exits_128_plus_signal(tiny_corpus, tmp_path, sig, code):
    proc = _spawn_train([tiny_corpus, "--out", "run", "--max-steps", "100000", *CLI_RUN], tmp_path)
    _wait_for_line(proc, "saved")  # training is under way
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "checkpoint saved" in out and "chargen train --resume run" in out
    step = load_checkpoint(tmp_path / "run" / LAST_NAME).summary["step"]
    assert f"stopped at step {step}" in out
    assert not list((tmp_path / "run").glob(".*.tmp*"))


def test_cli_second_ctrl_c_aborts_at_once_and_keeps_the_last_checkpoint(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    chargen.train(str(tiny_corpus), out=str(run), **RUN)
    before = (run / LAST_NAME).read_bytes()
    # Two SIGINTs in a row, as fast as they can be sent: the second lands wherever it lands
    # (in the step, in the save): the process exits 130 and last is the old file or a new one.
    proc = _spawn_train(["--resume", "run", "--max-steps", "100000", "--eval-every", "1"], tmp_path)
    _wait_for_line(proc, "saved")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    ckpt = load_checkpoint(run / LAST_NAME, training_state=True)  # loadable, whichever it is
    assert ckpt.summary["step"] >= 40 or (run / LAST_NAME).read_bytes() == before
    assert not list(run.glob(".*.tmp*"))


# ---- kill -9 during saves -----------------------------------------------------------------------

KILL_ROUNDS = int(os.environ.get("CHARGEN_KILL_ROUNDS", "24"))


def _tiny_model_and_tokenizer():
    from chargen.model import CharLM, ModelConfig
    from chargen.tokenizers import CharTokenizer

    tokenizer = CharTokenizer("abcdefgh \n")
    return CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden=16)), tokenizer


def _child_saving_forever(path: Path, fault: str | None, ready_fd: int) -> None:
    """In a forked child: save checkpoints with increasing step numbers until killed."""
    try:
        torch.set_num_threads(1)
        if fault:
            os.environ[FAULT_ENV] = fault
        model, tokenizer = _tiny_model_and_tokenizer()
        step = load_checkpoint(path).summary["step"] if path.exists() else 0
        while True:
            step += 1
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(step)  # the content says which save it came from
            os.write(ready_fd, b".")
            save_checkpoint(path, model, tokenizer, {"step": step})
    finally:
        os._exit(1)  # never return into pytest in the child


def _kill_rounds(path: Path, rounds: int, faults: list[str | None], seed: int) -> int:
    """Fork savers and SIGKILL them; returns how many kills left a loadable checkpoint."""
    rng = random.Random(seed)
    survived = 0
    for round_ in range(rounds):
        fault = faults[round_ % len(faults)]
        before = load_checkpoint(path).summary["step"] if path.exists() else None
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child_saving_forever(path, fault, write_fd)
        os.close(write_fd)
        if fault is None:
            # Let it get a random number of saves in, then kill it wherever it is.
            os.read(read_fd, 1)
            for _ in range(rng.randrange(1, 4)):
                os.read(read_fd, 1)
            for _ in range(rng.randrange(0, 200_000)):  # a random moment within a save
                pass
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(read_fd)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        ckpt = load_checkpoint(path)  # must never raise
        step = ckpt.summary["step"]
        assert all(torch.all(p == step) for p in ckpt.model.parameters()), "weights from another save"
        if fault is not None:  # killed inside the child's first save
            renamed = fault.endswith("@renamed")
            assert step == before + renamed, f"{fault}: expected the {'new' if renamed else 'old'} checkpoint"
        survived += 1
    return survived


def test_kill_9_at_every_point_of_a_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / LAST_NAME
    model, tokenizer = _tiny_model_and_tokenizer()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0)
    save_checkpoint(path, model, tokenizer, {"step": 0})
    faults = [f"kill@{stage}" for stage in ("open", "write", "rename", "renamed")] + [None] * 4
    survived = _kill_rounds(path, KILL_ROUNDS, faults, seed=0)
    assert survived == KILL_ROUNDS
    print(f"kills during save survived: {survived}/{KILL_ROUNDS}")


def test_cli_train_killed_inside_its_checkpoint_save_keeps_the_old_one(straight, tmp_path):
    """The trainer's own save path, through the installed CLI: killed half-way through writing
    last.safetensors, and again with the new file complete but not yet renamed."""
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = (run / LAST_NAME).read_bytes()
    for stage in ("write", "rename"):
        env = dict(os.environ, OMP_NUM_THREADS="1", **{FAULT_ENV: f"kill@{stage}"})
        proc = subprocess.run([str(CHARGEN), "train", "--resume", "run", "--max-steps", "45", "--eval-every", "1"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert (run / LAST_NAME).read_bytes() == before  # the old checkpoint, byte for byte
        assert list(run.glob(".*.tmp*"))  # the dead process's temp file is still there...
    proc = subprocess.run([str(CHARGEN), "train", "--resume", "run", "--max-steps", "45"], cwd=tmp_path,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not list(run.glob(".*.tmp*"))  # ...until the next run in that directory removes it
    assert load_checkpoint(run / LAST_NAME).summary["step"] == 45


def test_cli_train_killed_at_random_moments_always_resumes(tiny_corpus, tmp_path):
    """SIGKILL the real CLI mid-run (eval and save every step), then resume it: never corrupt."""
    run = tmp_path / "run"
    args = [tiny_corpus, "--out", "run", "--max-steps", "100000", *CLI_RUN, "--eval-every", "1"]
    for round_ in range(3):
        proc = _spawn_train(args if round_ == 0 else ["--resume", "run", "--eval-every", "1"], tmp_path)
        for _ in range(2 + round_):
            _wait_for_line(proc, "saved")
        proc.kill()
        proc.communicate(timeout=60)
        load_checkpoint(run / LAST_NAME, training_state=True)
        load_checkpoint(run / BEST_NAME)
    proc = _spawn_train(["--resume", "run", "--max-steps", "1"], tmp_path)  # budget already used
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not list(run.glob(".*.tmp*"))  # the killed savers' temp files were cleaned up


# ---- full disk, read-only directory ---------------------------------------------------------------

@pytest.mark.parametrize("fault, message", [
    ("enospc@write", "No space left on device; earlier files are untouched; free some disk space (or choose another --out); then continue with: chargen train --resume"),
    ("erofs@open", "Read-only file system; earlier files are untouched; the directory is not writable"),
])
def test_full_or_read_only_disk_while_saving_is_a_clear_error(tiny_run, tmp_path, monkeypatch, cli, fault, message):
    run = tmp_path / "run"
    run.mkdir()
    for name in (LAST_NAME, BEST_NAME):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    before = {name: (run / name).read_bytes() for name in (LAST_NAME, BEST_NAME)}
    monkeypatch.setenv(FAULT_ENV, fault)
    code, out, err = cli("train", "--resume", run, "--max-steps", "70", "--plain")
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{run / LAST_NAME}: cannot save the checkpoint: {message}" in err
    assert {name: (run / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in run.iterdir()) == [".lock", BEST_NAME, LAST_NAME, "metrics.jsonl"]


def test_disk_full_from_os_write_itself(tmp_path, monkeypatch):
    """No fault hook: the real os.write raises ENOSPC part-way; the temp file goes away."""
    model, tokenizer = _tiny_model_and_tokenizer()
    path = tmp_path / LAST_NAME
    save_checkpoint(path, model, tokenizer, {"step": 1})
    good = path.read_bytes()
    real_write, calls = os.write, []

    def failing_write(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[:100])  # a short write first, like a filling disk

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(ChargenError, match="No space left on device"):
        save_checkpoint(path, model, tokenizer, {"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [LAST_NAME]


def test_unwritable_out_and_metrics_are_clear_errors(tiny_corpus, tmp_path, cli, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = cli("train", tiny_corpus, "--out", blocker / "run", "--plain", "--max-steps", "1")
    assert code == 2 and "is a file, not a directory; choose another --out" in err and "Traceback" not in err
    code, _, err = cli("train", tiny_corpus, "--out", blocker, "--plain", "--max-steps", "1")
    assert code == 2 and "choose another --out" in err


# ---- NaN / inf ----------------------------------------------------------------------------------

def _poison(trainer: Trainer, bad_calls: set[int]):
    """Make the forward pass return NaN logits on the given (1-based) calls."""
    real, calls = trainer.step_fn, [0]

    def step_fn(x, state):
        calls[0] += 1
        logits, state = real(x, state)
        return (logits * float("nan") if calls[0] in bad_calls else logits), state

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
        trainer._save(LAST_NAME, 0.0)
    assert (run / LAST_NAME).read_bytes() == good


# ---- the token cache ------------------------------------------------------------------------------

def test_a_torn_or_partial_token_cache_is_rebuilt(tiny_corpus, tmp_path):
    from chargen.data import load_corpus

    cache = tmp_path / "cache"
    first = load_corpus([tiny_corpus], cache_dir=cache)
    tokens = list(first.tokens)
    for f in cache.glob("*.tokens"):
        f.write_bytes(f.read_bytes()[:7])  # a crash mid-write of an older chargen, or disk trouble
    (cache / "deadbeef.tokens.tmp999999999").write_bytes(b"junk")  # left by a killed run
    again = load_corpus([tiny_corpus], cache_dir=cache)
    assert list(again.tokens) == tokens
    assert not list(cache.glob("*.tmp*"))
    for f in cache.glob("*.json"):
        if f.name != "files.json":
            f.write_text('{"format": ')  # torn metadata
    assert list(load_corpus([tiny_corpus], cache_dir=cache).tokens) == tokens


def test_an_unwritable_token_cache_is_a_clear_error(tiny_corpus, tmp_path, monkeypatch):
    from chargen.data import load_corpus

    monkeypatch.setattr(Path, "mkdir", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(ChargenError, match="cannot write the token cache: Permission denied"):
        load_corpus([tiny_corpus], cache_dir=tmp_path / "cache")


def test_two_trainers_never_write_the_same_run(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    train_until_stopped(tiny_corpus, run, 3)
    first = Trainer(TrainConfig(), resume=str(run))
    with pytest.raises(ChargenError, match="another chargen process is training this run"):
        Trainer(TrainConfig(), resume=str(run))
    del first
