"""Token-level controls against loops: the repetition penalty and the no-repeat n-gram rule.

Character models fall into attractors at low temperature ("the the the ..."). Both controls look
at the tokens a stream has generated (the reply or sample, not the prompt), within a window of the
last ``repeat_window`` tokens (0: all of them). The pure functions say what happens to one row of
logits; ``RepeatHistory`` keeps, per stream, the counts and n-grams they need so that each step
costs the same however long the text grows.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Sequence

import torch

from .settings import SamplingSettings


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019, as in Hugging Face): the logit of every seen
    token is divided by ``penalty`` when positive and multiplied by it when negative, so a penalty
    above 1 always makes a seen token less likely. ``seen`` is a bool mask shaped like ``logits``."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def banned_tokens(tokens: Sequence[int], n: int, window: int = 0) -> set[int]:
    """The tokens that would complete an ``n``-gram already in the last ``window`` tokens (0: all).

    The reference the incremental index in ``RepeatHistory`` is tested against."""
    if n <= 0:
        return set()
    recent = list(tokens[-window:]) if window else list(tokens)
    prefix = tuple(tokens[len(tokens) - n + 1:]) if n > 1 else ()
    if len(prefix) < n - 1:
        return set()
    return {recent[i + n - 1] for i in range(len(recent) - n + 1) if tuple(recent[i:i + n - 1]) == prefix}


def ban(logits: torch.Tensor, banned: Sequence[set[int]]) -> torch.Tensor:
    """Set the banned tokens of each row to -inf; a row that would have nothing left keeps all."""
    rows = [(r, sorted(b)) for r, b in enumerate(banned) if b and len(b) < logits.size(-1)]
    if not rows:
        return logits
    logits = logits.clone()
    for r, ids in rows:
        logits[r, ids] = float("-inf")
    return logits


class NgramIndex:
    """The n-grams within the window of one stream, indexed by their first n-1 tokens."""

    def __init__(self, n: int, window: int):
        self.n, self.window = n, window
        self.tokens: list[int] = []
        self.next_counts: dict[tuple, Counter] = {}
        self.inside: deque[int] = deque()  # start positions of the indexed n-grams, oldest first

    def push(self, token: int) -> None:
        self.tokens.append(token)
        length, n = len(self.tokens), self.n
        first = length - self.window if self.window else 0  # first position inside the window
        while self.inside and self.inside[0] < first:
            start = self.inside.popleft()
            gram = tuple(self.tokens[start:start + n])
            counts = self.next_counts[gram[:-1]]
            counts[gram[-1]] -= 1
            if not counts[gram[-1]]:
                del counts[gram[-1]]
        start = length - n
        if start >= max(first, 0):
            gram = tuple(self.tokens[start:])
            self.next_counts.setdefault(gram[:-1], Counter())[gram[-1]] += 1
            self.inside.append(start)

    def banned(self) -> set[int]:
        if len(self.tokens) < self.n - 1:
            return set()
        prefix = tuple(self.tokens[len(self.tokens) - self.n + 1:]) if self.n > 1 else ()
        return set(self.next_counts.get(prefix, ()))


class RepeatHistory:
    """What each stream generated, as the controls need it: counts per token in the window for
    the penalty, an n-gram index for the no-repeat rule."""

    def __init__(self, settings: SamplingSettings, batch_size: int, vocab_size: int):
        self.penalty, self.window = settings.repetition_penalty, settings.repeat_window
        self.tokens: list[list[int]] = [[] for _ in range(batch_size)]
        self.counts = torch.zeros(batch_size, vocab_size, dtype=torch.int32) if self.penalty != 1.0 else None
        n = settings.no_repeat_ngram
        self.ngrams = [NgramIndex(n, self.window) for _ in range(batch_size)] if n else None

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` [batch, vocab] with the penalty and the bans applied."""
        if self.counts is not None:
            logits = penalize_repeats(logits, self.counts > 0, self.penalty)
        if self.ngrams is not None:
            logits = ban(logits, [index.banned() for index in self.ngrams])
        return logits

    def push(self, tokens: list[int]) -> None:
        """Record the token each stream just generated."""
        for row, token in enumerate(tokens):
            history = self.tokens[row]
            history.append(token)
            if self.counts is not None:
                self.counts[row, token] += 1
                if self.window and len(history) > self.window:
                    self.counts[row, history[-self.window - 1]] -= 1
            if self.ngrams is not None:
                self.ngrams[row].push(token)
