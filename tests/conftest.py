"""Shared fixtures and helpers: tiny corpora, tiny trained runs and random models, made in code in seconds."""

from __future__ import annotations

import os
import random
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import chargen
from chargen.model import CharLM, ModelConfig
from chargen.text.tokenizers import CharTokenizer
from chargen.training import StepDone, TrainConfig, Trainer, TrainingInterrupted
from chargen.ui.cli import main

ROOT = Path(__file__).resolve().parents[1]
# Tiny Shakespeare is not in the repository: a copy in corpora/, else the shared one beside the checkout.
SHAKESPEARE_PLACES = (ROOT / "corpora" / "tinyshakespeare.txt",
                      ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt")

# The models in tests are tiny: one thread steps them faster than two, and a busy machine
# (other jobs on the same cores) cannot stall a second thread's barrier.
torch.set_num_threads(1)


def make_text(n_lines: int = 400, seed: int = 0) -> str:
    """Repetitive word soup: small, but with structure a tiny model learns in a few steps."""
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog and cat runs home to sleep".split()
    return "\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(n_lines)) + "\n"


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


TINY_OPTIONS = dict(layers=1, hidden=32, seq_len=16, batch_size=8, max_steps=60, eval_every=30,
                    preview_length=20, seed=0, device="cpu", precision="fp32", warmup_steps=5)
# For resume and crash tests: small and fast, with dropout on so the RNG state matters for exactness.
RUN = dict(TINY_OPTIONS, max_steps=40, eval_every=15, log_every=5, preview_length=0, dropout=0.2)


def train_run(tmp_path_factory, name: str, options: dict) -> Path:
    """A run directory trained on make_text() with ``options``."""
    root = tmp_path_factory.mktemp(name)
    corpus = root / "tiny.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    chargen.train(str(corpus), out=str(root / "run"), **options)
    return root / "run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory holding a trained 1x32 LSTM (best and last checkpoints)."""
    return train_run(tmp_path_factory, "tiny_run", TINY_OPTIONS)


@pytest.fixture(scope="session")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted run with the RUN options: what an interrupted and resumed run must equal."""
    return train_run(tmp_path_factory, "straight", RUN)


@pytest.fixture
def shakespeare() -> Path:
    for path in SHAKESPEARE_PLACES:
        if path.is_file():
            return path
    pytest.skip("tinyshakespeare.txt is neither in corpora/ nor in ../shared/corpora/")


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: ``code, out, err = cli("sample", run_dir, "--length", "20")``."""

    def run(*args) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


# ---- random models: instant, with varied, peaky distributions ------------------------------------

TOKENIZER = CharTokenizer("\n" + string.ascii_lowercase + " .,")


def random_model(layers=2, hidden=48, cell="lstm", seed=0) -> CharLM:
    torch.manual_seed(seed)
    model = CharLM(ModelConfig(vocab_size=TOKENIZER.vocab_size, cell=cell, layers=layers, hidden=hidden))
    with torch.no_grad():
        for p in model.parameters():  # wider than the default init: peaky, varied distributions
            p.uniform_(-0.4, 0.4)
    return model.eval()


# ---- interrupting, resuming and comparing runs ------------------------------------------------------

def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}


def assert_bit_identical(a: Path, b: Path) -> None:
    wa, wb = checkpoint_weights(a), checkpoint_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs"


def train_until_stopped(corpus: Path, out: Path, stop_step: int, **options) -> None:
    """Train with the RUN options and ask the trainer to stop after ``stop_step`` (what Ctrl-C does)."""
    holder = {}

    def on_event(event):
        if isinstance(event, StepDone) and event.step == stop_step:
            holder["trainer"].request_stop(2)  # SIGINT

    trainer = Trainer(TrainConfig(**dict(RUN, **options), out=str(out)), [str(corpus)], on_event=on_event)
    holder["trainer"] = trainer
    with pytest.raises(TrainingInterrupted) as info:
        trainer.run()
    assert info.value.step == stop_step


# ---- the installed CLI in a subprocess --------------------------------------------------------------

CHARGEN = Path(sys.executable).with_name("chargen")
CLI_RUN = ["--layers", "1", "--hidden", "32", "--seq-len", "16", "--batch-size", "8", "--device", "cpu",
           "--eval-every", "10", "--preview-length", "0", "--seed", "0", "--plain", "--warmup-steps", "5",
           "--precision", "fp32"]


def subprocess_env(**extra) -> dict:
    # One thread: on a busy machine a spinning thread pool makes these tiny runs many times slower.
    # The repository on the path, so that ``python -m tests.faults`` imports from any directory.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", OMP_NUM_THREADS="1", PYTHONPATH=path, **extra)


def spawn_train(args, cwd, fault: str | None = None) -> subprocess.Popen:
    """``chargen train ARGS`` in ``cwd``, or with ``fault`` installed (see tests/faults.py)."""
    command = [str(CHARGEN)] if fault is None else [sys.executable, "-m", "tests.faults", fault]
    return subprocess.Popen([*command, "train", *map(str, args)], cwd=cwd, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc, needle: str) -> str:
    for line in proc.stdout:
        if needle in line:
            return line
    raise AssertionError(f"never printed {needle!r}: {proc.stderr.read()}")
