"""How to pick each next token: the one set of sampling settings for the CLI, the REPL and the API."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields

from ..errors import ChargenError
from ..limits import MAX_LENGTH, MAX_NGRAM, MAX_REPETITION_PENALTY, MAX_SECONDS, check_seed

# The Hugging Face ``generate()`` names of our settings, accepted as keyword arguments by the API.
# Defined once: the API, the docs and the tests read this mapping.
HF_NAMES = {"temperature": "temp", "max_new_tokens": "length", "stop_strings": "stop",
            "no_repeat_ngram_size": "no_repeat_ngram", "min_new_tokens": "min_length"}


@dataclass
class SamplingSettings:
    """How to pick each next token. The single source of defaults for CLI, REPL and API."""

    temp: float = 0.8
    top_k: int = 0          # 0: no top-k cut
    top_p: float = 1.0      # 1.0: no nucleus cut
    length: int = 500       # tokens to generate at most
    stop: str | tuple[str, ...] | None = None  # end a stream at the first of these (not printed)
    seed: int | None = None  # same seed, same text
    repetition_penalty: float = 1.0  # CTRL's penalty on tokens seen in the window (1.0: off)
    no_repeat_ngram: int = 0  # never emit an n-gram already in the window (0: off)
    repeat_window: int = 0  # tokens the two above look back over (0: the whole reply or sample)
    min_length: int = 0     # stop strings are ignored before this many tokens
    max_time: float | None = None  # seconds a sample may take (None: no limit)

    @classmethod
    def from_kwargs(cls, base: "SamplingSettings | None" = None, **kwargs) -> "SamplingSettings":
        """Settings from keyword arguments, ours or the Hugging Face names (``HF_NAMES``), on top
        of ``base``; an unknown name is one error naming the closest valid one."""
        known = {f.name for f in fields(cls)}
        values: dict = {}
        for key, value in kwargs.items():
            name = HF_NAMES.get(key, key)
            if name not in known:
                close = difflib.get_close_matches(key, sorted(known | set(HF_NAMES)), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ChargenError(f"unknown sampling setting {key!r}{hint}")
            if name in values:
                raise ChargenError(f"sampling setting {name!r} given twice (as {key!r} too)")
            values[name] = value
        start = base if base is not None else cls()
        return cls(**{**{f.name: getattr(start, f.name) for f in fields(cls)}, **values})

    @property
    def stops(self) -> tuple[str, ...]:
        """The stop strings as a tuple (``stop`` may be one string, several, or None)."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def controls_on(self) -> bool:
        """Whether any token-level control runs (the plain path skips them: it stays as fast)."""
        return self.repetition_penalty != 1.0 or self.no_repeat_ngram > 0

    def validate(self) -> "SamplingSettings":
        if not (isinstance(self.temp, (int, float)) and math.isfinite(self.temp) and self.temp >= 0):
            raise ChargenError(f"--temp {self.temp}: must be a number >= 0 (0 means always the most likely)")
        if self.top_k < 0:
            raise ChargenError(f"--top-k {self.top_k}: must be >= 0 (0 turns it off)")
        if not (0 < self.top_p <= 1):
            raise ChargenError(f"--top-p {self.top_p}: must be in (0, 1] (1 turns it off)")
        check_length(self.length)
        check_seed(self.seed)
        if not all(isinstance(s, str) for s in self.stops):
            raise ChargenError(f"--stop {self.stop!r}: must be text (or several)")
        if "" in self.stops:
            raise ChargenError("--stop: a stop string must not be empty")
        self._validate_controls()
        return self

    def _validate_controls(self) -> None:
        penalty = self.repetition_penalty
        if not (isinstance(penalty, (int, float)) and math.isfinite(penalty)
                and 0 < penalty <= MAX_REPETITION_PENALTY):
            raise ChargenError(f"--repetition-penalty {penalty}: must be a number in (0, "
                               f"{MAX_REPETITION_PENALTY:g}] (1 turns it off; 1.1 to 1.3 is usual)")
        check_whole(self.no_repeat_ngram, "--no-repeat-ngram", 0, MAX_NGRAM, " (0 turns it off)")
        check_whole(self.repeat_window, "--repeat-window", 0, MAX_LENGTH, " (0 means the whole reply or sample)")
        check_whole(self.min_length, "--min-length", 0, MAX_LENGTH)
        limit = self.max_time
        if limit is not None and not (isinstance(limit, (int, float)) and math.isfinite(limit)
                                      and 0 < limit <= MAX_SECONDS):
            raise ChargenError(f"--max-time {limit}: must be a duration > 0 such as 5s or 2m")


def check_whole(value, option: str, low: int, high: int, note: str = "") -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise ChargenError(f"{option} {value}: must be a whole number between {low} and {high:,}{note}")


def check_length(length: int, option: str = "--length") -> None:
    if not 0 <= length <= MAX_LENGTH:
        raise ChargenError(f"{option} {length}: must be between 0 and {MAX_LENGTH:,}")
