"""Timing training steps: the speed a probe measures, and what --hidden/--seq-len/--precision auto make of it."""

import itertools
from types import SimpleNamespace
import json
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import pytest
import torch

from chargen import devices
from chargen.checkpoint import load_checkpoint
from chargen.model import CharLM
from chargen.training import TrainConfig, Trainer
from chargen.training import probe as probe_module
from chargen.training.auto import PROBE_STEPS, WIDTHS
from chargen.training.probe import measure_speed, model_parameters
from tests.conftest import TINY_OPTIONS


def test_measure_speed_is_the_fastest_of_real_training_steps_after_the_first(monkeypatch):
    windows, grads = [], []

    class Recording(CharLM):
        def forward(self, tokens, state=None):
            windows.append(tokens.clone())
            logits, state = super().forward(tokens, state)
            logits.register_hook(lambda grad: grads.append(grad))  # the backward pass reaches the logits
            return logits, state

    monkeypatch.setattr(probe_module, "CharLM", Recording)
    # A clock that says how long each step after the first (the warm-up, not timed) took: 1, 0.5, 0.25, 0.5, ...
    durations = [1.0, 0.5, 0.25] + [0.5] * (PROBE_STEPS - 4)
    readings = itertools.chain([0.0], itertools.chain.from_iterable(
        (10.0 * i, 10.0 * i + d) for i, d in enumerate(durations, start=1)))
    monkeypatch.setattr(probe_module, "time", SimpleNamespace(perf_counter=lambda: next(readings)))
    tokens = np.arange(1000) % 7
    speed = measure_speed(TrainConfig(layers=1), 7, 16, 8, 2, tokens, torch.device("cpu"), nullcontext)
    assert speed == pytest.approx(2 * 8 / 0.25)  # rows x window tokens in the fastest timed step
    assert len(windows) == len(grads) == PROBE_STEPS and next(readings, None) is None  # every reading used
    assert all(torch.equal(w, torch.from_numpy(tokens[:18].reshape(2, 9)[:, :-1])) for w in windows)


def test_measure_speed_of_a_wider_model_is_lower():
    tokens = np.arange(20_000) % 7
    config = TrainConfig(layers=1)
    speeds = [measure_speed(config, 7, width, 32, 8, tokens, torch.device("cpu"), nullcontext) for width in (16, 512)]
    assert speeds[0] > 2 * speeds[1] > 0


def test_model_parameters_are_counted_without_building_the_model():
    config = TrainConfig(layers=2, cell="gru")
    for width in (16, 96):
        real = CharLM(replace(config, hidden=width).model_config(50, 0.0))
        assert model_parameters(config, 50, width) == real.num_parameters()


def _probed_trainer(corpus, tmp_path, monkeypatch, name, tokens_per_second=1.0, **options):
    probes = []

    def fake_speed(config, vocab_size, hidden, seq_len, rows, tokens, device, autocast):
        probes.append((hidden, seq_len))
        return tokens_per_second

    monkeypatch.setattr(probe_module, "measure_speed", fake_speed)
    config = {**TINY_OPTIONS, "hidden": "auto", "seq_len": "auto", "max_steps": 4, "max_time": 600.0, **options}
    return Trainer(TrainConfig(**config, out=str(tmp_path / name)), [str(corpus)]), probes


def test_auto_shape_for_a_time_budget_is_probed_and_recorded(tiny_corpus, tmp_path, monkeypatch):
    trainer, probes = _probed_trainer(tiny_corpus, tmp_path, monkeypatch, "auto")
    assert probes == [(width, 32) for width in WIDTHS]  # a crawl: none reads enough, the narrowest it is
    assert (trainer.config.hidden, trainer.config.seq_len) == (WIDTHS[-1], 32)
    assert trainer.model.config.hidden == WIDTHS[-1] and trainer.batches.seq_len == 32
    plan = json.loads((tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()[0])
    assert plan["step"] == 0 and (plan["hidden"], plan["seq_len"]) == (WIDTHS[-1], 32)
    assert 0 < plan["budget_seconds"] <= 600 and set(plan["tokens_per_second"]) == {str(w) for w in WIDTHS}
    assert trainer.shape_plan == {k: v for k, v in plan.items() if k != "step"}
    initial = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    trainer.run()

    # The same seed gives the same model as asking for that shape: probing leaves no trace.
    given, probes = _probed_trainer(tiny_corpus, tmp_path, monkeypatch, "given", hidden=WIDTHS[-1], seq_len=32)
    assert probes == [] and given.shape_plan is None
    assert all(torch.equal(initial[name], value) for name, value in given.model.state_dict().items())
    given.lock.close()

    # Resuming keeps the shape the run chose, without probing again.
    monkeypatch.setattr(probe_module, "measure_speed", lambda *args: pytest.fail("probed on resume"))
    resumed = Trainer(TrainConfig(hidden="auto", seq_len="auto", max_time=600.0), resume=str(tmp_path / "auto"))
    assert (resumed.config.hidden, resumed.config.seq_len) == (WIDTHS[-1], 32) and resumed.step == 4


def test_auto_shape_is_the_default_without_a_time_budget_or_with_a_fast_machine(tiny_corpus, tmp_path, monkeypatch):
    trainer, probes = _probed_trainer(tiny_corpus, tmp_path, monkeypatch, "steps", max_time=None, layers=1)
    assert probes == [] and (trainer.config.hidden, trainer.config.seq_len) == (512, 64)
    trainer, probes = _probed_trainer(tiny_corpus, tmp_path, monkeypatch, "fast", tokens_per_second=1e12)
    assert probes == [(512, 32)] and (trainer.config.hidden, trainer.config.seq_len) == (512, 64)


@pytest.mark.parametrize("bf16_speedup", [0.6, 1.7])
@pytest.mark.parametrize("budget", [None, 600.0])
def test_training_precision_auto_times_both_on_a_native_bf16_cpu(tiny_corpus, tmp_path, monkeypatch,
                                                                 bf16_speedup, budget):
    probes = []

    def fake_speed(config, vocab_size, hidden, seq_len, rows, tokens, device, autocast):
        precision = "fp32" if autocast is nullcontext else "bf16"
        probes.append((hidden, precision))
        return 10.0 * (bf16_speedup if precision == "bf16" else 1.0)  # a crawl: every width is probed

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(probe_module, "measure_speed", fake_speed)
    options = {**TINY_OPTIONS, "precision": "auto", "max_steps": 2, "max_time": budget}
    if budget:
        options.update(hidden="auto", seq_len="auto")
    trainer = Trainer(TrainConfig(**options, out=str(tmp_path / "run")), [str(tiny_corpus)])
    want = "bf16" if bf16_speedup > 1 else "fp32"
    assert trainer.precision == want and (trainer.autocast is nullcontext) == (want == "fp32")
    # Both at the first width timed (the run's own without a budget), the rest in the faster one.
    first = trainer.config.hidden if budget is None else WIDTHS[0]
    assert sorted(probes[:2]) == [(first, "bf16"), (first, "fp32")]
    assert all(precision == want for _, precision in probes[2:])
    assert len(probes) == (2 if budget is None else len(WIDTHS) + 1)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    plan = next(r["precision_plan"] for r in records if "precision_plan" in r)
    assert plan["precision"] == want and plan["hidden"] == first
    assert plan["tokens_per_second"] == {"fp32": 10, "bf16": round(10 * bf16_speedup)}
    finished = trainer.run()
    assert finished.step == 2 and load_checkpoint(str(tmp_path / "run")).summary["precision"] == want

    # A precision given is not timed, nor is one on a CPU without native bf16.
    probes.clear()
    given = Trainer(TrainConfig(**{**options, "precision": "bf16"}, out=str(tmp_path / "given")), [str(tiny_corpus)])
    assert given.precision == "bf16" and all(precision == "bf16" for _, precision in probes)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    probes.clear()
    plain = Trainer(TrainConfig(**options, out=str(tmp_path / "plain")), [str(tiny_corpus)])
    assert plain.precision == "fp32" and all(precision == "fp32" for _, precision in probes)
