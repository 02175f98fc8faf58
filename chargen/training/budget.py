"""A run's budget: when training stops, and how far along it is (which drives the lr schedule)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .auto import DEFAULT_EPOCHS


@dataclass(frozen=True)
class Budget:
    """The limits a run was given; it stops at the first one reached.

    With none given, it reads its text DEFAULT_EPOCHS times.
    """

    steps_per_epoch: int
    max_steps: int | None = None
    epochs: float | None = None
    max_time: float | None = None  # seconds

    def total_steps(self) -> int | None:
        """The step limit implied by the step and epoch limits (None under a time budget alone)."""
        limits = [self.max_steps] if self.max_steps else []
        if self.epochs:
            limits.append(math.ceil(self.epochs * self.steps_per_epoch))
        if not limits and not self.max_time:
            limits.append(DEFAULT_EPOCHS * self.steps_per_epoch)
        return min(limits) if limits else None

    def progress(self, step: int, elapsed: float) -> float:
        """Fraction of the budget used, 0 to 1: the nearest of the limits."""
        fractions = []
        total = self.total_steps()
        if total:
            fractions.append(step / total)
        if self.max_time:
            fractions.append(elapsed / self.max_time)
        return min(max(fractions), 1.0)

    def finished_reason(self, step: int, elapsed: float, final_eval_seconds: float = 0.0) -> str | None:
        """Why a run at ``step`` after ``elapsed`` seconds stops ("max_steps", "max_time",
        "epochs"), or None to go on. A time budget keeps ``final_eval_seconds`` for the final
        evaluation, so that the whole run fits in it."""
        if self.max_steps and step >= self.max_steps:
            return "max_steps"
        if self.max_time and elapsed + final_eval_seconds >= self.max_time:
            return "max_time"
        total = self.total_steps()
        if total and step >= total:
            return "epochs"
        return None
