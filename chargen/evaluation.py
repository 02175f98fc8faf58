"""Evaluation: the model's loss on a text, per token and per character.

Used for the validation split during training and by ``chargen eval``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ChargenError
from .model import CharLM, State
from .text.tokenizers import Tokenizer


@dataclass
class EvalResult:
    nats_per_token: float
    nats_per_char: float
    tokens: int
    chars: int

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.nats_per_char, 700.0))

    def to_dict(self) -> dict:
        return {"nats_per_char": self.nats_per_char, "bits_per_char": self.bits_per_char,
                "perplexity": self.perplexity, "tokens": self.tokens, "chars": self.chars}


LOGITS_PER_GROUP = 1 << 24  # logits alive at once during evaluation: 64 MB of fp32
EVAL_BLOCKS = 8  # a capped evaluation scores this many runs of streams spread over the split


@torch.inference_mode()
def evaluate(model: CharLM, tokens: np.ndarray, tokenizer: Tokenizer, *, autocast=nullcontext,
             stream_len: int = 2048, burn_in: int = 256, chunk_len: int = 256,
             max_tokens: int | None = None, dist=None) -> EvalResult:
    """Loss over every token of ``tokens`` (each predicted from the ones before it).

    The text is cut into streams of ``stream_len`` predictions that run side by side for speed.
    Each stream first reads the ``burn_in`` tokens before its own part without scoring them, so
    every prediction has real context, as if the whole text were read in one pass. The figure is
    then comparable with published per-char losses.

    ``max_tokens`` caps the work for huge validation splits: about that many predictions are
    scored, in whole streams spread evenly over the text, the same ones at every call. Streams
    are processed a group at a time, so memory stays small whatever the text's length (``tokens``
    may be a memory map). With ``dist`` (a ``chargen.training.distributed.Distributed``) each rank scores
    its share of the streams and the totals are summed over ranks.
    """
    n = len(tokens)
    if n < 2:
        raise ChargenError("the evaluation text is too short (it needs at least 2 tokens)")
    if max_tokens and max_tokens < n - 1:
        stream_len = min(stream_len, max_tokens)
        count = math.ceil((n - 1) / stream_len)
        keep = min(count, max(1, max_tokens // stream_len))
        # In EVAL_BLOCKS runs of consecutive streams spread over the text: few places of a
        # memory-mapped split are touched (each maps a page-cache folio of up to 2 MB).
        per_block = math.ceil(keep / EVAL_BLOCKS)
        starts = np.linspace(0, count - per_block, math.ceil(keep / per_block)).round().astype(np.int64)
        chosen = np.unique((starts[:, None] + np.arange(per_block)).ravel())[:keep]
    else:
        chosen = np.arange(math.ceil((n - 1) / stream_len))
    if dist is not None:
        chosen = chosen[dist.rank::dist.world_size]
    device = next(model.parameters()).device
    group = max(1, LOGITS_PER_GROUP // (chunk_len * model.config.vocab_size))
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # nats, predictions, chars
    for i in range(0, len(chosen), group):
        totals += _score_streams(model, tokens, tokenizer, chosen[i:i + group], stream_len, burn_in,
                                 chunk_len, autocast, device)
    model.train(was_training)
    if dist is not None:
        totals = dist.sum(totals)
    nats, predicted, chars = totals.tolist()
    return EvalResult(nats / predicted, nats / max(chars, 1), int(predicted), int(chars))


def _score_streams(model: CharLM, tokens: np.ndarray, tokenizer: Tokenizer, streams: np.ndarray,
                   stream_len: int, burn_in: int, chunk_len: int, autocast, device) -> torch.Tensor:
    """[summed nats, predictions, chars] of the given streams, run side by side."""
    n = len(tokens)
    # Stream s scores the targets at positions [first, last) and reads from `begin` on.
    firsts = [1 + int(s) * stream_len for s in streams]
    begins = [max(0, first - 1 - burn_in) for first in firsts]
    lasts = [min(first + stream_len, n) for first in firsts]
    width = max(last - begin - 1 for begin, last in zip(begins, lasts))
    inputs = torch.zeros(len(streams), width, dtype=torch.long)
    targets = torch.zeros(len(streams), width, dtype=torch.long)
    scored = torch.zeros(len(streams), width, dtype=torch.bool)
    chars = 0
    for row, (begin, first, last) in enumerate(zip(begins, firsts, lasts)):
        window = torch.from_numpy(np.asarray(tokens[begin:last], dtype=np.int64))
        size = last - begin - 1
        inputs[row, :size] = window[:-1]
        targets[row, :size] = window[1:]
        scored[row, first - 1 - begin:size] = True
        # Per char: the chars of the scored text (exact for char and byte tokenizers).
        chars += tokenizer.count_chars(np.asarray(tokens[first:last]))
    state: State = None
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, width, chunk_len):
        x = inputs[:, start:start + chunk_len].to(device)
        with autocast():
            logits, state = model(x, state)
        losses = F.cross_entropy(logits.float().transpose(1, 2), targets[:, start:start + chunk_len].to(device),
                                 reduction="none")
        total += (losses * scored[:, start:start + chunk_len].to(device)).sum()
    predicted = sum(last - first for first, last in zip(firsts, lasts))
    return torch.stack([total, torch.tensor(float(predicted), dtype=torch.float64, device=device),
                        torch.tensor(float(chars), dtype=torch.float64, device=device)])
