import pytest
import torch

import chargen
from chargen.errors import ChargenError
from chargen.sampling import Sampler, SamplingSettings, beam_search, pick_tokens


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


def test_stream_pieces_add_up_to_generate(model):
    pieces = list(model.stream("a ", length=60, seed=3))
    assert len(pieces) > 1
    assert "".join(pieces) == model.generate("a ", length=60, seed=3)


def test_stop_string_ends_and_is_not_included(model):
    full = model.generate("the ", length=200, temp=0)
    stop = full[10:13]
    cut = model.generate("the ", length=200, temp=0, stop=stop)
    assert cut == full[:full.index(stop)]
    assert "".join(model.stream("the ", length=200, temp=0, stop=stop)) == cut


def test_state_carries_between_calls(model):
    """Feeding "ab" then "cd" must equal feeding "abcd": the state is the memory."""
    one = model.sampler()
    one.feed("the dog")
    two = model.sampler()
    two.feed("the ")
    two.feed("dog")
    torch.testing.assert_close(one.next_logits, two.next_logits)
    two.reset()
    assert two.state is None


def test_batched_samples_run_together_and_differ(model):
    texts = model.generate("the ", length=50, seed=1, temp=1.0, num_samples=4)
    assert len(texts) == 4 and len(set(texts)) > 1
    greedy = model.generate("the ", length=50, temp=0, num_samples=3)
    assert greedy == [model.generate("the ", length=50, temp=0)] * 3


def test_beam_search_finds_at_least_greedy_likelihood(model):
    def log_prob(text):
        tokens = torch.as_tensor(model.tokenizer.encode("the " + text))
        logits, _ = model.model(tokens[None, :-1])
        return torch.log_softmax(logits[0], -1)[torch.arange(len(tokens) - 1), tokens[1:]][3:].sum().item()

    greedy = model.generate("the ", length=20, temp=0)
    assert beam_search(model.model, model.tokenizer, "the ", 1, 20) == greedy
    beam = model.generate("the ", length=20, beam=5)
    assert len(beam) == 20
    assert log_prob(beam) >= log_prob(greedy) - 1e-4


def test_unknown_prime_characters_are_named(model):
    with pytest.raises(ChargenError, match=r"never saw: .*'Z' \(U\+005A\)"):
        model.generate("Zebra", length=5)


def test_bad_settings_are_rejected(model):
    for bad in (dict(temp=-1), dict(temp=float("nan")), dict(top_k=-2), dict(top_p=0), dict(top_p=1.5),
                dict(length=-1), dict(stop="")):
        with pytest.raises(ChargenError):
            model.generate("the", **bad)


def test_generation_without_prime(model):
    text = model.generate(length=30, seed=0)
    assert len(text) == 30


def test_sampler_works_on_other_cells(tmp_path):
    from chargen.model import CharLM, ModelConfig
    from chargen.tokenizers import CharTokenizer
    tok = CharTokenizer.train(["abc\n"])
    for cell in ("gru", "rnn"):
        sampler = Sampler(CharLM(ModelConfig(vocab_size=4, cell=cell, hidden=8, layers=2)).eval(), tok)
        sampler.feed("ab")
        assert len(sampler.generate(SamplingSettings(length=10, seed=0))[0]) == 10
