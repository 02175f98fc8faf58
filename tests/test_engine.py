"""The fast sampling engine against the plain model forward: same numbers, same text, same state."""

import importlib
import json
import string
from contextlib import nullcontext

import pytest
import torch

from chargen.engine import StepEngine, auto_sampling_precision, bf16_matmul_available, engine_steps_per_second
from chargen.model import CharLM, ModelConfig
from chargen.sampling import PRIME_WINDOW, Sampler, SamplingSettings, pick_tokens
from chargen.tokenizers import CharTokenizer

from .conftest import TINY_OPTIONS

train_module = importlib.import_module("chargen.train")  # chargen.train, the attribute, is the function
TOKENIZER = CharTokenizer("\n" + string.ascii_lowercase + " .,")


def random_model(layers=2, hidden=48, cell="lstm", seed=0) -> CharLM:
    torch.manual_seed(seed)
    model = CharLM(ModelConfig(vocab_size=TOKENIZER.vocab_size, cell=cell, layers=layers, hidden=hidden))
    with torch.no_grad():
        for p in model.parameters():  # wider than the default init: peaky, varied distributions
            p.uniform_(-0.4, 0.4)
    return model.eval()


@pytest.mark.parametrize("layers,hidden,batch", [(1, 16, 1), (2, 48, 1), (3, 32, 4)])
def test_engine_steps_match_the_lstm_forward(layers, hidden, batch):
    model = random_model(layers, hidden)
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


@pytest.mark.parametrize("settings", [dict(temp=1.0), dict(temp=0.7, top_k=5), dict(temp=1.2, top_p=0.8),
                                      dict(temp=0)])
@pytest.mark.parametrize("streams", [1, 3])
def test_fast_sampler_writes_the_same_text_as_the_plain_forward(settings, streams):
    model = random_model()
    texts, states = [], []
    for fast in (False, True):
        sampler = Sampler(model, TOKENIZER, batch_size=streams, precision="fp32", fast=fast)
        sampler.feed("the cat ")
        first = sampler.generate(SamplingSettings(length=60, seed=5, **settings))
        sampler.feed(" and then ")  # state carried through the engine, into a plain forward, back
        second = sampler.generate(SamplingSettings(length=60, seed=6, **settings))
        texts.append((first, second))
        states.append(sampler.state)
    assert texts[0] == texts[1]
    assert len(texts[0][0][0]) == 60
    for have, expected in zip(states[1], states[0]):
        torch.testing.assert_close(have, expected, atol=1e-5, rtol=1e-5)


def test_state_read_mid_stream_is_the_current_one():
    model = random_model()
    fast, plain = (Sampler(model, TOKENIZER, precision="fp32", fast=f) for f in (True, False))
    for sampler in (fast, plain):
        sampler.feed("a ")
    streams = [s.stream_batch(SamplingSettings(length=50, seed=2)) for s in (fast, plain)]
    for _ in range(20):
        assert next(streams[0]) == next(streams[1])
    torch.testing.assert_close(fast.state, plain.state, atol=1e-5, rtol=1e-5)
    # Setting the state while the stream is open takes effect at its next token.
    fast.state = plain.state = None
    for _ in range(20):
        assert next(streams[0]) == next(streams[1])


def test_engine_follows_weight_changes():
    model = random_model()
    sampler = Sampler(model, TOKENIZER, precision="fp32")
    sampler.feed("x")
    sampler.generate(SamplingSettings(length=5, seed=0))
    with torch.no_grad():
        model.rnn.weight_hh_l1.mul_(-1.0)  # as an optimizer step would, in place
    sampler.reset()
    reference = Sampler(model, TOKENIZER, fast=False)
    for s in (sampler, reference):
        s.feed("the dog ")
    settings = SamplingSettings(length=60, seed=3, temp=1.0)
    assert sampler.generate(settings) == reference.generate(settings)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_and_training_mode_use_the_plain_forward(cell):
    model = random_model(cell=cell)
    assert not StepEngine.supports(model)
    assert not StepEngine.supports(random_model().train())
    texts = []
    for fast in (True, False):
        sampler = Sampler(model, TOKENIZER, fast=fast)
        sampler.feed("the ")
        texts.append(sampler.generate(SamplingSettings(length=40, seed=1)))
    assert texts[0] == texts[1]


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
    sampler = Sampler(model, TOKENIZER, precision="bf16")
    sampler.feed("hello ")
    assert len(sampler.generate(SamplingSettings(length=40, seed=0))[0]) == 40


def test_auto_precision_keeps_small_models_exact():
    assert auto_sampling_precision(random_model(layers=1, hidden=32)) == "fp32"
    with pytest.raises(Exception):
        Sampler(random_model(), TOKENIZER, precision="fp16")


@pytest.mark.skipif(not bf16_matmul_available(), reason="no native bf16 matrix products here")
@pytest.mark.parametrize("bf16_speedup", [0.9, 1.05, 1.6])
def test_auto_precision_of_a_big_model_is_the_faster_one_timed(monkeypatch, bf16_speedup):
    engine_module = importlib.import_module("chargen.engine")
    monkeypatch.setattr(engine_module, "cpu_has_native_bf16", lambda: True)
    timed = []

    def fake_speed(engine, batch_size):
        timed.append((engine.precision, batch_size))
        return 1000.0 * (bf16_speedup if engine.precision == "bf16" else 1.0)

    monkeypatch.setattr(engine_module, "engine_steps_per_second", fake_speed)
    big = random_model(layers=2, hidden=512)  # 12 MB of LSTM matrices in fp32
    want = "bf16" if bf16_speedup >= engine_module.BF16_MIN_SPEEDUP else "fp32"
    sampler = Sampler(big, TOKENIZER, batch_size=3)
    sampler.feed("hello ")
    sampler.generate(SamplingSettings(length=5, seed=0))
    assert sampler._engine.precision == want and sorted(timed) == [("bf16", 3), ("fp32", 3)]


def test_engine_steps_per_second_times_real_steps():
    assert 0 < engine_steps_per_second(StepEngine(random_model(), "fp32"), batch_size=2, steps=2, rounds=2) < float("inf")


def test_long_prime_runs_only_its_tail():
    model = random_model()
    text = "".join(TOKENIZER.decode([i]) for i in torch.randint(
        TOKENIZER.vocab_size, (PRIME_WINDOW + 500,), generator=torch.Generator().manual_seed(0)).tolist())
    whole, tail = Sampler(model, TOKENIZER), Sampler(model, TOKENIZER)
    whole.feed(text)
    tail.feed(text[-PRIME_WINDOW:])
    torch.testing.assert_close(whole.next_logits, tail.next_logits, atol=0, rtol=0)


def test_streams_primed_together_match_one_stream():
    model = random_model()
    one, many = Sampler(model, TOKENIZER), Sampler(model, TOKENIZER, batch_size=3)
    one.feed("the quick brown fox")
    many.feed("the quick brown fox")
    torch.testing.assert_close(many.next_logits, one.next_logits.expand(3, -1))
    for have, expected in zip(many.state, one.state):
        torch.testing.assert_close(have, expected.expand(-1, 3, -1))
    texts = many.generate(SamplingSettings(length=30, seed=4))
    assert len(set(texts)) > 1  # the streams share their past, not their future


def test_pick_tokens_draws_like_torch_multinomial():
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(0)) * 3
    for seed in range(20):
        got = pick_tokens(logits, SamplingSettings(temp=0.9), torch.Generator().manual_seed(seed))
        want = torch.multinomial(torch.softmax(logits / 0.9, -1), 1,
                                 generator=torch.Generator().manual_seed(seed)).squeeze(-1)
        assert torch.equal(got, want)


def test_training_precision_auto_follows_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: True)
    assert train_module.resolve_precision("auto", cpu) == "bf16"  # the candidate; the trainer times it
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: False)
    assert train_module.resolve_precision("auto", cpu) == "fp32"
    assert train_module.resolve_precision("fp32", cpu) == "fp32"


def test_faster_precision_wants_a_clear_margin_for_bf16():
    assert train_module.faster_precision({"fp32": 100.0, "bf16": 180.0}) == "bf16"  # AMD Zen 4, 2x512
    assert train_module.faster_precision({"fp32": 100.0, "bf16": 60.0}) == "fp32"  # Intel Xeon, no AMX
    assert train_module.faster_precision({"fp32": 100.0, "bf16": 105.0}) == "fp32"  # a near tie stays exact


@pytest.mark.parametrize("bf16_speedup", [0.6, 1.7])
@pytest.mark.parametrize("budget", [None, 600.0])
def test_training_precision_auto_times_both_on_a_native_bf16_cpu(tiny_corpus, tmp_path, monkeypatch,
                                                                 bf16_speedup, budget):
    probes = []

    def fake_speed(config, vocab_size, hidden, seq_len, rows, tokens, device, autocast):
        precision = "fp32" if autocast is nullcontext else "bf16"
        probes.append((hidden, precision))
        return 10.0 * (bf16_speedup if precision == "bf16" else 1.0)  # a crawl: every width is probed

    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(train_module, "measure_speed", fake_speed)
    options = {**TINY_OPTIONS, "precision": "auto", "max_steps": 2, "max_time": budget}
    if budget:
        options.update(hidden="auto", seq_len="auto")
    trainer = train_module.Trainer(train_module.TrainConfig(**options, out=str(tmp_path / "run")), [str(tiny_corpus)])
    want = "bf16" if bf16_speedup > 1 else "fp32"
    assert trainer.precision == want and (trainer.autocast is nullcontext) == (want == "fp32")
    # Both at the first width timed (the run's own without a budget), the rest in the faster one.
    first = trainer.config.hidden if budget is None else train_module.WIDTHS[0]
    assert sorted(probes[:2]) == [(first, "bf16"), (first, "fp32")]
    assert all(precision == want for _, precision in probes[2:])
    assert len(probes) == (2 if budget is None else len(train_module.WIDTHS) + 1)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    plan = next(r["precision_plan"] for r in records if "precision_plan" in r)
    assert plan["precision"] == want and plan["hidden"] == first
    assert plan["tokens_per_second"] == {"fp32": 10, "bf16": round(10 * bf16_speedup)}
    finished = trainer.run()
    assert finished.step == 2 and train_module.load_checkpoint(str(tmp_path / "run")).summary["precision"] == want

    # A precision given is not timed, nor is one on a CPU without native bf16.
    probes.clear()
    given = train_module.Trainer(train_module.TrainConfig(**{**options, "precision": "bf16"}, out=str(tmp_path / "given")),
                                 [str(tiny_corpus)])
    assert given.precision == "bf16" and all(precision == "bf16" for _, precision in probes)
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: False)
    probes.clear()
    plain = train_module.Trainer(train_module.TrainConfig(**options, out=str(tmp_path / "plain")), [str(tiny_corpus)])
    assert plain.precision == "fp32" and all(precision == "fp32" for _, precision in probes)
