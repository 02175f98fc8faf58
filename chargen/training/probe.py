"""Timing a few training steps to settle ``--hidden``/``--seq-len auto`` and ``--precision auto``.

Only a --max-time budget is planned from measured speed: rank 0 times a few steps of each width
it considers (a few seconds on a small CPU), the other ranks take its choice. Where the precision
is to be timed too, both precisions are timed at the first width and the rest probed in the
faster one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import PRECISIONS_TO_TIME, autocast_for, faster_precision, synchronize
from ..errors import ChargenError
from ..model import CharLM
from .auto import PROBE_STEPS, candidate_widths, plan_shape
from .config import TrainConfig


def measure_speed(config: TrainConfig, vocab_size: int, hidden: int, seq_len: int, rows: int,
                  tokens: np.ndarray, device: torch.device, autocast) -> float:
    """Training tokens per second of a fresh ``hidden``-wide model: forward and backward of
    ``rows`` windows of ``seq_len`` real tokens, no dropout, fastest of PROBE_STEPS - 1 timed steps."""
    model = CharLM(replace(config, hidden=hidden).model_config(vocab_size, 0.0)).to(device).train()
    window = torch.from_numpy(np.asarray(tokens[:rows * (seq_len + 1)], dtype=np.int64))
    window = window.view(rows, seq_len + 1).to(device)
    fastest = math.inf
    for step in range(PROBE_STEPS):
        started = time.perf_counter()
        with autocast():
            logits, _ = model(window[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), window[:, 1:].flatten())
        loss.backward()
        synchronize(device)
        if step:
            fastest = min(fastest, time.perf_counter() - started)
    return rows * seq_len / max(fastest, 1e-9)


def model_parameters(config: TrainConfig, vocab_size: int, width: int) -> int:
    """Parameters of a ``width``-wide model, counted without allocating it."""
    with torch.device("meta"):
        return CharLM(replace(config, hidden=width).model_config(vocab_size, 0.0)).num_parameters()


@dataclass
class Probe:
    """Times training steps for a run: all its processes together (each times its own rows)."""

    config: TrainConfig
    vocab_size: int
    train_tokens: np.ndarray
    device: torch.device
    world_size: int
    precision: str  # what the run computes in; changed by time_precisions
    precision_to_time: bool  # --precision auto on a CPU with native bf16: time both, keep the faster
    precision_plan: dict | None = None  # what time_precisions measured and chose
    speeds: dict = field(default_factory=dict)  # tokens/s by width, as probed

    def speed(self, width: int, window: int, precision: str) -> float:
        try:
            return self.world_size * measure_speed(
                self.config, self.vocab_size, width, window, self.config.batch_size // self.world_size,
                self.train_tokens, self.device, autocast_for(self.device, precision))
        except torch.cuda.OutOfMemoryError:
            raise ChargenError(f"out of GPU memory timing a {width}-wide model for --hidden auto; "
                               "lower --batch-size, or give --hidden and --seq-len") from None

    def time_precisions(self, width: int, window: int) -> float:
        """Time both precisions at this shape, keep the faster (``faster_precision``), return its speed."""
        timed = {precision: self.speed(width, window, precision) for precision in PRECISIONS_TO_TIME}
        self.precision, self.precision_to_time = faster_precision(timed), False
        self.precision_plan = {"precision": self.precision, "hidden": width, "seq_len": window,
                               "tokens_per_second": {p: round(v) for p, v in timed.items()}}
        return timed[self.precision]

    def tokens_per_second(self, width: int, window: int) -> float:
        if self.precision_to_time:
            self.speeds[width] = self.time_precisions(width, window)
        else:
            self.speeds[width] = self.speed(width, window, self.precision)
        return self.speeds[width]

    def plan_shape(self, hidden: int | str, seq_len: int | str, seconds: float) -> tuple[int, int, dict]:
        """``plan_shape`` at the probed speeds: the width, the window and what was measured."""
        width, window = plan_shape(hidden, seq_len, seconds, len(self.train_tokens),
                                   lambda w: model_parameters(self.config, self.vocab_size, w),
                                   self.tokens_per_second, candidate_widths(self.device.type))
        plan = {"hidden": width, "seq_len": window, "budget_seconds": round(seconds, 1),
                "tokens_per_second": {str(w): round(v) for w, v in self.speeds.items()}}
        return width, window, plan
