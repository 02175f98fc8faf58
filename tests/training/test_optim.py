"""The optimizer and the learning-rate schedule: warm-up, then a cosine or a line down to a floor."""

import math

import pytest
import torch

import chargen
from chargen.errors import ChargenError
from chargen.model import CharLM, ModelConfig
from chargen.training import StepDone, TrainConfig
from chargen.training.optim import check_model_fits, lr_at, make_optimizer
from tests.conftest import TINY_OPTIONS


def test_lr_warms_up_linearly_to_the_peak():
    assert [lr_at(step, 0.0, 1e-2, 4, 0.0, "cosine") for step in range(5)] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2])
    assert lr_at(0, 0.0, 1e-2, 0, 0.0, "cosine") == 1e-2  # no warm-up


@pytest.mark.parametrize("progress", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_after_the_warm_up_the_lr_follows_the_budget_used(progress):
    cosine = lr_at(100, progress, 1e-2, 10, 0.0, "cosine")
    linear = lr_at(100, progress, 1e-2, 10, 0.0, "linear")
    assert cosine == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert linear == pytest.approx(1e-2 * (1 - progress))


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_the_schedule_ends_at_the_floor_min_lr_frac_sets(schedule):
    assert lr_at(100, 0.0, 1e-2, 10, 0.1, schedule) == pytest.approx(1e-2)
    assert lr_at(100, 1.0, 1e-2, 10, 0.1, schedule) == pytest.approx(1e-3)
    half = lr_at(100, 0.5, 1e-2, 10, 0.1, schedule)
    assert half == pytest.approx(1e-3 + 9e-3 * 0.5)  # both are halfway down at half the budget
    lrs = [lr_at(100, p / 20, 1e-2, 10, 0.1, schedule) for p in range(21)]
    assert lrs == sorted(lrs, reverse=True)


def test_lr_schedule_warms_up_then_decays(tiny_corpus, tmp_path):
    lrs = []
    chargen.train(str(tiny_corpus), out=str(tmp_path / "run"), on_event=lambda e: isinstance(e, StepDone) and lrs.append(e.lr),
                  **{**TINY_OPTIONS, "max_steps": 40, "warmup_steps": 10, "lr": 1e-2, "min_lr_frac": 0.1})
    assert lrs[0] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-2, rel=0.02)
    assert lrs[-1] == pytest.approx(1e-3, rel=0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@pytest.mark.parametrize("schedule, at_70_percent", [("linear", 0.3), ("cosine", 0.5 * (1 + math.cos(0.7 * math.pi)))])
def test_lr_falls_linearly_or_along_a_cosine(tiny_corpus, tmp_path, schedule, at_70_percent):
    lrs = []
    chargen.train(str(tiny_corpus), out=str(tmp_path / "run"), on_event=lambda e: isinstance(e, StepDone) and lrs.append(e.lr),
                  **{**TINY_OPTIONS, "max_steps": 50, "warmup_steps": 10, "lr": 1e-2, "schedule": schedule})
    assert lrs[35] == pytest.approx(1e-2 * at_70_percent)  # step 35 of 50
    assert TrainConfig().schedule == "cosine"


def test_weight_decay_applies_to_the_weight_matrices_only():
    model = CharLM(ModelConfig(vocab_size=10, layers=2, hidden=8, tie_weights=False))
    optimizer = make_optimizer(model, weight_decay=0.3, lr=1e-3)
    decay, no_decay = optimizer.param_groups
    names = {id(p): name for name, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == sorted(
        name for name, p in model.named_parameters() if p.dim() == 2 and not name.startswith("embed"))
    assert {names[id(p)] for p in no_decay["params"]} >= {"embed.weight", "head.bias", "rnn.bias_ih_l0"}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert optimizer.defaults["betas"] == (0.9, 0.99) and decay["lr"] == 1e-3


def test_a_model_that_cannot_fit_in_memory_is_refused_before_it_is_built():
    check_model_fits(TrainConfig(hidden=64, seq_len=64), 65, torch.device("cpu"))
    with pytest.raises(ChargenError, match=r"--layers 64 --hidden 16384: a [\d,]+-parameter model needs about [\d,.]+ GB "
                                           r"to train, but this cpu has [\d.]+ GB; lower --hidden"):
        check_model_fits(TrainConfig(layers=64, hidden=16384, seq_len=64), 65, torch.device("cpu"))
