"""How to pick each next token: the one set of sampling settings for the CLI, the REPL and the API."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ChargenError
from ..limits import MAX_LENGTH, check_seed


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
        check_length(self.length)
        check_seed(self.seed)
        if self.stop == "":
            raise ChargenError("--stop: the stop string must not be empty")
        return self


def check_length(length: int, option: str = "--length") -> None:
    if not 0 <= length <= MAX_LENGTH:
        raise ChargenError(f"{option} {length}: must be between 0 and {MAX_LENGTH:,}")
