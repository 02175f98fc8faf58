"""Sampling: seeds, temperature, top-k/top-p, state carried between calls, the fast engine behind it."""

import pytest
import torch

import chargen
from chargen.compat import bf16_matmul_available
from chargen.errors import ChargenError
from chargen.generation import sampler as sampler_module
from chargen.generation.sampler import PRIME_WINDOW, Sampler, make_generator, pick_tokens
from chargen.generation.settings import SamplingSettings
from chargen.model import CharLM, ModelConfig
from chargen.text.tokenizers import CharTokenizer
from tests.conftest import TOKENIZER, random_model


@pytest.fixture(scope="module")
def model(tiny_run):
    return chargen.load(tiny_run)


def test_same_seed_same_text(model):
    a = model.generate("the ", length=80, seed=7, temp=1.0)
    b = model.generate("the ", length=80, seed=7, temp=1.0)
    c = model.generate("the ", length=80, seed=8, temp=1.0)
    assert a == b
    assert a != c


def test_temp_zero_is_argmax(model):
    greedy = model.generate("the ", length=40, temp=0)
    sampler = model.sampler()
    sampler.feed("the ")
    tokens = []
    for _ in range(40):
        token = int(sampler.next_logits[0].argmax())
        tokens.append(token)
        sampler.feed_ids(torch.tensor([token]))
    assert greedy == model.tokenizer.decode(tokens)


def test_top_k_restricts_support():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.5, 0.0, -1.0]]).expand(2000, -1)
    picks = pick_tokens(logits, SamplingSettings(temp=5.0, top_k=3), torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {0, 1, 2}
    picks = pick_tokens(logits, SamplingSettings(temp=5.0, top_k=1), torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {0}


def test_top_p_restricts_support():
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]])
    logits = probs.log().expand(2000, -1)
    picks = pick_tokens(logits, SamplingSettings(temp=1.0, top_p=0.7), torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {0, 1}  # 0.5 alone is under 0.7; 0.5 + 0.3 covers it
    picks = pick_tokens(logits, SamplingSettings(temp=1.0, top_p=0.85), torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {0, 1, 2}
    picks = pick_tokens(logits, SamplingSettings(temp=1.0, top_p=0.01), torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {0}


def test_sampling_follows_the_distribution():
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    picks = pick_tokens(probs.log().expand(20_000, -1), SamplingSettings(temp=1.0), torch.Generator().manual_seed(0))
    freq = torch.bincount(picks, minlength=3).float() / 20_000
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)


def test_pick_tokens_draws_like_torch_multinomial():
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(0)) * 3
    for seed in range(20):
        got = pick_tokens(logits, SamplingSettings(temp=0.9), torch.Generator().manual_seed(seed))
        want = torch.multinomial(torch.softmax(logits / 0.9, -1), 1,
                                 generator=torch.Generator().manual_seed(seed)).squeeze(-1)
        assert torch.equal(got, want)


def test_a_generator_follows_its_seed_or_the_os():
    draws = [torch.rand(3, generator=make_generator(seed)) for seed in (5, 5, 6)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert not torch.equal(torch.rand(3, generator=make_generator(None)), torch.rand(3, generator=make_generator(None)))


def test_stream_pieces_add_up_to_generate(model):
    pieces = list(model.stream("a ", length=60, seed=3))
    assert len(pieces) > 1
    assert "".join(pieces) == model.generate("a ", length=60, seed=3)


def test_state_carries_between_calls(model):
    """Feeding "ab" then "cd" must equal feeding "abcd": the state is the memory."""
    one = model.sampler()
    one.feed("the dog")
    two = model.sampler()
    two.feed("the ")
    two.feed("dog")
    torch.testing.assert_close(one.next_logits, two.next_logits)
    two.reset()
    assert two.state is None and two.next_logits is None


def test_batched_samples_run_together_and_differ(model):
    texts = model.generate("the ", length=50, seed=1, temp=1.0, num_samples=4)
    assert len(texts) == 4 and len(set(texts)) > 1
    greedy = model.generate("the ", length=50, temp=0, num_samples=3)
    assert greedy == [model.generate("the ", length=50, temp=0)] * 3


def test_unknown_prime_characters_are_named(model):
    with pytest.raises(ChargenError, match=r"^the text has characters the model never saw: .*'Z' \(U\+005A\)"):
        model.generate("Zebra", length=5)


def test_generation_without_prime_starts_at_a_line_break(model):
    text = model.generate(length=30, seed=0)
    assert len(text) == 30 and set(text) <= set(model.tokenizer.chars)
    assert text == model.generate(length=30, seed=0)  # reproducible with the seed
    assert text == model.generate("\n", length=30, seed=0)  # as if the text had just begun a line
    assert text != model.generate(length=30, seed=1)


def test_generation_without_prime_or_line_break_starts_at_a_random_symbol():
    tokenizer = CharTokenizer("abc")
    torch.manual_seed(0)
    sampler = Sampler(CharLM(ModelConfig(vocab_size=3, hidden=8, layers=1)).eval(), tokenizer)
    first = sampler.generate(SamplingSettings(length=20, seed=4))[0]
    sampler.reset()
    assert sampler.generate(SamplingSettings(length=20, seed=4))[0] == first and set(first) <= set("abc")


@pytest.mark.parametrize("cell", ["gru", "rnn", "lstm-peephole"])
def test_sampler_works_on_other_cells(cell):
    model = random_model(cell=cell)
    texts = []
    for _ in range(2):
        sampler = Sampler(model, TOKENIZER)
        sampler.feed("ab")
        texts.append(sampler.generate(SamplingSettings(length=10, seed=0))[0])
    assert len(texts[0]) == 10 and set(texts[0]) <= set(TOKENIZER.chars) and texts[0] == texts[1]


def test_a_precision_other_than_fp32_bf16_or_auto_is_refused():
    with pytest.raises(ChargenError, match="precision 'fp16': choose fp32, bf16 or auto"):
        Sampler(random_model(), TOKENIZER, precision="fp16")


# ---- the fast engine behind the sampler -------------------------------------------------------------

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
    for model in (random_model(cell=cell), random_model().train()):
        texts = []
        for fast in (True, False):
            sampler = Sampler(model, TOKENIZER, fast=fast)
            sampler.feed("the ")
            texts.append(sampler.generate(SamplingSettings(length=40, seed=1)))
        assert texts[0] == texts[1]


@pytest.mark.skipif(not bf16_matmul_available(), reason="no native bf16 matrix products here")
def test_bf16_sampler_writes_the_vocabulary_reproducibly():
    model = random_model(layers=2, hidden=64)
    texts = []
    for _ in range(2):
        sampler = Sampler(model, TOKENIZER, precision="bf16")
        sampler.feed("hello ")
        texts.append(sampler.generate(SamplingSettings(length=40, seed=0))[0])
    assert len(texts[0]) == 40 and set(texts[0]) <= set(TOKENIZER.chars) and texts[0] == texts[1]


def test_bf16_sampling_without_native_bf16_is_a_clear_error(monkeypatch):
    import chargen.model.engine as engine_module

    monkeypatch.setattr(engine_module, "bf16_matmul_available", lambda: False)  # what the engine checks
    sampler = Sampler(random_model(), TOKENIZER, precision="bf16")
    with pytest.raises(ChargenError, match="bf16 sampling needs a CPU with native bf16"):
        sampler.generate(SamplingSettings(length=5, seed=0))


@pytest.mark.parametrize("precision, asked", [("auto", [3]), ("fp32", [])])
def test_auto_precision_is_chosen_once_for_the_streams_sampled(monkeypatch, precision, asked):
    calls = []
    monkeypatch.setattr(sampler_module, "auto_sampling_precision",
                        lambda model, batch_size: calls.append(batch_size) or "fp32")
    model = random_model()
    sampler = Sampler(model, TOKENIZER, batch_size=3, precision=precision)
    sampler.feed("hello ")
    texts = sampler.generate(SamplingSettings(length=5, seed=0))
    texts += sampler.generate(SamplingSettings(length=5, seed=1))  # the same engine: not chosen again
    assert calls == asked
    reference = Sampler(model, TOKENIZER, batch_size=3, precision="fp32", fast=False)
    reference.feed("hello ")
    want = reference.generate(SamplingSettings(length=5, seed=0)) + reference.generate(SamplingSettings(length=5, seed=1))
    assert texts == want


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
