"""Sampling: turn next-token logits into text, one token at a time, carrying the model's state.

``Sampler`` holds the recurrent state between calls, which is what makes a chat remember: each
``feed`` and ``stream`` continues from where the last one stopped. Everything here works on a
batch of independent streams so that ``--num-samples N`` runs them together.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from .errors import ChargenError, describe_chars
from .model import CharLM, State, map_state
from .tokenizers import Tokenizer


@dataclass
class SamplingSettings:
    """How to pick each next token. The single source of defaults for CLI, REPL and API."""

    temp: float = 0.8
    top_k: int = 0          # 0: no top-k cut
    top_p: float = 1.0      # 1.0: no nucleus cut
    length: int = 500       # tokens to generate at most
    stop: str | None = None  # end a stream when this string appears (it is not printed)
    seed: int | None = None  # same seed, same text

    def validate(self) -> "SamplingSettings":
        if not (isinstance(self.temp, (int, float)) and math.isfinite(self.temp) and self.temp >= 0):
            raise ChargenError(f"--temp {self.temp}: must be a number >= 0 (0 means always the most likely)")
        if self.top_k < 0:
            raise ChargenError(f"--top-k {self.top_k}: must be >= 0 (0 turns it off)")
        if not (0 < self.top_p <= 1):
            raise ChargenError(f"--top-p {self.top_p}: must be in (0, 1] (1 turns it off)")
        if self.length < 0:
            raise ChargenError(f"--length {self.length}: must be >= 0")
        if self.stop == "":
            raise ChargenError("--stop: the stop string must not be empty")
        return self


def pick_tokens(logits: torch.Tensor, settings: SamplingSettings,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose one token per row of ``logits`` [batch, vocab] under temp / top-k / top-p."""
    if settings.temp == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / settings.temp
    if 0 < settings.top_k < logits.size(-1):
        kth_best = torch.topk(logits, settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if settings.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens before it already hold top_p of the mass; the best stays.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= settings.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class _StopFilter:
    """Streams text but holds back what might be the start of the stop string."""

    def __init__(self, stop: str | None):
        self.stop, self.pending, self.stopped = stop, "", False

    def push(self, text: str) -> str:
        if not self.stop:
            return text
        self.pending += text
        hit = self.pending.find(self.stop)
        if hit >= 0:
            self.stopped = True
            out, self.pending = self.pending[:hit], ""
            return out
        keep = 0  # longest suffix of pending that is a prefix of stop
        for size in range(min(len(self.stop) - 1, len(self.pending)), 0, -1):
            if self.stop.startswith(self.pending[-size:]):
                keep = size
                break
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class Sampler:
    """Generates text from a model, keeping the recurrent state between calls.

    ``feed(text)`` runs text through the model in one batched forward pass (a prompt, a user's
    chat turn); ``stream(settings)`` then yields the continuation as text pieces. Both continue
    from the state the previous call left, until ``reset()``.
    """

    def __init__(self, model: CharLM, tokenizer: Tokenizer, batch_size: int = 1):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = next(model.parameters()).device
        self.reset()

    def reset(self) -> None:
        """Forget everything fed or generated so far."""
        self.state: State = None
        self.next_logits: torch.Tensor | None = None  # [batch, vocab], for the token to come

    def check_text(self, text: str, what: str = "the text") -> None:
        """Raise a clear error if ``text`` has characters the model's vocabulary lacks."""
        unknown = self.tokenizer.unknown_chars(text)
        if unknown:
            raise ChargenError(f"{what} has characters the model never saw: {describe_chars(unknown)}")

    @torch.inference_mode()
    def feed(self, text: str) -> None:
        """Run ``text`` through the model (all streams alike) in one forward pass."""
        if not text:
            return
        self.check_text(text)
        ids = torch.as_tensor(self.tokenizer.encode(text), dtype=torch.long, device=self.device)
        self.feed_ids(ids)

    @torch.inference_mode()
    def feed_ids(self, ids: torch.Tensor) -> None:
        batch = ids.expand(self.batch_size, -1) if ids.dim() == 1 else ids
        logits, self.state = self.model(batch, self.state)
        self.next_logits = logits[:, -1].float()

    def _start_if_empty(self, generator: torch.Generator) -> None:
        if self.next_logits is not None:
            return
        # Nothing fed yet: begin at a line break when the vocabulary has one (a natural start
        # of text), else at a random symbol, as char-rnn does.
        newline = "\n" if not self.tokenizer.unknown_chars("\n") else None
        if newline and len(self.tokenizer.encode(newline)) == 1:
            self.feed(newline)
        else:
            start = torch.randint(self.tokenizer.vocab_size, (1,), generator=generator)
            self.feed_ids(start.to(self.device))

    @torch.inference_mode()
    def stream_batch(self, settings: SamplingSettings) -> Iterator[list[str]]:
        """Yield, per generated token, the new text of every stream ('' once a stream stopped)."""
        settings.validate()
        generator = make_generator(settings.seed)
        self._start_if_empty(generator)
        decoders = [self.tokenizer.decoder() for _ in range(self.batch_size)]
        filters = [_StopFilter(settings.stop) for _ in range(self.batch_size)]
        for _ in range(settings.length):
            if all(f.stopped for f in filters):
                return
            token = pick_tokens(self.next_logits.cpu(), settings, generator)
            logits, self.state = self.model(token.to(self.device)[:, None], self.state)
            self.next_logits = logits[:, -1].float()
            pieces = []
            for i, f in enumerate(filters):
                pieces.append("" if f.stopped else f.push(decoders[i].feed(int(token[i]))))
            yield pieces
        yield ["" if f.stopped else f.flush() for f in filters]

    def stream(self, settings: SamplingSettings) -> Iterator[str]:
        """Yield the continuation of a single stream as text pieces, as they are generated."""
        for pieces in self.stream_batch(settings):
            if pieces[0]:
                yield pieces[0]

    def generate(self, settings: SamplingSettings) -> list[str]:
        """The full continuation of every stream."""
        texts = [""] * self.batch_size
        for pieces in self.stream_batch(settings):
            texts = [t + p for t, p in zip(texts, pieces)]
        return texts


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU RNG for sampling: seeded for reproducible text, else from the OS."""
    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
    return generator


@torch.inference_mode()
def beam_search(model: CharLM, tokenizer: Tokenizer, prime: str, beam_width: int,
                length: int, stop: str | None = None) -> str:
    """The most likely continuation of ``length`` tokens found by beam search of ``beam_width``."""
    if beam_width < 1:
        raise ChargenError(f"--beam {beam_width}: must be >= 1")
    sampler = Sampler(model, tokenizer)
    if prime:
        sampler.feed(prime)
    else:
        sampler._start_if_empty(make_generator(0))
    log_probs = torch.log_softmax(sampler.next_logits, dim=-1)  # [1, vocab]
    state = sampler.state
    scores = torch.zeros(1)
    sequences = torch.zeros(1, 0, dtype=torch.long)
    for _ in range(length):
        vocab = log_probs.size(-1)
        candidates = (scores[:, None] + log_probs.cpu()).view(-1)
        scores, flat = torch.topk(candidates, min(beam_width, candidates.numel()))
        parents, tokens = flat // vocab, flat % vocab
        sequences = torch.cat([sequences[parents], tokens[:, None]], dim=1)
        state = map_state(state, lambda t: t[:, parents.to(t.device)])
        logits, state = model(tokens.to(sampler.device)[:, None], state)
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)
    text = tokenizer.decode(sequences[0].tolist())
    if stop and stop in text:
        text = text[:text.index(stop)]
    return text

