"""The NaN/inf guard: skipped steps leave everything as it was, whether read back every step or
every few steps, and a run of bad steps stops training with advice."""

from __future__ import annotations

import json

import pytest
import torch

from chargen.errors import ChargenError
from chargen.training import TrainConfig, Trainer
from chargen.training.guard import StepGuard, sync_interval
from chargen.training.trainer import MAX_BAD_STEPS_IN_A_ROW

from ..conftest import TINY_OPTIONS


def optimizer_for(param: torch.nn.Parameter, fused: bool) -> torch.optim.AdamW:
    return torch.optim.AdamW([param], lr=0.1, weight_decay=0.5, fused=fused)


@pytest.mark.parametrize("fused", [True, False])
def test_a_bad_step_leaves_weights_and_moments_as_they_were(fused):
    param = torch.nn.Parameter(torch.ones(4))
    optimizer = optimizer_for(param, fused)
    guard = StepGuard(optimizer, torch.device("cpu"), sync_every=3)
    assert guard.on_device == fused and guard.sync_every == (3 if fused else 1)
    param.grad = torch.ones(4)
    guard.step(torch.tensor(2.0), torch.tensor(1.0))
    weights, moments = param.detach().clone(), {k: v.clone() for k, v in optimizer.state[param].items()}
    param.grad = torch.full((4,), float("nan"))
    finite = guard.step(torch.tensor(float("nan")), torch.tensor(float("nan")))
    assert not finite
    assert torch.equal(param.detach(), weights)
    assert all(torch.equal(optimizer.state[param][k], v) for k, v in moments.items())  # step count too
    param.grad = torch.ones(4)
    guard.step(torch.tensor(3.0), torch.tensor(0.5))
    assert not torch.equal(param.detach(), weights)
    seen = guard.read()
    assert (seen.good_steps, seen.loss_sum, seen.last_loss, seen.last_grad_norm) == (2, 5.0, 3.0, 0.5)
    assert (seen.skipped_steps, seen.worst_bad_run) == (1, 1)


def test_readings_count_the_longest_bad_run_and_carry_the_current_one():
    param = torch.nn.Parameter(torch.ones(2))
    guard = StepGuard(optimizer_for(param, True), torch.device("cpu"), sync_every=100, skipped_before=4)
    for loss in (1.0, float("inf"), float("inf"), 1.0, float("nan")):
        param.grad = torch.ones(2)
        guard.step(torch.tensor(loss), torch.tensor(1.0))
    seen = guard.read()
    assert (seen.skipped_steps, seen.worst_bad_run, seen.good_steps) == (4 + 3, 2, 2)
    param.grad = torch.ones(2)
    guard.step(torch.tensor(float("nan")), torch.tensor(1.0))  # the run that ended the last window goes on
    assert guard.read().worst_bad_run == 2 and guard.skipped_steps() == 8


def test_the_host_reads_every_step_on_a_cpu_and_once_per_metrics_line_elsewhere():
    assert sync_interval(torch.device("cpu"), 10) == 1
    assert sync_interval(torch.device("meta"), 10) == 10


def tiny_trainer(corpus, out, **options) -> Trainer:
    return Trainer(TrainConfig(**{**TINY_OPTIONS, "out": str(out), "log_every": 5, **options}), [str(corpus)])


def metrics(run) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "chars_per_sec")} for r in records]


def test_reading_every_few_steps_logs_what_reading_every_step_logs(tiny_corpus, tmp_path):
    every_step = tiny_trainer(tiny_corpus, tmp_path / "a")
    every_step.run()
    deferred = tiny_trainer(tiny_corpus, tmp_path / "b")
    deferred.guard.sync_every = 5  # as on an accelerator: once per metrics line
    deferred.run()
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    for a, b in zip(every_step.model.parameters(), deferred.model.parameters()):
        assert torch.equal(a, b)


def poison_steps(trainer: Trainer, bad: set[int]) -> None:
    """Make the loss NaN at the given (0-based) steps, as an overflow would."""
    forward = trainer.step_fn

    def step_fn(x, state, **options):
        logits, *rest = forward(x, state, **options)
        return (logits * float("nan") if trainer.step in bad else logits), *rest

    trainer.step_fn = step_fn


def test_a_poisoned_step_is_skipped_when_read_back_later(tiny_corpus, tmp_path):
    constant_lr = dict(min_lr_frac=1.0)  # the rate must not depend on the budget's length
    clean = tiny_trainer(tiny_corpus, tmp_path / "clean", max_steps=13, **constant_lr)
    clean.guard.sync_every = 5
    clean.run()
    poisoned = tiny_trainer(tiny_corpus, tmp_path / "poisoned", max_steps=14, **constant_lr)
    poisoned.guard.sync_every = 5
    poison_steps(poisoned, {13})
    poisoned.run()
    # Step 14 (0-based 13) was skipped: the weights after it are those after 13 steps.
    for a, b in zip(clean.model.parameters(), poisoned.model.parameters()):
        assert torch.equal(a, b)
    assert poisoned.skipped_steps == 1


def test_a_run_of_bad_steps_stops_training_with_advice(tiny_corpus, tmp_path):
    trainer = tiny_trainer(tiny_corpus, tmp_path / "run", max_steps=40)
    trainer.guard.sync_every = 5
    poison_steps(trainer, set(range(12, 40)))
    with pytest.raises(ChargenError, match=r"diverged at step 20: .*NaN/inf for 8 steps in a row.*lower the "
                                           "learning rate") as error:
        trainer.run()
    # The fifth bad step in a row was step 17; the next reading (step 20) stops the run.
    assert 8 >= MAX_BAD_STEPS_IN_A_ROW and "no checkpoint was saved yet" in str(error.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_steps_between_readings_never_wait_for_the_gpu(tiny_corpus, tmp_path):
    trainer = tiny_trainer(tiny_corpus, tmp_path / "run", device="cuda")
    trainer.train_step(1e-3)  # warm-up: allocations, cuDNN plans
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host copy or sync raises
    try:
        for _ in range(trainer.guard.sync_every - 1):
            trainer.train_step(1e-3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.guard.read().good_steps >= 1
