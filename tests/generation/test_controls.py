"""Repetition penalty and no-repeat n-grams: the pure rules, their incremental bookkeeping, and
what they do to a trained model's text."""

import random

import pytest
import torch

import chargen
from chargen.generation.controls import NgramIndex, RepeatHistory, ban, banned_tokens, penalize_repeats
from chargen.generation.settings import SamplingSettings
from tests.conftest import TINY_OPTIONS, train_run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # Trained without the activation penalties: they make a model this small less sure of itself,
    # and these tests need one that loops at a low temperature.
    return chargen.load(train_run(tmp_path_factory, "looping_run", {**TINY_OPTIONS, "ar": 0.0, "tar": 0.0}))


def repeated_share(text: str, n: int) -> float:
    """The share of the text's n-grams that already occurred earlier in it."""
    grams = [text[i:i + n] for i in range(len(text) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def test_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens_only():
    logits = torch.tensor([[2.0, -1.0, 3.0, -0.5]])
    seen = torch.tensor([[True, True, False, False]])
    assert penalize_repeats(logits, seen, 2.0).tolist() == [[1.0, -2.0, 3.0, -0.5]]


def test_banned_tokens_are_those_completing_an_ngram_in_the_window():
    tokens = [1, 2, 3, 1, 2]
    assert banned_tokens(tokens, 3) == {3}          # "1 2 3" exists, "1 2" is the current prefix
    assert banned_tokens(tokens, 3, window=4) == set()  # "1 2 3" starts outside the last 4 tokens
    assert banned_tokens(tokens, 1) == {1, 2, 3}    # unigrams: every token seen
    assert banned_tokens([1, 2, 1], 2) == {2}
    assert banned_tokens([5], 3) == set()


def test_ban_leaves_a_row_alone_rather_than_banning_everything():
    logits = torch.zeros(2, 3)
    out = ban(logits, [{0, 2}, {0, 1, 2}])
    assert out[0].tolist() == [float("-inf"), 0.0, float("-inf")] and out[1].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("n,window", [(1, 0), (2, 0), (3, 0), (3, 7), (4, 5), (2, 1)])
def test_incremental_ngram_index_matches_the_reference(n, window):
    rng = random.Random(n * 100 + window)
    index, tokens = NgramIndex(n, window), []
    for _ in range(300):
        assert index.banned() == banned_tokens(tokens, n, window)
        token = rng.randrange(4)
        tokens.append(token)
        index.push(token)


def test_history_counts_only_the_window():
    history = RepeatHistory(SamplingSettings(repetition_penalty=1.5, repeat_window=2), 1, 5)
    history.push([1])
    history.push([2])
    history.push([3])
    assert (history.counts[0] > 0).nonzero().flatten().tolist() == [2, 3]


def test_no_repeat_ngram_never_repeats(model):
    greedy = model.generate("the ", length=300, temp=0)
    assert repeated_share(greedy, 4) > 0.5  # a greedy char model loops...
    for seed in range(3):
        text = model.generate("the ", length=300, temp=0.5, seed=seed, no_repeat_ngram=4)
        assert repeated_share(text, 4) == 0  # ...and with the rule no 4-gram comes twice
    windowed = model.generate("the ", length=300, temp=0, no_repeat_ngram=4, repeat_window=40)
    assert all(repeated_share(windowed[i:i + 40], 4) == 0 for i in range(len(windowed) - 40))


def test_penalty_lowers_the_share_of_repeated_ngrams(model):
    def share(**controls):
        texts = model.generate("the ", length=400, temp=0.2, seed=3, num_samples=4, **controls)
        return sum(repeated_share(t, 8) for t in texts) / len(texts)
    plain = share()
    assert plain > 0.5  # at a low temperature the tiny model loops
    assert share(repetition_penalty=1.3) < plain * 0.8
    assert share(repetition_penalty=1.5, repeat_window=20) < plain * 0.5


def test_controls_off_change_nothing(model):
    plain = model.generate("the ", length=200, seed=5)
    assert model.generate("the ", length=200, seed=5, repetition_penalty=1.0, no_repeat_ngram=0) == plain
    assert model.generate("the ", length=200, seed=5, repetition_penalty=1.3) != plain
