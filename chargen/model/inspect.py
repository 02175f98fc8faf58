"""What a model holds at every character of a text: its states, gates and predictions (``chargen viz``).

The numbers come from the model's own code, never from a copy of the cell's maths: LSTMs are
stepped by the sampling engine (``StepEngine``), whose observer hands over the gates, ``c`` and
``h`` it has just computed; other cells (GRU, plain RNN, peephole LSTM) are stepped one token at a
time through ``CharLM.forward``, and their states are read from the state it returns (there are
no gates to show without recomputing them). ``tests/model/test_inspect.py`` checks both against
a plain ``nn.LSTM``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .engine import StepEngine
from .lm import CharLM

# What an LSTM shows: cell state, hidden state and the input, forget and output gates.
LSTM_KINDS = ("c", "h", "i", "f", "o")
TOP_K = 5


@dataclass
class Trace:
    """A model's activations over a text, one row per character.

    ``states[kind]`` is ``[chars, layers, hidden]``: the value after reading that character.
    ``surprisal[t]`` is ``-log p(char t)`` in nats given the characters before it (NaN for the
    first, which nothing predicted); ``top_ids``/``top_probs`` ``[chars, 5]`` are the tokens the
    model thought most likely at that position, before seeing it.
    """

    text: str
    cell: str
    states: dict[str, np.ndarray]
    surprisal: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray


def kinds_of(model: CharLM) -> tuple[str, ...]:
    """What :func:`trace_tokens` records for ``model``: gates only where the engine computes them."""
    if StepEngine.supports(model):
        return LSTM_KINDS
    return ("c", "h") if model.config.cell in ("lstm", "lstm-peephole") else ("h",)


@torch.no_grad()
def trace_tokens(model: CharLM, ids: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Step ``model`` (in eval mode) through token ids ``[T]`` from a fresh state.

    Returns ``({kind: [T, layers, hidden]}, log-probs [T, vocab] of the token after each one)``.
    """
    model.eval()
    T, L, H = len(ids), model.config.layers, model.config.hidden
    kinds = kinds_of(model)
    states = {kind: torch.empty(T, L, H) for kind in kinds}
    log_probs = torch.empty(T, model.config.vocab_size)
    ids = ids.to(model.head.weight.device).view(1, -1)
    if StepEngine.supports(model):
        engine = StepEngine(model, "fp32")
        engine.load_state(None, 1)
        position = 0

        def observe(layer: int, values: dict[str, torch.Tensor]) -> None:
            for kind in kinds:
                states[kind][position, layer].copy_(values[kind][0])

        engine.observer = observe
        for position in range(T):
            log_probs[position] = torch.log_softmax(engine.step(ids[:, position])[0].float(), -1).cpu()
        return states, log_probs
    state = None
    for t in range(T):
        logits, state = model(ids[:, t:t + 1], state)
        h, c = state if isinstance(state, tuple) else (state, None)
        states["h"][t] = h[:, 0].cpu()
        if "c" in states:
            states["c"][t] = c[:, 0].cpu()
        log_probs[t] = torch.log_softmax(logits[0, 0].float(), -1).cpu()
    return states, log_probs


def char_spans(tokenizer, text: str) -> tuple[str, np.ndarray, np.ndarray]:
    """The text as the model reads it (normalized), its token ids, and the index of each
    character's last token. Char tokenizers give one token per character, byte tokenizers one per
    UTF-8 byte; sentencepiece pieces span several characters and are refused by the caller."""
    ids = np.asarray(tokenizer.encode(text))
    canonical = tokenizer.decode(ids.tolist())
    if tokenizer.kind == "byte":
        ends = np.cumsum([len(ch.encode("utf-8")) for ch in canonical]) - 1
    else:
        ends = np.arange(len(canonical))
    return canonical, ids, ends.astype(np.int64)


def trace_text(model: CharLM, tokenizer, text: str) -> Trace:
    """:func:`trace_tokens` over ``text``, with everything expressed per character."""
    text, ids, ends = char_spans(tokenizer, text)
    states, log_probs = trace_tokens(model, torch.as_tensor(ids, dtype=torch.long))
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    # Surprisal of a character: of all its tokens, each predicted by the step before it.
    token_surprisal = np.full(len(ids), np.nan, dtype=np.float64)
    if len(ids) > 1:
        picked = log_probs[:-1].gather(1, torch.as_tensor(ids[1:], dtype=torch.long).view(-1, 1))[:, 0]
        token_surprisal[1:] = -picked.double().numpy()
    cumulative = np.concatenate([[0.0], np.cumsum(np.nan_to_num(token_surprisal))])
    surprisal = cumulative[ends + 1] - cumulative[starts]
    surprisal[starts == 0] = np.nan
    # The predictions made before each character's first token (none before the very first).
    before = torch.as_tensor(np.maximum(starts - 1, 0))
    top = log_probs[before].exp().topk(min(TOP_K, log_probs.size(1)), dim=1)
    top_probs = top.values.numpy().astype(np.float32)
    top_probs[starts == 0] = 0.0
    return Trace(text=text, cell=model.config.cell,
                 states={kind: values[torch.as_tensor(ends)].numpy() for kind, values in states.items()},
                 surprisal=surprisal.astype(np.float32), top_ids=top.indices.numpy(), top_probs=top_probs)
