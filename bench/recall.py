"""Research helpers for the long-lag experiment (bench/long_lag.py and its tests), not chargen's API.

``train_recall`` trains on one episode per row and scores the recall alone, as the 1997 paper
did: with ``chargen train``'s language-model loss the recall is one prediction in ``lag + 4``,
among unpredictable ones, and is learned far more slowly (bench/HISTORY.md).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from chargen.errors import ChargenError
from chargen.model import CharLM
from chargen.text.long_lag import CUES, DISTRACTORS, RECALL_MARK, check_long_lag
from chargen.text.tokenizers import CharTokenizer


def long_lag_batch(tokenizer: CharTokenizer, lag: int, n: int, generator: torch.Generator,
                   symbols: int = 4, distractors: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` episodes as ids: inputs ``[n, lag + 2]`` (cue, distractors, ``=``) and the cues ``[n]``."""
    check_long_lag(lag, symbols, distractors)
    cue_ids = torch.from_numpy(tokenizer.encode(CUES[:symbols]).astype(np.int64))
    filler_ids = torch.from_numpy(tokenizer.encode(DISTRACTORS[:distractors]).astype(np.int64))
    mark = int(tokenizer.encode(RECALL_MARK)[0])
    cues = cue_ids[torch.randint(symbols, (n,), generator=generator)]
    filler = filler_ids[torch.randint(distractors, (n, lag), generator=generator)]
    x = torch.cat([cues[:, None], filler, torch.full((n, 1), mark)], dim=1)
    return x, cues


def train_recall(model: CharLM, tokenizer: CharTokenizer, lag: int, steps: int, *, batch_size: int = 32,
                 lr: float = 3e-3, seed: int = 0, max_time: float | None = None) -> float:
    """Train ``model`` on fresh long-lag episodes, scoring only the recall (as in the 1997 paper).

    Each row of a batch is one whole episode from a zero state, and the loss is the prediction
    after ``=`` alone: every step sends the full error signal back towards the cue, ``lag + 1``
    steps away, instead of diluting it among unpredictable distractors. AdamW, short warm-up,
    gradient clipping at 1, like ``chargen train``. Stops after ``steps`` steps or ``max_time``
    seconds; returns the last loss.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    model.train()
    started, loss = time.perf_counter(), torch.tensor(float("nan"))
    for step in range(steps):
        if max_time is not None and time.perf_counter() - started > max_time:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20)
        x, cues = long_lag_batch(tokenizer, lag, batch_size, generator)
        logits, _ = model(x)
        loss = F.cross_entropy(logits[:, -1], cues)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return loss.item()


@torch.no_grad()
def recall_accuracy(model: CharLM, tokenizer: CharTokenizer, lag: int, episodes: int = 1000,
                    seed: int = 12345) -> float:
    """Fraction of fresh episodes where the model's most likely token after ``=`` is the cue.

    The argmax is over the whole vocabulary, so chance is ``1 / symbols`` only once the model
    has at least learned that a cue follows ``=``.
    """
    was_training = model.training
    model.eval()
    x, cues = long_lag_batch(tokenizer, lag, episodes, torch.Generator().manual_seed(seed))
    logits, _ = model(x)
    model.train(was_training)
    return (logits[:, -1].argmax(-1) == cues).float().mean().item()


def set_forget_bias(model: CharLM, value: float) -> None:
    """Set the forget-gate bias of an LSTM ``CharLM`` (``lstm`` or ``lstm-peephole``) to ``value``.

    chargen initialises it to 1, the usual choice for language modelling. A forget gate of
    sigmoid(1) = 0.73 halves what the cell holds every two steps, so at initialisation the error
    signal from 100 steps away is ~1e-8 and the cell cannot discover a long lag. Hochreiter &
    Schmidhuber's LSTM had no forget gate at all (a constant 1); a bias of 5 (gate 0.993) is close.
    """
    if model.config.cell not in ("lstm", "lstm-peephole"):
        raise ChargenError(f"cell {model.config.cell!r} has no forget gate")
    hidden = model.config.hidden
    with torch.no_grad():
        for layer in range(model.config.layers):
            getattr(model.rnn, f"bias_ih_l{layer}")[hidden:2 * hidden].fill_(value)
            getattr(model.rnn, f"bias_hh_l{layer}")[hidden:2 * hidden].fill_(0.0)


def hidden_grad_norms(model: CharLM, tokens: torch.Tensor, distances: list[int]) -> dict[int, float]:
    """The vanishing gradient, measured: mean ‖∂loss/∂h_t‖ at ``distances`` steps before the loss.

    ``tokens`` is ``[batch, T + 1]``; the loss is the cross-entropy of the last prediction only
    (position ``T - 1`` predicting token ``T``). The recurrent layers are run one step at a time
    so that every step's hidden state ``h_t`` (all layers) is a tensor we can ask for its
    gradient; cuDNN-style fused kernels never expose them. Returns ``{distance: mean norm}``
    averaged over the batch (each row's loss depends on its own row only).
    """
    x, target = tokens[:, :-1], tokens[:, -1]
    T = x.size(1)
    if max(distances) >= T:
        raise ChargenError(f"distance {max(distances)} needs sequences longer than {T} steps")
    was_training = model.training
    model.eval()  # no dropout: measure the network, not the noise
    inputs = model.embed(x)
    state, hidden = None, []
    for t in range(T):
        out, state = model.rnn(inputs[:, t:t + 1], state)
        h = state[0] if isinstance(state, tuple) else state
        h.retain_grad()
        hidden.append(h)
    # With skip connections the last step's every layer feeds the head: that is its final h.
    last = list(h) if model.skip_head is not None else out[:, -1]
    loss = F.cross_entropy(model.logits(last), target, reduction="sum")
    model.zero_grad(set_to_none=True)
    loss.backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    # h at step T-1 feeds the loss through `out`, not through the state: distance d >= 1 is the
    # state d steps before the last one, which the loss reaches only through the recurrence.
    norms = {}
    for d in distances:
        grad = hidden[T - 1 - d].grad
        norms[d] = 0.0 if grad is None else grad.transpose(0, 1).flatten(1).norm(dim=1).mean().item()
    return norms
