"""The long-time-lag experiment in miniature: all cells learn a short lag; only LSTM a long one."""

from __future__ import annotations

import pytest
import torch

from chargen.checkpoint import load_checkpoint, save_checkpoint
from chargen.model import CharLM, ModelConfig
from chargen.tasks import (RECALL_MARK, hidden_grad_norms, long_lag_batch, long_lag_text,
                           long_lag_tokenizer, recall_accuracy, set_forget_bias, train_recall)

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


def test_long_lag_text_is_a_corpus_of_episodes():
    text = long_lag_text(7, 500, seed=3)
    assert text == long_lag_text(7, 500, seed=3)
    lines = text.splitlines()
    assert len(text) >= 500 and all(len(line) == 7 + 3 for line in lines)
    assert all(line[0] == line[-1] and line[-2] == RECALL_MARK for line in lines)
    assert set(text) <= set(TOKENIZER.chars)


def test_peephole_cell_saves_and_loads(tmp_path):
    model = CharLM(ModelConfig(vocab_size=TOKENIZER.vocab_size, cell="lstm-peephole", layers=2, hidden=16))
    path = tmp_path / "peep.safetensors"
    save_checkpoint(path, model, TOKENIZER, {"step": 0})
    loaded = load_checkpoint(path).model
    tokens = torch.randint(TOKENIZER.vocab_size, (2, 9))
    model.eval()
    assert torch.allclose(model(tokens)[0], loaded(tokens)[0])
    # Fed in pieces with the state carried, the output is the same as in one call.
    first, state = loaded(tokens[:, :4])
    rest, _ = loaded(tokens[:, 4:], state)
    assert torch.allclose(torch.cat([first, rest], 1), loaded(tokens)[0], atol=1e-6)
