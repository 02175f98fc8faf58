"""Beam search: the most likely continuation it can find, at least as likely as the greedy one."""

import pytest
import torch

import chargen
from chargen.errors import ChargenError
from chargen.generation.beam import beam_search


@pytest.fixture(scope="module")
def model(tiny_run):
    return chargen.load(tiny_run)


def log_prob(model, prime, text):
    tokens = torch.as_tensor(model.tokenizer.encode(prime + text))
    with torch.no_grad():
        logits, _ = model.model(tokens[None, :-1])
    return torch.log_softmax(logits[0], -1)[torch.arange(len(tokens) - 1), tokens[1:]][len(prime) - 1:].sum().item()


def test_beam_search_finds_at_least_greedy_likelihood(model):
    greedy = model.generate("the ", length=20, temp=0)
    assert beam_search(model.model, model.tokenizer, "the ", 1, 20) == greedy
    beam = model.generate("the ", length=20, beam=5)
    assert len(beam) == 20 and set(beam) <= set(model.tokenizer.chars)
    assert log_prob(model, "the ", beam) >= log_prob(model, "the ", greedy) - 1e-4


def test_beam_search_without_prime_starts_at_a_line_break(model):
    assert beam_search(model.model, model.tokenizer, "", 3, 15) == beam_search(model.model, model.tokenizer, "\n", 3, 15)


def test_beam_search_ends_before_the_stop_string(model):
    full = beam_search(model.model, model.tokenizer, "the ", 3, 40)
    stop = full[8:10]
    assert beam_search(model.model, model.tokenizer, "the ", 3, 40, stops=(stop,)) == full[:full.index(stop)]


def test_a_beam_narrower_than_one_is_refused(model):
    with pytest.raises(ChargenError, match="--beam 0: must be >= 1"):
        beam_search(model.model, model.tokenizer, "the ", 0, 5)
