"""Data-parallel training: 2 CPU processes with gloo, launched by torchrun as a user would.

The 2-process run must take the same steps as one process with the same total batch: each rank
trains half of the TBPTT streams and DDP averages the gradients, which is the full-batch gradient
up to float32 rounding (the two half-batch means are summed in another order). Over 40 Adam steps
that rounding stays around 1e-6 on the weights; the tolerance, 1e-4, is far above it and far below
what a real mistake does (a wrong stream split, an unsynchronized learning rate, a skipped
all-reduce all move the weights by 1e-2 or more, and the logged gradient norm by a factor).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import chargen
from chargen.errors import ChargenError
from chargen.training import TrainConfig, Trainer, distributed
from chargen.training.auto import WIDTHS
from tests.conftest import make_text

TOLERANCE = 1e-4
# A tiny model that must learn visibly in 40 steps: high lr, no dropout, light decay, lr floor.
OPTIONS = dict(layers=1, hidden=64, seq_len=16, batch_size=8, lr=0.03, warmup_steps=5, dropout=0.0,
               weight_decay=0.01, min_lr_frac=0.1,
               eval_every=20, preview_length=0, seed=0, device="cpu", precision="fp32")


def cli_flags(options: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]


def torchrun(cwd, *args) -> None:
    """``torchrun --standalone --nproc_per_node=2 -m chargen train ...`` on loopback, CPU only."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # stay on loopback whatever the hostname resolves to
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "chargen", "train", "--plain", *map(str, args)]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def weights(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path)).items() if v.is_floating_point()}


def assert_close(single: dict, parallel: dict) -> None:
    for name in ("model.embed.weight", "model.rnn.weight_hh_l0", "rnn_state.h", "rnn_state.c",
                 "optim.0.exp_avg"):
        assert name in single and name in parallel
    for name, tensor in single.items():
        # The carried LSTM state is gathered from both ranks, in stream order.
        assert parallel[name].shape == tensor.shape, name
        assert (parallel[name] - tensor).abs().max().item() < TOLERANCE, name


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_train_like_one_process_with_the_same_batch_and_resume(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(make_text(), encoding="utf-8")

    # One process: 20 steps, then resumed to 40 (the resume restores the carried stream state).
    single = tmp_path / "single"
    chargen.train(str(corpus), out=str(single), max_steps=20, **OPTIONS)
    single_20 = weights(single / "last.safetensors")
    chargen.train(resume=str(single), max_steps=40)

    # Two processes, the same total batch of 8 streams: 4 each.
    torchrun(tmp_path, corpus, "--out", "parallel", "--max-steps", 20, *cli_flags(OPTIONS))
    parallel = tmp_path / "parallel"
    assert_close(single_20, weights(parallel / "last.safetensors"))
    torchrun(tmp_path, "--resume", "parallel", "--max-steps", 40)
    assert_close(weights(single / "last.safetensors"), weights(parallel / "last.safetensors"))

    # Rank 0 alone wrote the metrics: each step once, and the same figures as one process.
    got, want = metrics(parallel), metrics(single)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for a, b in zip(got, want):
        for key in ("train_loss", "grad_norm", "val_loss", "lr"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=TOLERANCE), (a, b)
    # And training converged: from ln(vocab) at the start to well below it.
    val = [r["val_loss"] for r in got if "val_loss" in r]
    vocab = chargen.load(str(parallel)).tokenizer.vocab_size
    assert val[1] < val[0] < math.log(vocab) and val[1] < 0.7 * math.log(vocab)


def test_the_ranks_train_the_shape_rank_0_probed_for_a_time_budget(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    options = {**OPTIONS, "hidden": "auto", "max_time": 20, "max_steps": 10}
    torchrun(tmp_path, corpus, "--out", "probed", *cli_flags(options))  # ranks of different widths would fail
    plan = metrics(tmp_path / "probed")[0]
    assert plan["step"] == 0 and plan["seq_len"] == 16 and set(plan["tokens_per_second"]) <= {str(w) for w in WIDTHS}
    model = chargen.load(str(tmp_path / "probed")).model
    assert model.config.hidden == plan["hidden"] in WIDTHS


def test_batch_size_must_split_evenly_over_processes(tmp_path, monkeypatch):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    # As if torchrun had started 3 processes (no process group is needed to reach the check).
    monkeypatch.setattr(distributed, "setup", lambda device: (distributed.Distributed(0, 3, 0), device))
    with pytest.raises(ChargenError, match="--batch-size 8: must be divisible by the number of processes"):
        Trainer(TrainConfig(**{**OPTIONS, "out": str(tmp_path / "run")}), [str(corpus)])


def test_each_rank_gets_a_disjoint_share_of_the_streams():
    ranks = [distributed.Distributed(r, 4, r) for r in range(4)]
    shares = [list(d.streams(32)) for d in ranks]
    assert sorted(sum(shares, [])) == list(range(32))
    assert shares[1][:3] == [1, 5, 9]


def test_one_process_without_torchrun_coordinates_nothing(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    single, device = distributed.setup(torch.device("cpu"))
    assert not single.enabled and single.is_main and device == torch.device("cpu")
    state = (torch.ones(1, 4, 3), torch.zeros(1, 4, 3))
    assert all(a is b for a, b in zip(single.gather_state(state), state)) and single.my_state(state, 4) is state
    assert single.agree(12.5, True) == (12.5, True) and single.broadcast_object("run") == "run"
    assert list(single.streams(4)) == [0, 1, 2, 3] and distributed.is_main_process()


def test_a_rank_takes_its_rows_of_a_saved_full_batch_state():
    h = torch.arange(8.0).view(1, 8, 1)
    rank1 = distributed.Distributed(1, 4, 1)
    assert rank1.enabled and not rank1.is_main  # a world of 4: this rank trains streams 1 and 5
    torch.testing.assert_close(rank1.my_state(h, 8), h[:, [1, 5]])
