"""Per-stream bookkeeping while sampling: decoding, stop strings, the time limit, and how each
sample ended (what ``--jsonl`` reports)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..text.tokenizers import Tokenizer
from .settings import SamplingSettings
from .stops import StopFilter


@dataclass
class StreamOutcome:
    """How one stream's text came about."""

    tokens: int = 0        # tokens generated (a stop string's own tokens included)
    chars: int = 0         # characters those tokens decoded to
    nats: float = 0.0      # -log p of each generated token under the model (before temperature etc.)
    stop_reason: str | None = None  # "length", "stop" or "time"; None while running
    stop_string: str | None = None  # which stop string ended it

    @property
    def nats_per_char(self) -> float | None:
        """Mean nats per character of the generated text (None when scores were not kept)."""
        return self.nats / self.chars if self.chars else None


class StreamTracker:
    """Turns each step's tokens into the text each stream shows, and knows when streams end."""

    def __init__(self, tokenizer: Tokenizer, batch_size: int, settings: SamplingSettings,
                 clock: Callable[[], float] = time.monotonic):
        self.decoders = [tokenizer.decoder() for _ in range(batch_size)]
        self.filters = [StopFilter(settings.stops) for _ in range(batch_size)]
        self.outcomes = [StreamOutcome() for _ in range(batch_size)]
        self.min_length, self.max_time, self.clock = settings.min_length, settings.max_time, clock
        self.deadline = None if settings.max_time is None else clock() + settings.max_time
        self.live, self.steps = batch_size, 0  # streams still running; tokens each has generated

    def out_of_time(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def score(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        """Add each running stream's -log p(token) under ``logits``, the model's own distribution."""
        nats = -torch.log_softmax(logits.float(), dim=-1).gather(1, tokens[:, None].long())[:, 0]
        for outcome, value in zip(self.outcomes, nats.tolist()):
            if outcome.stop_reason is None:
                outcome.nats += value

    def push(self, tokens: list[int]) -> list[str]:
        """The new visible text of every stream after one generated token each ('' once stopped)."""
        # Called once per token: kept lean, the plain sampling path's speed depends on it.
        self.steps += 1
        armed = self.steps >= self.min_length
        pieces = []
        for i, token in enumerate(tokens):
            outcome = self.outcomes[i]
            if outcome.stop_reason is not None:
                pieces.append("")
                continue
            text = self.decoders[i].feed(token)
            outcome.tokens += 1
            outcome.chars += len(text)
            stop = self.filters[i]
            pieces.append(stop.push(text, armed) if stop.stops else text)
            if stop.stopped:
                outcome.stop_reason, outcome.stop_string = "stop", stop.stopped_by
                self.live -= 1
        return pieces

    def finish(self, reason: str) -> list[str]:
        """End every stream still running (``reason``: length or time); their held-back text."""
        pieces = []
        for stop, outcome in zip(self.filters, self.outcomes):
            if outcome.stop_reason is None:
                outcome.stop_reason = reason
                self.live -= 1
                pieces.append(stop.flush())
            else:
                pieces.append("")
        return pieces
