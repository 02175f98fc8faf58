"""What a training run tells the outside world: events for ``on_event``, and how a run can stop early.

The trainer knows nothing of dashboards or trackers: it emits these, and the dashboard, the tests
and any user callback consume them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..model import ModelConfig
from .config import TrainConfig


@dataclass
class RunStarted:
    run_dir: Path
    config: TrainConfig
    model_config: ModelConfig
    num_parameters: int
    device: str
    precision: str
    train_tokens: int
    val_tokens: int
    steps_per_epoch: int
    total_steps: int | None
    start_step: int
    # What --hidden / --seq-len auto chose for a time budget: hidden, seq_len, budget_seconds and
    # the probed tokens_per_second by width (None when nothing was probed).
    shape_plan: dict | None = None
    # What --precision auto timed and chose: precision, hidden, seq_len and tokens_per_second by
    # precision (None when nothing was timed).
    precision_plan: dict | None = None


@dataclass
class StepDone:
    step: int
    epoch: float
    elapsed: float
    loss: float
    lr: float
    grad_norm: float
    chars_per_sec: float
    progress: float  # fraction of the budget used, 0..1
    skipped_steps: int


@dataclass
class AutoChosen:
    """``--dropout``, ``--weight-decay``, ``--lr``, ``--ar`` and ``--tar auto`` settled from the budget's
    planned epochs. An option given as a number is None here: it was not chosen."""
    step: int
    planned_epochs: float
    dropout: float | None
    weight_decay: float | None
    lr: float | None
    ar: float | None = None
    tar: float | None = None

    def describe(self) -> str:
        """What was chosen, e.g. ``dropout 0, weight decay 0.35, lr 0.0057, ar 2, tar 1``."""
        chosen = {"dropout": self.dropout, "weight decay": self.weight_decay, "lr": self.lr, "ar": self.ar,
                  "tar": self.tar}
        return ", ".join(f"{name} {value:g}" for name, value in chosen.items() if value is not None)


@dataclass
class EvalDone:
    step: int
    val_loss: float  # nats per char
    best_val_loss: float
    is_best: bool
    sample: str


@dataclass
class CheckpointSaved:
    path: Path
    step: int


@dataclass
class RunFinished:
    run_dir: Path
    step: int
    elapsed: float
    best_val_loss: float | None
    reason: str  # "max_steps", "max_time", "epochs", "interrupted"


Event = RunStarted | StepDone | AutoChosen | EvalDone | CheckpointSaved | RunFinished


class TrainingAborted(KeyboardInterrupt):
    """A second Ctrl-C/SIGTERM: stopped at once without saving; the last checkpoint is intact."""

    def __init__(self, run_dir: Path, signal_number: int):
        self.run_dir, self.signal_number = run_dir, signal_number
        super().__init__(f"aborted; the last checkpoint in {run_dir} is intact")


class TrainingInterrupted(Exception):
    """Training stopped early on request (Ctrl-C, SIGTERM); a checkpoint was written."""

    def __init__(self, run_dir: Path, step: int, signal_number: int | None):
        self.run_dir, self.step, self.signal_number = run_dir, step, signal_number
        super().__init__(f"interrupted at step {step}; resume with: chargen train --resume {run_dir}")
