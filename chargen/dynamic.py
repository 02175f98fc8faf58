"""Dynamic evaluation (Krause et al. 2018): a model that keeps learning on the text it reads.

After scoring each segment of text, the model takes one gradient step on that segment's loss, so
names, words and phrasing met so far become likelier further on. The step is RMS-style (each
weight's gradient divided by the root of its running mean square, as in RMSprop) and every step
also pulls the weights a fraction ``decay`` of the way back toward the trained ones, so the model
adapts to the recent text without drifting away from what it learned.

``evaluate_dynamic`` scores a text this way on a copy of the model; ``Adapter`` is the mechanism,
also used by the REPL's ``/adapt on`` and the API's ``adapt=True``. The weights only ever change in
memory: no checkpoint file is written, and ``Adapter.restore`` puts the trained weights back exactly.
The defaults were picked on the end of Tiny Shakespeare's training split, never on its validation
split: ``bench/dynamic_tune.py``.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ChargenError
from .evaluation import EvalResult
from .model import CharLM, State
from .model.state import detach_state
from .text.tokenizers import Tokenizer

DYNAMIC_LR = 2e-4  # the step size, per weight, in units of its gradient's running RMS
DYNAMIC_DECAY = 0.001  # each step moves the weights this fraction of the way back to the trained ones
DYNAMIC_SEGMENT = 64  # tokens scored between two steps
RMS_BETA = 0.99  # how slowly the running mean square of the gradients forgets
RMS_EPS = 1e-8


class Adapter:
    """Keeps a model learning on the text it is given, in place; ``restore`` undoes it all."""

    def __init__(self, model: CharLM, lr: float = DYNAMIC_LR, decay: float = DYNAMIC_DECAY):
        if not lr >= 0 or not 0 <= decay <= 1:
            raise ChargenError(f"dynamic evaluation: the learning rate ({lr}) must be >= 0 and the decay "
                               f"({decay}) between 0 and 1")
        self.model, self.lr, self.decay = model, lr, decay
        self.trained = [p.detach().clone() for p in model.parameters()]
        self.restore()

    def restore(self) -> None:
        """Put the trained weights back exactly and forget all adaptation and context."""
        with torch.no_grad():
            for param, trained in zip(self.model.parameters(), self.trained):
                param.copy_(trained)
        self.square = [torch.zeros_like(p) for p in self.trained]
        self.steps = 0
        self.state: State = None  # the context the adaptation reads from, carried across calls

    def learn(self, tokens: np.ndarray | torch.Tensor) -> float:
        """Score ``tokens[1:]`` (each from the ones before it and the carried state), then take one
        step on that loss. Returns the summed loss in nats, measured before the step."""
        if len(tokens) < 2:
            return 0.0
        device = self.trained[0].device
        was_training = self.model.training
        self.model.eval()  # no dropout; cuDNN's RNN backward needs training mode, so it is off here
        cudnn_off = torch.backends.cudnn.flags(enabled=False) if device.type == "cuda" else nullcontext()
        try:
            # Gradients even when called under inference mode (a sampler's): made here, ids can be saved for backward.
            with torch.inference_mode(False), torch.enable_grad(), cudnn_off:
                ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64)).to(device)
                logits, state = self.model(ids[None, :-1], self.state)
                loss = F.cross_entropy(logits[0].float(), ids[1:], reduction="sum")
                self.model.zero_grad(set_to_none=True)
                (loss / (len(ids) - 1)).backward()
        finally:
            self.model.train(was_training)
        self.state = detach_state(state)
        self._step()
        return loss.item()

    def learn_text(self, tokens: np.ndarray, carry: bool = True, segment: int = DYNAMIC_SEGMENT) -> None:
        """Learn from ``tokens`` a segment at a time; ``carry=False`` reads them from an empty context."""
        if not carry:
            self.state = None
        tokens = np.asarray(tokens, dtype=np.int64)
        for start in range(0, max(len(tokens) - 1, 0), segment):
            self.learn(tokens[start:start + segment + 1])

    @torch.no_grad()
    def _step(self) -> None:
        self.steps += 1
        correction = 1 - RMS_BETA ** self.steps  # the running mean starts at zero: unbias it
        for param, trained, square in zip(self.model.parameters(), self.trained, self.square):
            if param.grad is None:
                continue
            grad = param.grad.float()
            square.mul_(RMS_BETA).addcmul_(grad, grad, value=1 - RMS_BETA)
            param.sub_((self.lr * grad / ((square / correction).sqrt() + RMS_EPS)).to(param.dtype))
            param.add_(trained - param, alpha=self.decay)
            param.grad = None


def evaluate_dynamic(model: CharLM, pieces: Iterable[np.ndarray], tokenizer: Tokenizer, *,
                     lr: float = DYNAMIC_LR, decay: float = DYNAMIC_DECAY, segment: int = DYNAMIC_SEGMENT,
                     on_progress: Callable[[int], None] | None = None) -> EvalResult:
    """Loss over a text given as pieces of token ids (``evaluation.encode_chunks``) with dynamic
    evaluation: one stream, each ``segment`` scored and then learned from. ``model`` is not changed
    (a copy adapts). ``on_progress(chars)`` is called now and then with the characters scored."""
    if segment < 1:
        raise ChargenError(f"--dynamic-segment {segment}: must be at least 1 token")
    adapter = Adapter(copy.deepcopy(model), lr, decay)
    nats, predicted, chars = 0.0, 0, 0
    pending = np.zeros(0, dtype=np.int64)
    for piece in pieces:
        pending = np.concatenate([pending, np.asarray(piece, dtype=np.int64)])
        while len(pending) > segment:
            nats += adapter.learn(pending[:segment + 1])
            predicted += segment
            chars += tokenizer.count_chars(pending[1:segment + 1])
            pending = pending[segment:]
            if on_progress and adapter.steps % 64 == 0:
                on_progress(chars)
    if len(pending) >= 2:
        nats += adapter.learn(pending)
        predicted += len(pending) - 1
        chars += tokenizer.count_chars(pending[1:])
    if not predicted:
        raise ChargenError("the evaluation text is too short (it needs at least 2 tokens)")
    if on_progress:
        on_progress(chars)
    return EvalResult(nats / predicted, nats / max(chars, 1), predicted, chars)
