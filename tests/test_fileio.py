"""Atomic writes: a kill, a full disk or Ctrl-C at any point leaves the old file or the new one, never a mix.

The kill test forks a child that saves checkpoints in a loop and SIGKILLs it, at injected points
inside the write (tests/faults.py) and at arbitrary moments; the previous checkpoint must always
load. ``CHARGEN_KILL_ROUNDS=500`` runs more rounds.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chargen import fileio
from chargen.checkpoint import LAST_NAME, load_checkpoint, save_checkpoint
from chargen.errors import ChargenError
from chargen.fileio import atomic_write_bytes, os_error_hint, remove_stale_temp_files, temp_path_for
from chargen.model import CharLM, ModelConfig
from chargen.text.tokenizers import CharTokenizer
from tests import faults

KILL_ROUNDS = int(os.environ.get("CHARGEN_KILL_ROUNDS", "24"))


def _tiny_model_and_tokenizer():
    tokenizer = CharTokenizer("abcdefgh \n")
    return CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden=16)), tokenizer


def _child_saving_forever(path: Path, fault: str | None, ready_fd: int) -> None:
    """In a forked child: save checkpoints with increasing step numbers until killed."""
    try:
        torch.set_num_threads(1)
        if fault:
            faults.install(fault)
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


def _kill_rounds(path: Path, rounds: int, fault_specs: list[str | None], seed: int) -> int:
    """Fork savers and SIGKILL them; returns how many kills left a loadable checkpoint."""
    rng = random.Random(seed)
    survived = 0
    for round_ in range(rounds):
        fault = fault_specs[round_ % len(fault_specs)]
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
    fault_specs = [f"kill@{stage}" for stage in faults.STAGES] + [None] * 4
    survived = _kill_rounds(path, KILL_ROUNDS, fault_specs, seed=0)
    assert survived == KILL_ROUNDS
    print(f"kills during save survived: {survived}/{KILL_ROUNDS}")


@pytest.mark.parametrize("stage", faults.STAGES)
@pytest.mark.parametrize("action", ["enospc", "erofs"])
def test_a_failed_write_at_any_stage_keeps_the_old_file_and_no_temp_file(tmp_path, monkeypatch, stage, action):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old contents")
    faults.install(f"{action}@{stage}", monkeypatch)
    if stage == "renamed":  # the new file is in place; only the directory sync was to come
        with pytest.raises(ChargenError):
            atomic_write_bytes(path, b"new contents" * 1000, "thing")
        assert not list(tmp_path.glob(".*.tmp*"))
        return
    strerror = os.strerror({"enospc": errno.ENOSPC, "erofs": errno.EROFS}[action])
    with pytest.raises(ChargenError, match=f"^{path}: cannot save the thing: {strerror}; earlier files are untouched; "):
        atomic_write_bytes(path, b"new contents" * 1000, "thing")
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_disk_full_from_os_write_itself(tmp_path, monkeypatch):
    """No injected fault: the real os.write raises ENOSPC part-way; the temp file goes away."""
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


def test_short_writes_are_continued_until_every_byte_is_written(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))  # 7 bytes at a time
    atomic_write_bytes(tmp_path / "f.bin", bytes(range(256)) * 3)
    assert (tmp_path / "f.bin").read_bytes() == bytes(range(256)) * 3


def test_ctrl_c_during_a_write_removes_the_temp_file_and_goes_on(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def interrupted(fd, view):
        os.write(fd, bytes(view[:10]))
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):  # not turned into an error message: the caller stops
        atomic_write_bytes(path, b"new" * 100)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_the_temp_file_is_hidden_beside_the_target_and_named_after_the_process(tmp_path):
    assert temp_path_for(tmp_path / "last.safetensors") == tmp_path / f".last.safetensors.tmp{os.getpid()}"


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".last.safetensors.tmp{dead_pid}"
    mine = temp_path_for(tmp_path / "best.safetensors")
    alive = tmp_path / f".metrics.jsonl.tmp{os.getppid()}"  # a live process: maybe still saving
    other = tmp_path / ".notes.tmpfile"
    for p in (stale, mine, alive, other):
        p.write_bytes(b"x")
    remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (mine, alive, other))


def test_os_error_hints_say_what_to_do():
    assert os_error_hint(OSError(errno.ENOSPC, "full")) == "; free some disk space (or choose another --out)"
    for code in (errno.EROFS, errno.EACCES, errno.EPERM):
        assert "the directory is not writable" in os_error_hint(OSError(code, "no"))
    assert os_error_hint(OSError(errno.EIO, "I/O error")) == ""
