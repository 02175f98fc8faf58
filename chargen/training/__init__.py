"""Training: the config and its auto rules, the loop, resuming, and running on several processes.

    chargen.train("corpus.txt", max_time=120, hidden=256, out="checkpoints/mine")
"""

from __future__ import annotations

import os
from typing import Callable

from .config import TrainConfig
from .events import (AutoChosen, CheckpointSaved, EvalDone, Event, RunFinished, RunStarted, StepDone,
                     TrainingAborted, TrainingInterrupted)
from .rundir import read_metrics
from .trainer import Trainer


def train(corpus: str | os.PathLike | list[str] | None = None, *, on_event: Callable[[Event], None] | None = None,
          resume: str | None = None, **options) -> RunFinished:
    """Train a model from Python (a notebook, a script); options are ``TrainConfig`` fields.

        chargen.train("corpus.txt", max_time=120, hidden=256, out="checkpoints/mine")
    """
    paths = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus or [])
    return Trainer(TrainConfig(**options), [str(p) for p in paths], on_event=on_event, resume=resume).run()


__all__ = ["AutoChosen", "CheckpointSaved", "EvalDone", "Event", "RunFinished", "RunStarted", "StepDone",
           "TrainConfig", "Trainer", "TrainingAborted", "TrainingInterrupted", "read_metrics", "train"]
