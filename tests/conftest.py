"""Shared fixtures: tiny corpora and a tiny trained checkpoint, made in code in seconds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

import chargen
from chargen.cli import main

SHARED_CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"

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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory holding a trained 1x32 LSTM (best and last checkpoints)."""
    root = tmp_path_factory.mktemp("tiny_run")
    corpus = root / "tiny.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    chargen.train(str(corpus), out=str(root / "run"), **TINY_OPTIONS)
    return root / "run"


@pytest.fixture
def shakespeare() -> Path:
    path = SHARED_CORPORA / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip("../shared/corpora/tinyshakespeare.txt is not present")
    return path


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: ``code, out, err = cli("sample", run_dir, "--length", "20")``."""

    def run(*args) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
