"""Evaluation: the model's loss on a text, per token and per character.

Used for the validation split during training and by ``chargen eval``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ChargenError, check_known_chars
from .model import CharLM, State
from .text.tokenizers import Tokenizer


def nats_to_bits(nats: float) -> float:
    """A loss in nats (what training minimises) in bits, as char-model figures are often quoted."""
    return nats / math.log(2)


@dataclass
class EvalResult:
    nats_per_token: float
    nats_per_char: float
    tokens: int
    chars: int

    @property
    def bits_per_char(self) -> float:
        return nats_to_bits(self.nats_per_char)

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
             max_tokens: int | None = None, dist=None, score_from: int = 1) -> EvalResult:
    """Loss over every token of ``tokens`` (each predicted from the ones before it).

    The text is cut into streams of ``stream_len`` predictions that run side by side for speed.
    Each stream first reads the ``burn_in`` tokens before its own part without scoring them, so
    every prediction has real context, as if the whole text were read in one pass. The figure is
    then comparable with published per-char losses.

    ``max_tokens`` caps the work for huge validation splits: about that many predictions are
    scored, in whole streams spread evenly over the text, the same ones at every call. Streams
    are processed a group at a time, so memory stays small whatever the text's length (``tokens``
    may be a memory map). With ``dist`` (a ``chargen.training.distributed.Distributed``) each rank scores
    its share of the streams and the totals are summed over ranks. ``score_from`` > 1 reads the
    tokens before it as context only (how ``evaluate_stream`` joins its blocks).
    """
    n = len(tokens) - score_from + 1  # the scored part, as if it began the text
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
                                 chunk_len, autocast, device, score_from)
    model.train(was_training)
    if dist is not None:
        totals = dist.sum(totals)
    nats, predicted, chars = totals.tolist()
    return EvalResult(nats / predicted, nats / max(chars, 1), int(predicted), int(chars))


def _score_streams(model: CharLM, tokens: np.ndarray, tokenizer: Tokenizer, streams: np.ndarray,
                   stream_len: int, burn_in: int, chunk_len: int, autocast, device,
                   score_from: int = 1) -> torch.Tensor:
    """[summed nats, predictions, chars] of the given streams, run side by side."""
    n = len(tokens)
    # Stream s scores the targets at positions [first, last) and reads from `begin` on.
    firsts = [score_from + int(s) * stream_len for s in streams]
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


@torch.inference_mode()
def evaluate_windows(model: CharLM, tokens: np.ndarray, tokenizer: Tokenizer, window: int = 256, *,
                     autocast=nullcontext, score_from: int = 1) -> EvalResult:
    """Loss with no context carried: consecutive, non-overlapping windows of ``window``
    predictions, each from a fresh (zero) state that reads only its own window's tokens.

    This is nanoGPT's measurement (its ``estimate_loss`` scores random 256-token windows the same
    way); taking every window in turn instead of random ones makes the figure deterministic and
    covers every prediction once. The last window may be shorter. ``score_from`` as in ``evaluate``.
    """
    n = len(tokens)
    if window < 1:
        raise ChargenError(f"--windows {window}: the window must be at least 1 token")
    if n - score_from < 1:
        raise ChargenError("the evaluation text is too short (it needs at least 2 tokens)")
    device = next(model.parameters()).device
    firsts = np.arange(score_from, n, window)  # the first target of each window
    group = max(1, LOGITS_PER_GROUP // (window * model.config.vocab_size))
    was_training = model.training
    model.eval()
    nats, chars = 0.0, 0
    for i in range(0, len(firsts), group):
        inputs = torch.zeros(len(firsts[i:i + group]), window, dtype=torch.long)
        targets = torch.full_like(inputs, -100)  # -100: ignored by cross_entropy (a short last window)
        for row, first in enumerate(firsts[i:i + group]):
            last = min(int(first) + window, n)
            piece = torch.from_numpy(np.asarray(tokens[first - 1:last], dtype=np.int64))
            inputs[row, :last - first] = piece[:-1]
            targets[row, :last - first] = piece[1:]
            chars += tokenizer.count_chars(np.asarray(tokens[first:last]))
        with autocast():
            logits, _ = model(inputs.to(device))
        nats += F.cross_entropy(logits.float().transpose(1, 2), targets.to(device), reduction="sum").item()
    model.train(was_training)
    predicted = n - score_from
    return EvalResult(nats / predicted, nats / max(chars, 1), predicted, chars)


PIECE_CHARS = 1 << 20  # characters encoded at a time when a text is streamed
BLOCK_STREAMS = 64  # streams of predictions scored per block when a text is streamed


def encode_chunks(chunks: Iterable[str], tokenizer: Tokenizer, what: str = "the text",
                  piece_chars: int = PIECE_CHARS) -> Iterator[np.ndarray]:
    """The token ids of a text given as chunks (``chargen.text.files.iter_text``), a piece at a
    time, so memory stays proportional to a piece whatever the text's length.

    Characters the model never saw are refused piece by piece, naming ``what``. Char and byte
    tokenizers encode any cut the same; for sentencepiece and Unicode-normalizing tokenizers pieces
    are cut at line ends, so no word or combining sequence is split (a longer line stays whole).
    """
    by_line = tokenizer.kind == "sentencepiece" or bool(getattr(tokenizer, "normalize", None))
    carry = ""
    for chunk in chunks:
        for start in range(0, len(chunk), piece_chars):
            piece = chunk[start:start + piece_chars]
            if by_line:
                piece = carry + piece
                cut = piece.rfind("\n") + 1
                piece, carry = piece[:cut], piece[cut:]
            if piece:
                check_known_chars(tokenizer, piece, what)
                yield tokenizer.encode(piece)
    if carry:
        check_known_chars(tokenizer, carry, what)
        yield tokenizer.encode(carry)


def evaluate_stream(model: CharLM, pieces: Iterable[np.ndarray], tokenizer: Tokenizer, *,
                    window: int | None = None, stream_len: int = 2048, burn_in: int = 256,
                    block_streams: int = BLOCK_STREAMS, autocast=nullcontext,
                    on_progress: Callable[[int], None] | None = None) -> tuple[EvalResult, EvalResult | None]:
    """``evaluate`` (and ``evaluate_windows`` with ``window``) of a text given as pieces of token
    ids (``encode_chunks``), in bounded memory: the same figures as over the whole array at once.

    Tokens are scored a block at a time; a block ends on a stream and window boundary and the next
    one re-reads the ``burn_in`` tokens before it, so the streams are the same as in one pass.
    ``on_progress(chars)`` is called after each block with the characters scored so far.
    """
    block = block_streams * math.lcm(stream_len, window or 1)
    keep = max(burn_in, 1)  # tokens re-read as context by the next block
    totals = np.zeros(2, dtype=np.float64)  # nats, chars (the predictions are counted apart)
    window_totals = np.zeros(2, dtype=np.float64)
    predicted = 0
    pending, score_from = np.zeros(0, dtype=np.int64), 1

    def score(tokens: np.ndarray, first: int) -> None:
        nonlocal predicted
        for result, sums in ((evaluate(model, tokens, tokenizer, autocast=autocast, stream_len=stream_len,
                                       burn_in=burn_in, score_from=first), totals),
                             (evaluate_windows(model, tokens, tokenizer, window, autocast=autocast,
                                               score_from=first) if window else None, window_totals)):
            if result is not None:
                sums += (result.nats_per_token * result.tokens, result.chars)
        predicted += len(tokens) - first
        if on_progress:
            on_progress(int(totals[1]))

    for piece in pieces:
        pending = np.concatenate([pending, np.asarray(piece, dtype=np.int64)])
        while len(pending) >= score_from + block:
            score(pending[:score_from + block], score_from)
            pending, score_from = pending[score_from + block - keep:], keep
    if len(pending) > score_from or not predicted:
        score(pending, score_from)  # evaluate refuses a text too short to predict anything

    def result(sums):
        return EvalResult(sums[0] / predicted, sums[0] / max(sums[1], 1), predicted, int(sums[1]))
    return result(totals), (result(window_totals) if window else None)
