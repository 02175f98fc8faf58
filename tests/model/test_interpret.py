"""Finding interpretable units: the text features, and a planted quote unit ranked first."""

import numpy as np
import torch

from chargen.model import CharLM, ModelConfig
from chargen.model.inspect import trace_text
from chargen.model.interpret import FEATURES, correlations, rank_units, text_features
from chargen.text.tokenizers import CharTokenizer


def test_text_features_per_character():
    text = 'x = f("a b")\n  if y:\n'
    f = text_features(text)
    assert set(f) == set(FEATURES)
    assert all(len(v) == len(text) for v in f.values())
    quote = "".join("1" if v else "0" for v in f["inside quotes"])
    assert quote == "000000111100000000000"  # 1 from the opening quote, 0 from the closing one
    assert f["bracket depth"].tolist()[4:12] == [0, 1, 1, 1, 1, 1, 1, 0]
    assert f["position in line"].tolist()[:3] == [1, 2, 3] and f["position in line"][12] == 0
    assert f["indentation"].tolist()[13:17] == [1, 2, 2, 2]
    assert f["since space"].tolist()[:4] == [1, 0, 1, 0]
    assert f["inside a word"].tolist()[:3] == [1, 0, 0]


def test_apostrophes_are_not_quotes():
    f = text_features("don't 'go' now\nit's")
    flags = "".join("1" if v else "0" for v in f["inside quotes"])
    assert flags == "0000001110000000000"


def test_a_planted_unit_ranks_first():
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list('abc de "fg h" ij\n(k) ')) for _ in range(3000))
    quotes = text_features(text)["inside quotes"]
    activations = rng.normal(size=(len(text), 40))
    activations[:, 17] = quotes + 0.3 * rng.normal(size=len(text))
    ranked = rank_units(activations, text)
    assert ranked[0].unit == 17 and ranked[0].feature == "inside quotes" and ranked[0].correlation > 0.8
    assert correlations(activations, text_features(text)).shape == (40, len(FEATURES))


def test_constant_units_correlate_with_nothing():
    r = correlations(np.ones((50, 2)), text_features("ab" * 25))
    assert np.all(r == 0)


def quote_counting_model(tokenizer: CharTokenizer, hidden: int = 8) -> CharLM:
    """An LSTM whose cell 0 flips between 0 and 1 at every double quote, set by hand.

    On '"' the input gate opens and the candidate is tanh(5 - 13·h0): +1 while h0 is 0 (outside),
    -1 once h0 = tanh(1) (inside). Elsewhere the input gate is shut and the forget gate open, so
    the cell keeps its value. The other units have small random weights.
    """
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden=hidden, tie_weights=False))
    H, q = hidden, tokenizer.chars.index('"')
    rnn = model.rnn
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.3, 0.3)
        model.embed.weight[:, 0] = 0.0
        model.embed.weight[q, 0] = 1.0
        rows = {gate: gate * H for gate in range(4)}  # i, f, g, o
        for w in (rnn.weight_ih_l0, rnn.weight_hh_l0):
            w[[rows[0], rows[1], rows[2], rows[3]]] = 0.0
        rnn.bias_hh_l0[[rows[0], rows[1], rows[2], rows[3]]] = 0.0
        rnn.weight_ih_l0[rows[0], 0], rnn.bias_ih_l0[rows[0]] = 20.0, -10.0  # input gate: only on '"'
        rnn.bias_ih_l0[rows[1]] = 10.0                                       # forget gate: always keep
        rnn.weight_ih_l0[rows[2], 0], rnn.bias_ih_l0[rows[2]] = 5.0, 0.0      # candidate: flip ...
        rnn.weight_hh_l0[rows[2], 0] = -13.0                                 # ... by what h0 says
        rnn.bias_ih_l0[rows[3]] = 10.0                                       # output gate: open
    return model.eval()


def test_the_search_finds_a_hand_set_quote_cell():
    text = 'say "hello there" and "bye" now\nthen "a b c" and more words here\n' * 20
    tokenizer = CharTokenizer(sorted(set(text)))
    trace = trace_text(quote_counting_model(tokenizer), tokenizer, text)
    cell = trace.states["c"][:, 0]
    inside = text_features(text)["inside quotes"]
    assert np.abs(cell[:, 0] - inside).max() < 0.05  # the hand-set cell does count quotes
    best = rank_units(cell, text)[0]
    assert (best.unit, best.feature) == (0, "inside quotes") and best.correlation > 0.99
