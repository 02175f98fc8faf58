"""The long-time-lag experiment in miniature (bench/recall.py): all cells learn a short lag; only the
LSTM a long one, because only its gradient survives the distance."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from chargen.errors import ChargenError
from chargen.model import CharLM, ModelConfig
from chargen.text.long_lag import RECALL_MARK, long_lag_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from recall import (hidden_grad_norms, long_lag_batch, recall_accuracy, set_forget_bias,  # noqa: E402
                    train_recall)

TOKENIZER = long_lag_tokenizer()
CHANCE = 0.25  # 4 cue symbols


def trained(cell: str, hidden: int, lag: int, steps: int, forget_bias: float | None = None) -> float:
    # Sizes give ~35k parameters each (LSTM 64, GRU 74, RNN 128); settings checked on seeds 0-2.
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=TOKENIZER.vocab_size, cell=cell, layers=1, hidden=hidden,
                               dropout=0.0, tie_weights=False))
    if forget_bias is not None:
        set_forget_bias(model, forget_bias)
    train_recall(model, TOKENIZER, lag, steps, seed=0)
    return recall_accuracy(model, TOKENIZER, lag, episodes=400)


@pytest.mark.parametrize("cell,hidden,steps", [("rnn", 128, 200), ("gru", 74, 100), ("lstm", 64, 100),
                                               ("lstm-peephole", 64, 100)])
def test_every_cell_learns_a_short_lag(cell, hidden, steps):
    forget_bias = 5.0 if cell.startswith("lstm") else None
    assert trained(cell, hidden, lag=3, steps=steps, forget_bias=forget_bias) > 0.9


def test_lstm_bridges_a_long_lag_the_plain_rnn_does_not():
    lstm = trained("lstm", 64, lag=30, steps=150, forget_bias=5.0)
    rnn = trained("rnn", 128, lag=30, steps=150)
    assert lstm > 0.9, lstm
    assert rnn < CHANCE + 0.1, rnn


def test_gradient_vanishes_for_the_rnn_not_for_the_lstm():
    x, cues = long_lag_batch(TOKENIZER, 60, 8, torch.Generator().manual_seed(0))
    tokens = torch.cat([x, cues[:, None]], dim=1)
    norms = {}
    for cell, hidden in (("rnn", 128), ("lstm", 64)):
        torch.manual_seed(0)
        model = CharLM(ModelConfig(vocab_size=TOKENIZER.vocab_size, cell=cell, layers=1, hidden=hidden))
        if cell == "lstm":
            set_forget_bias(model, 5.0)
        norms[cell] = hidden_grad_norms(model, tokens, [1, 50])
    assert norms["rnn"][50] < 1e-6 * norms["rnn"][1]  # vanished: ~0.5 per step
    assert norms["lstm"][50] > 1e-2 * norms["lstm"][1]  # carried by the forget gate near 1


def test_a_batch_is_whole_episodes_up_to_the_recall_mark():
    x, cues = long_lag_batch(TOKENIZER, 7, 16, torch.Generator().manual_seed(1))
    assert x.shape == (16, 9) and cues.shape == (16,)
    for row, cue in zip(x.tolist(), cues.tolist()):
        text = TOKENIZER.decode(row)
        assert text[0] == TOKENIZER.decode([cue]) and text[-1] == RECALL_MARK and text[1:-1].islower()
    again, _ = long_lag_batch(TOKENIZER, 7, 16, torch.Generator().manual_seed(1))
    assert torch.equal(x, again)


def test_the_forget_bias_is_set_only_where_there_is_a_forget_gate():
    model = CharLM(ModelConfig(vocab_size=TOKENIZER.vocab_size, layers=2, hidden=8))
    set_forget_bias(model, 5.0)
    assert (model.rnn.bias_ih_l1[8:16] == 5.0).all() and (model.rnn.bias_hh_l1[8:16] == 0).all()
    assert (model.rnn.bias_ih_l1[:8] != 5.0).all()  # the other gates keep theirs
    with pytest.raises(ChargenError, match="cell 'gru' has no forget gate"):
        set_forget_bias(CharLM(ModelConfig(vocab_size=TOKENIZER.vocab_size, layers=1, hidden=8, cell="gru")), 5.0)
