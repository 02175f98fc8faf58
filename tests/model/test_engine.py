"""The fast sampling engine against the plain model forward: same numbers, same state; its precision."""

import itertools
from types import SimpleNamespace

import pytest
import torch

from chargen.compat import bf16_matmul_available
from chargen.devices import BF16_MIN_SPEEDUP
from chargen.model import engine as engine_module
from chargen.model.engine import SMALL_MATRIX_BYTES, StepEngine, auto_sampling_precision, engine_steps_per_second
from tests.conftest import TOKENIZER, random_model


@pytest.mark.parametrize("layer_count,hidden,batch", [(1, 16, 1), (2, 48, 1), (3, 32, 4)])
@pytest.mark.parametrize("skip_connections", [True, False])
def test_engine_steps_match_the_lstm_forward(layer_count, hidden, batch, skip_connections):
    model = random_model(layer_count, hidden)
    if not skip_connections:
        model.skip_head = None  # as a model from before skip connections
    tokens = torch.randint(TOKENIZER.vocab_size, (batch, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, state = model(tokens[:, :10])
        want, want_state = model(tokens[:, 10:], state)
        engine = StepEngine(model, "fp32")
        engine.load_state(state, batch)
        got = torch.stack([engine.step(tokens[:, t]) for t in range(10, 40)], dim=1)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    for have, expected in zip(engine.export_state(), want_state):
        torch.testing.assert_close(have, expected, atol=2e-5, rtol=1e-5)


def test_engine_supports_eval_mode_lstms_only():
    assert StepEngine.supports(random_model())
    assert not StepEngine.supports(random_model().train())  # dropout: the plain forward
    for cell in ("gru", "rnn", "lstm-peephole"):
        assert not StepEngine.supports(random_model(cell=cell))


def test_engine_notices_weights_changed_in_place():
    model = random_model()
    engine = StepEngine(model, "fp32")
    assert engine.matches(model)
    with torch.no_grad():
        model.rnn.weight_hh_l1.mul_(-1.0)  # as an optimizer step would
    assert not engine.matches(model) and StepEngine(model, "fp32").matches(model)


@pytest.mark.skipif(not bf16_matmul_available(), reason="no native bf16 matrix products here")
def test_bf16_engine_stays_close_to_fp32():
    model = random_model(layers=2, hidden=64)
    tokens = torch.randint(TOKENIZER.vocab_size, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, _ = model(tokens)
        engine = StepEngine(model, "bf16")
        engine.load_state(None, 2)
        got = torch.stack([engine.step(tokens[:, t]) for t in range(30)], dim=1)
    assert got.dtype == torch.float32
    assert (torch.softmax(got, -1) - torch.softmax(want, -1)).abs().max() < 0.05


def test_auto_precision_keeps_small_models_exact(monkeypatch):
    monkeypatch.setattr(engine_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(engine_module, "engine_steps_per_second", lambda *args: pytest.fail("timed a small model"))
    small = random_model(layers=1, hidden=32)
    assert 4 * small.rnn.weight_hh_l0.numel() < SMALL_MATRIX_BYTES
    assert auto_sampling_precision(small) == "fp32"


@pytest.mark.skipif(not bf16_matmul_available(), reason="no native bf16 matrix products here")
@pytest.mark.parametrize("bf16_speedup", [0.9, 1.05, 1.6])
def test_auto_precision_of_a_big_model_is_the_faster_one_timed(monkeypatch, bf16_speedup):
    monkeypatch.setattr(engine_module, "cpu_has_native_bf16", lambda: True)
    timed = []

    def fake_speed(engine, batch_size):
        timed.append((engine.precision, batch_size))
        return 1000.0 * (bf16_speedup if engine.precision == "bf16" else 1.0)

    monkeypatch.setattr(engine_module, "engine_steps_per_second", fake_speed)
    big = random_model(layers=2, hidden=512)  # 12 MB of LSTM matrices in fp32
    want = "bf16" if bf16_speedup >= BF16_MIN_SPEEDUP else "fp32"
    assert auto_sampling_precision(big, batch_size=3) == want
    assert sorted(timed) == [("bf16", 3), ("fp32", 3)]


def test_auto_precision_is_fp32_without_native_bf16(monkeypatch):
    monkeypatch.setattr(engine_module, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(engine_module, "engine_steps_per_second", lambda *args: pytest.fail("timed without bf16"))
    assert auto_sampling_precision(random_model(layers=2, hidden=512)) == "fp32"


def test_engine_steps_per_second_is_the_fastest_round_of_real_steps(monkeypatch):
    engine = StepEngine(random_model(), "fp32")
    steps_taken = []
    real_step = engine.step
    monkeypatch.setattr(engine, "step", lambda tokens: steps_taken.append(tokens.clone()) or real_step(tokens))
    # A clock that says how long each round took: the first (warm-up) 0.5 s, then 0.3, 0.1, 0.2.
    readings = itertools.chain.from_iterable((10.0 * r, 10.0 * r + d) for r, d in enumerate([0.5, 0.3, 0.1, 0.2]))
    monkeypatch.setattr(engine_module, "time", SimpleNamespace(perf_counter=lambda: next(readings)))
    assert engine_steps_per_second(engine, batch_size=2, steps=5, rounds=4) == pytest.approx(5 / 0.1)
    assert len(steps_taken) == 5 * 4 and all(t.shape == (2,) for t in steps_taken)
    assert engine.batch == 2
