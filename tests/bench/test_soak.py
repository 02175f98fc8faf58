"""bench/soak.py: kill -9 at random moments, resume, and end bit-identical to a run never killed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import soak  # noqa: E402  (bench/ is not a package: its scripts are imported from its folder)


def test_quick_soak_survives_every_kill_and_matches_the_uninterrupted_run(tmp_path):
    result = soak.soak(soak.QUICK_KILLS, seed=0, workdir=tmp_path)

    assert result.kills == soak.QUICK_KILLS and len(result.lost) == soak.QUICK_KILLS
    assert result.weights_equal and result.tensors > 0
    assert result.metrics_ok
    assert result.problems == []
    assert "soak: OK" in soak.report(result)


def test_metrics_check_catches_duplicate_missing_and_different_steps():
    straight = [(1, 3.0), (2, 2.5), (3, 2.0)]
    assert soak.metrics_problems(straight, straight) == []
    assert "more than once: [2]" in soak.metrics_problems([(1, 3.0), (2, 2.5), (2, 2.5), (3, 2.0)], straight)[0]
    assert "missing from metrics.jsonl: [3]" in soak.metrics_problems([(1, 3.0), (2, 2.5)], straight)[0]
    assert "differs" in soak.metrics_problems([(1, 3.0), (2, 2.5), (3, 2.1)], straight)[0]


def test_weights_check_names_the_tensor_that_differs(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    weights = {"model.w": torch.zeros(3), "model.v": torch.ones(2), "optim.0.step": torch.zeros(1)}
    save_file(weights, a)
    save_file(dict(weights, **{"model.v": torch.tensor([1.0, 1.0 + 1e-7])}), b)
    assert soak.weights_differ(a, a) == []
    assert soak.weights_differ(a, b) == ["model.v"]


@pytest.mark.parametrize("tail, step", [('{"step": 7}\n{"step": 8}\n', 8), ('{"step": 7}\n{"step": 8, "tra', 7),
                                        ("", 0)])
def test_progress_is_read_from_the_last_whole_metrics_record(tmp_path, tail, step):
    path = tmp_path / "metrics.jsonl"
    path.write_text(tail)
    assert soak.last_logged_step(path) == step
    assert soak.last_logged_step(tmp_path / "absent.jsonl") == 0
