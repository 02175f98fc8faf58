"""The activations chargen viz shows: the model's own steps, checked against plain torch cells."""

import numpy as np
import pytest
import torch
from torch import nn

from chargen.model import engine as engine_module
from chargen.model.inspect import LSTM_KINDS, kinds_of, trace_text, trace_tokens
from chargen.text.tokenizers import ByteTokenizer
from tests.conftest import TOKENIZER, random_model

TEXT = "the cat sat on the mat.\nand the dog, too.\n"


def reference_layers(model, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """h, c and the i, f, o gates of every layer at every step, from single-layer torch modules that
    hold the model's weights, stepped one token at a time; gates from nn.LSTM's documented formula."""
    cell, L, H = model.config.cell, model.config.layers, model.config.hidden
    x = model.embed(ids.view(1, -1))
    out = {kind: torch.empty(len(ids), L, H) for kind in ("h", "c", "i", "f", "o")}
    for layer in range(L):
        module = (nn.LSTM if cell == "lstm" else nn.GRU)(H, H, batch_first=True)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(module, f"{name}_l0").data.copy_(getattr(model.rnn, f"{name}_l{layer}"))
        state, steps = None, []
        for t in range(len(ids)):
            if cell == "lstm":
                h_prev = torch.zeros(1, H) if state is None else state[0][0]
                gates = (x[:, t] @ module.weight_ih_l0.t() + module.bias_ih_l0
                         + h_prev @ module.weight_hh_l0.t() + module.bias_hh_l0)
                i, f, _, o = gates.sigmoid().chunk(4, dim=1)
                out["i"][t, layer], out["f"][t, layer], out["o"][t, layer] = i[0], f[0], o[0]
            y, state = module(x[:, t:t + 1], state)
            h, c = state if cell == "lstm" else (state, None)
            out["h"][t, layer] = h[0, 0]
            if c is not None:
                out["c"][t, layer] = c[0, 0]
            steps.append(y)
        x = torch.cat(steps, dim=1)
    return out


@pytest.mark.parametrize("cell,layers", [("lstm", 1), ("lstm", 2), ("gru", 2)])
def test_activations_match_plain_torch_cells(cell, layers):
    model = random_model(layers=layers, hidden=24, cell=cell)
    ids = torch.as_tensor(TOKENIZER.encode(TEXT), dtype=torch.long)
    states, _ = trace_tokens(model, ids)
    with torch.no_grad():
        want = reference_layers(model, ids)
    assert set(states) == set(kinds_of(model))
    for kind, values in states.items():
        torch.testing.assert_close(values, want[kind], atol=2e-5, rtol=1e-5, msg=f"{cell} {kind}")


def test_lstm_activations_come_from_the_sampling_engine(monkeypatch):
    seen = []
    original = engine_module.StepEngine.step

    def step(self, tokens):
        seen.append(self.observer is not None)
        return original(self, tokens)

    monkeypatch.setattr(engine_module.StepEngine, "step", step)
    states, _ = trace_tokens(random_model(), torch.as_tensor(TOKENIZER.encode("abc"), dtype=torch.long))
    assert seen == [True] * 3 and set(states) == set(LSTM_KINDS)


def test_surprisal_and_predictions_are_the_models():
    model = random_model()
    trace = trace_text(model, TOKENIZER, TEXT)
    ids = torch.as_tensor(TOKENIZER.encode(TEXT), dtype=torch.long)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids.view(1, -1))[0][0], -1)
    want = -log_probs[:-1].gather(1, ids[1:].view(-1, 1))[:, 0]
    assert np.isnan(trace.surprisal[0])
    np.testing.assert_allclose(trace.surprisal[1:], want.numpy(), atol=1e-4)
    top = log_probs[:-1].exp().topk(5, dim=1)
    assert (trace.top_ids[1:] == top.indices.numpy()).all()
    np.testing.assert_allclose(trace.top_probs[1:], top.values.numpy(), atol=1e-5)
    assert trace.states["c"].shape == (len(TEXT), 2, 48)


def test_byte_models_get_one_row_per_character():
    torch.manual_seed(0)
    from chargen.model import CharLM, ModelConfig

    model = CharLM(ModelConfig(vocab_size=256, layers=1, hidden=16)).eval()
    text = "café au lait"  # é is two bytes
    trace = trace_text(model, ByteTokenizer(), text)
    assert trace.text == text and trace.states["h"].shape == (len(text), 1, 16)
    ids = torch.as_tensor(list(text.encode()), dtype=torch.long)
    states, log_probs = trace_tokens(model, ids)
    e = text.index("é")  # bytes e and e+1; the character's row is after its second byte
    torch.testing.assert_close(torch.as_tensor(trace.states["h"][e + 1]), states["h"][e + 2])
    two_bytes = -(log_probs[e - 1, ids[e]] + log_probs[e, ids[e + 1]])
    assert trace.surprisal[e] == pytest.approx(float(two_bytes), abs=1e-4)
