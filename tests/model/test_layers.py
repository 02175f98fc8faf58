"""The recurrent layers: chargen's cheap dropout, the fused layer-by-layer calls, the peephole LSTM."""

import pytest
import torch
from torch import nn

from chargen.checkpoint import load_checkpoint, save_checkpoint
from chargen.model import CharLM, ModelConfig
from chargen.model import layers
from chargen.model.layers import PeepholeLSTM, dropout
from chargen.text.long_lag import long_lag_tokenizer


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_drops_the_given_share_and_keeps_the_mean(p):
    torch.manual_seed(0)
    ones = torch.ones(400, 1000)
    dropped = dropout(ones, p, training=True)
    assert abs((dropped == 0).float().mean().item() - p) < 0.003
    assert abs(dropped.mean().item() - 1.0) < 0.005
    survivors = dropped[dropped != 0]
    torch.testing.assert_close(survivors, torch.full_like(survivors, survivors[0].item()))  # one scale
    assert dropout(ones, p, training=False) is ones and dropout(ones, 0.0, training=True) is ones


def test_dropout_masks_are_fresh_each_call_and_follow_the_seed():
    x = torch.ones(64, 512, dtype=torch.bfloat16, requires_grad=True)
    torch.manual_seed(3)
    first, second = dropout(x, 0.3, True), dropout(x, 0.3, True)
    torch.manual_seed(3)
    again = dropout(x, 0.3, True)
    assert first.dtype == torch.bfloat16 and not torch.equal(first, second) and torch.equal(first, again)
    first.sum().backward()  # the gradient passes where the mask kept the unit, scaled like it
    torch.testing.assert_close(x.grad, first.detach())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_forward_is_the_stacked_cell_with_dropout_between_layers(cell, monkeypatch):
    # Layer by layer (so the inter-layer masks are drawn by chargen's dropout), it must compute
    # exactly what the fused multi-layer call computes when no unit is dropped.
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=13, cell=cell, layers=3, hidden=16, dropout=0.3))
    tokens = torch.randint(13, (4, 9))
    start = model(tokens[:, :3])[1]
    expected, expected_state = model.eval()(tokens[:, 3:], start)
    calls = []
    monkeypatch.setattr(layers, "dropout", lambda x, p, training: calls.append(p) or x)
    model.train().drop.p = 0.0
    got, got_state = model(tokens[:, 3:], start)
    assert calls == [0.3, 0.3, 0.0]  # between layers 1-2 and 2-3, and the output; not the embedding
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_state, expected_state)


def test_peephole_lstm_without_peepholes_is_the_plain_lstm():
    torch.manual_seed(0)
    peephole = PeepholeLSTM(6, 8, num_layers=2)
    plain = nn.LSTM(6, 8, num_layers=2, batch_first=True)
    with torch.no_grad():
        for name, p in peephole.named_parameters():
            if name.startswith("peephole"):
                p.zero_()
            else:
                getattr(plain, name).copy_(p)
    x = torch.randn(3, 11, 6)
    torch.testing.assert_close(peephole.eval()(x), plain.eval()(x))
    with torch.no_grad():
        peephole.peephole_l0.normal_()
    assert not torch.allclose(peephole(x)[0], plain(x)[0])  # the peepholes do take part


def test_peephole_cell_saves_and_loads(tmp_path):
    tokenizer = long_lag_tokenizer()
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, cell="lstm-peephole", layers=2, hidden=16))
    path = tmp_path / "peep.safetensors"
    save_checkpoint(path, model, tokenizer, {"step": 0})
    loaded = load_checkpoint(path).model
    tokens = torch.randint(tokenizer.vocab_size, (2, 9))
    model.eval()
    assert torch.allclose(model(tokens)[0], loaded(tokens)[0])
    # Fed in pieces with the state carried, the output is the same as in one call.
    first, state = loaded(tokens[:, :4])
    rest, _ = loaded(tokens[:, 4:], state)
    assert torch.allclose(torch.cat([first, rest], 1), loaded(tokens)[0], atol=1e-6)
