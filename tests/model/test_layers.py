"""The recurrent layers: chargen's cheap dropout, the fused layer-by-layer calls, the peephole LSTM."""

import pytest
import torch
from torch import nn

from chargen.checkpoint import load_checkpoint, save_checkpoint
from chargen.model import CharLM, ModelConfig
from chargen.model import layers
from chargen.model.layers import PeepholeLSTM, drop_token_rows, dropout
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
    monkeypatch.setattr(layers, "dropout", lambda x, p, training, locked=False: calls.append(p) or x)
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


def test_locked_dropout_holds_one_mask_for_every_time_step():
    torch.manual_seed(0)
    ones = torch.ones(200, 7, 300)
    dropped = dropout(ones, 0.3, training=True, locked=True)
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # the same at every step
    assert abs((dropped[:, 0] == 0).float().mean().item() - 0.3) < 0.01
    assert not torch.equal(dropped[0, 0], dropped[1, 0])  # but its own for each sequence
    assert dropout(ones, 0.3, training=False, locked=True) is ones


def test_drop_token_rows_zeroes_whole_tokens_and_keeps_the_mean():
    torch.manual_seed(0)
    weight = torch.ones(5000, 8)
    dropped = drop_token_rows(weight, 0.2, training=True)
    rows_zero = (dropped == 0).all(dim=1)
    assert torch.equal(rows_zero, (dropped == 0).any(dim=1))  # a row goes whole or not at all
    assert abs(rows_zero.float().mean().item() - 0.2) < 0.02
    assert abs(dropped.mean().item() - 1.0) < 0.03
    assert drop_token_rows(weight, 0.2, training=False) is weight
    columns = drop_token_rows(torch.ones(8, 5000), 0.2, training=True, dim=1)
    assert torch.equal((columns == 0).all(dim=0), (columns == 0).any(dim=0))


def reference_lstm(x, state, weights, num_layers):
    """An LSTM stepped in Python, one time step at a time, from (w_ih, w_hh, b_ih, b_hh) per layer."""
    h_all, c_all = state
    finals_h, finals_c = [], []
    for layer in range(num_layers):
        w_ih, w_hh, b_ih, b_hh = weights[4 * layer:4 * layer + 4]
        h, c, steps = h_all[layer], c_all[layer], []
        for t in range(x.size(1)):
            i, f, g, o = (x[:, t] @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            steps.append(h)
        x = torch.stack(steps, dim=1)
        finals_h.append(h)
        finals_c.append(c)
    return x, (torch.stack(finals_h), torch.stack(finals_c))


def test_weight_drop_feeds_the_fused_kernel_the_masked_recurrent_weights():
    # The fused kernel (oneDNN here, cuDNN on a GPU), all layers in one call or one layer at a
    # time, computes the LSTM of the masked weight_hh, exactly as a plain stepped LSTM does.
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=13, layers=2, hidden=16, weight_drop=0.4, skip_connections=False))
    rnn = model.rnn
    x, zeros = torch.randn(3, 9, 16), torch.zeros(2, 3, 16)
    torch.manual_seed(5)
    stacked, stacked_state = rnn(x)
    torch.manual_seed(5)
    layerwise, layerwise_state = rnn(x, every_layer=True)
    torch.manual_seed(5)
    masked = rnn.call_weights(None)
    for layer in range(2):
        kept = masked[4 * layer + 1] != 0
        assert 0.5 < kept.float().mean() < 0.7  # about 40% of the recurrent weights dropped
        assert torch.equal(masked[4 * layer], getattr(rnn, f"weight_ih_l{layer}"))  # input weights untouched
    expected, expected_state = reference_lstm(x, (zeros, zeros), masked, 2)
    torch.testing.assert_close(stacked, expected)
    torch.testing.assert_close(stacked_state, expected_state)
    torch.testing.assert_close(layerwise[-1], stacked, rtol=0, atol=0)
    torch.testing.assert_close(layerwise_state, stacked_state, rtol=0, atol=0)
    torch.manual_seed(6)
    assert not torch.equal(rnn(x)[0], stacked)  # a fresh mask every call


def test_weight_drop_gradients_reach_only_the_kept_recurrent_weights():
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=13, layers=1, hidden=16, weight_drop=0.5))
    tokens = torch.randint(13, (2, 6))
    torch.manual_seed(1)
    model(tokens)[0].sum().backward()
    torch.manual_seed(1)
    kept = model.rnn.call_weights(None)[1] != 0
    grad = model.rnn.weight_hh_l0.grad
    assert torch.all(grad[~kept] == 0) and grad[kept].abs().sum() > 0


@pytest.mark.parametrize("cell", ["lstm", "gru", "lstm-peephole"])
def test_regularization_is_off_at_evaluation(cell):
    torch.manual_seed(0)
    settings = {"dropout": 0.3, "weight_drop": 0.5, "locked_dropout": True, "embed_dropout": 0.2}
    model = CharLM(ModelConfig(vocab_size=13, cell=cell, layers=2, hidden=16, **settings))
    plain = CharLM(ModelConfig(vocab_size=13, cell=cell, layers=2, hidden=16))
    plain.load_state_dict(model.state_dict())
    tokens = torch.randint(13, (3, 12))
    with torch.no_grad():
        evaluated, plain_out = model.eval()(tokens)[0], plain.eval()(tokens)[0]
        trained = model.train()(tokens)[0]
    torch.testing.assert_close(evaluated, plain_out, rtol=0, atol=0)
    assert not torch.allclose(trained, plain_out)  # while training, they do act


def test_peephole_cell_takes_weight_drop_like_the_fused_cells():
    # With zero peepholes it is the plain LSTM; the same seed draws the same recurrent masks.
    torch.manual_seed(0)
    fused = CharLM(ModelConfig(vocab_size=13, layers=2, hidden=16, weight_drop=0.3, skip_connections=False))
    stepped = CharLM(ModelConfig(vocab_size=13, cell="lstm-peephole", layers=2, hidden=16, weight_drop=0.3,
                                 skip_connections=False))
    state = {k: v for k, v in fused.state_dict().items()}
    state.update({f"rnn.peephole_l{k}": torch.zeros(3, 16) for k in range(2)})
    stepped.load_state_dict(state)
    tokens = torch.randint(13, (2, 7))
    torch.manual_seed(9)
    expected = fused(tokens)[0]
    torch.manual_seed(9)
    torch.testing.assert_close(stepped(tokens)[0], expected)
