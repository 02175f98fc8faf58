"""CharLM: state carried between calls, tied weights, skip connections, the one-hot input path."""

import pytest
import torch

from chargen.model import CELLS, CharLM, ModelConfig, grow_vocab
from chargen.model import layers


@pytest.mark.parametrize("cell", CELLS)
def test_feeding_in_pieces_equals_feeding_at_once(cell):
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16)).eval()
    tokens = torch.randint(11, (3, 40))
    whole, _ = model(tokens)
    state, parts = None, []
    for piece in tokens.split(7, dim=1):
        logits, state = model(piece, state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole)


def test_weights_are_tied():
    model = CharLM(ModelConfig(vocab_size=7, hidden=8))
    assert model.head.weight is model.embed.weight
    untied = CharLM(ModelConfig(vocab_size=7, hidden=8, tie_weights=False))
    assert untied.head.weight is not untied.embed.weight
    assert untied.num_parameters() == model.num_parameters() + 7 * 8


def test_shape_is_layers_by_width_and_cell():
    assert ModelConfig(vocab_size=65).shape() == "2x512 lstm"
    assert ModelConfig(vocab_size=65, layers=3, hidden=64, cell="gru").shape() == "3x64 gru"


@pytest.mark.parametrize("cell", CELLS)
def test_skip_connections_add_every_lower_layer_to_the_logits(cell):
    # Built independently: the stack without skips gives the top layer's output, a one-layer
    # model with the same first-layer weights gives the lower one's. Their heads' sum is the model.
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16)).eval()
    with torch.no_grad():
        model.skip_head.weight.normal_()  # starts at zero: make it count
    plain = CharLM(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16, skip_connections=False)).eval()
    lower = CharLM(ModelConfig(vocab_size=11, cell=cell, layers=1, hidden=16)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("skip_head")})
    lower.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith("skip_head") and ("_l1" not in k)})
    tokens = torch.randint(11, (3, 20))
    with torch.no_grad():
        logits, state = model(tokens)
        top_logits, plain_state = plain(tokens)
        lower_out, _ = lower.rnn(lower.embed(tokens))
        torch.testing.assert_close(logits, top_logits + model.skip_head(lower_out))
    torch.testing.assert_close(state, plain_state)
    assert model.num_parameters() == plain.num_parameters() + 11 * 16


@pytest.mark.parametrize("cell,layer_count,rate,embed_rate", [
    ("lstm", 2, 0.0, 0.0), ("lstm", 1, 0.0, 0.0), ("gru", 2, 0.0, 0.0), ("rnn", 2, 0.0, 0.0), ("lstm", 3, 0.3, 0.0),
    ("lstm", 2, 0.0, 0.3)])
def test_one_hot_input_path_is_the_same_model_with_the_same_gradients(cell, layer_count, rate, embed_rate,
                                                                      monkeypatch):
    # For a vocabulary narrower than the hidden size, training feeds one-hot ids through W_ih·Eᵀ
    # instead of embedding them: the logits, the carried state and every gradient must not change,
    # also layer by layer (dropout between layers, its masks made to keep every unit here), and
    # with embedding dropout (the same tokens dropped: a column mask on the product).
    torch.manual_seed(0)
    monkeypatch.setattr(layers, "dropout", lambda x, p, training, locked=False: x)
    model = CharLM(ModelConfig(vocab_size=20, cell=cell, layers=layer_count, hidden=64, dropout=rate,
                               embed_dropout=embed_rate))
    tokens = torch.randint(20, (4, 30))
    assert model.uses_one_hot_input(tokens) and not model.uses_one_hot_input(tokens[:1, :1])  # not when sampling
    results = {}
    for one_hot in (True, False):
        monkeypatch.setattr(model, "uses_one_hot_input", lambda _tokens: one_hot)
        model.zero_grad()
        torch.manual_seed(7)
        logits, state = model(tokens[:, :20])
        more, _ = model(tokens[:, 20:], state)
        (logits.square().mean() + more.mean()).backward()
        results[one_hot] = logits, state, more, [p.grad.clone() for p in model.parameters()]
    torch.testing.assert_close(results[True], results[False])
    if embed_rate:
        torch.manual_seed(7)
        assert not torch.allclose(model(tokens[:, :20])[0], model.eval()(tokens[:, :20])[0])  # tokens were dropped


def test_one_hot_input_path_is_taken_with_dropout_and_left_for_wide_vocabularies():
    model = CharLM(ModelConfig(vocab_size=20, layers=2, hidden=64, dropout=0.2))
    tokens = torch.randint(20, (4, 30))
    assert model.train().uses_one_hot_input(tokens) and model.eval().uses_one_hot_input(tokens)
    wide = CharLM(ModelConfig(vocab_size=300, layers=2, hidden=64))  # e.g. sentencepiece pieces
    assert not wide.uses_one_hot_input(torch.randint(300, (4, 30)))
    peephole = CharLM(ModelConfig(vocab_size=20, layers=2, hidden=64, cell="lstm-peephole"))
    assert not peephole.uses_one_hot_input(tokens)  # no fused kernel to take the product


@pytest.mark.parametrize("skip_connections", [True, False])
def test_a_grown_vocabulary_keeps_what_the_model_says_about_the_old_one(skip_connections):
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=10, layers=2, hidden=16, skip_connections=skip_connections)).eval()
    if skip_connections:
        with torch.no_grad():
            model.skip_head.weight.normal_()
    grown = grow_vocab(model, 13).eval()
    assert grown.config.vocab_size == 13 and model.config.vocab_size == 10
    tokens = torch.randint(10, (2, 15))
    with torch.no_grad():
        old, old_state = model(tokens)
        new, new_state = grown(tokens)
    torch.testing.assert_close(new[..., :10], old, rtol=0, atol=0)
    torch.testing.assert_close(new_state, old_state, rtol=0, atol=0)
    assert grown.head.weight is grown.embed.weight  # still tied


def test_regularize_changes_every_place_it_applies():
    model = CharLM(ModelConfig(vocab_size=10, layers=2, hidden=16))
    model.regularize(dropout=0.3, weight_drop=0.2, locked_dropout=True)
    assert model.config.dropout == model.drop.p == model.rnn.dropout == 0.3
    assert model.config.weight_drop == model.rnn.weight_drop == 0.2 and model.rnn.locked and model.drop.locked
    one_layer = CharLM(ModelConfig(vocab_size=10, layers=1, hidden=16))
    one_layer.regularize(dropout=0.3)
    assert one_layer.drop.p == 0.3 and one_layer.rnn.dropout == 0.0  # no layer above to drop into


@pytest.mark.parametrize("skip_connections", [True, False])
def test_with_top_returns_the_top_layers_output_beside_the_same_logits(skip_connections):
    # What --ar and --tar act on: the top layer's output as it leaves the layer, and as the head
    # reads it (after dropout, which is off at evaluation).
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=11, layers=2, hidden=16, skip_connections=skip_connections)).eval()
    tokens = torch.randint(11, (3, 9))
    logits, state = model(tokens)
    top_logits, top_state, top = model(tokens, with_top=True)
    torch.testing.assert_close(top_logits, logits, rtol=0, atol=0)
    outputs, _ = model.rnn(model.embed(tokens), None, every_layer=True) if skip_connections else \
        model.rnn(model.embed(tokens))
    torch.testing.assert_close(top.raw, outputs[-1] if skip_connections else outputs)
    assert top.dropped is not None and torch.equal(top.dropped, top.raw)
    model.regularize(dropout=0.5)
    model.train()
    _, _, top = model(tokens, with_top=True)
    dropped = top.dropped != 0
    assert 0 < dropped.float().mean() < 1  # about half the units dropped, the rest scaled up
    torch.testing.assert_close(top.dropped[dropped], top.raw[dropped] * 2)
