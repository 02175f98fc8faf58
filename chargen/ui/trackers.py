"""Experiment trackers for ``chargen train --log tensorboard|csv``: more consumers of the trainer's events.

The trainer knows nothing of them; like the dashboard, they read ``RunStarted``, ``StepDone``,
``AutoChosen``, ``EvalDone`` and ``RunFinished``. Each logs a row every ``--log-every`` steps (the
training loss averaged over the steps since the last row, as ``metrics.jsonl`` has it) and at
every evaluation, into the run directory:

- ``csv``: ``metrics.csv``, one row per logged step;
- ``tensorboard``: event files for ``tensorboard --logdir RUN`` (``torch.utils.tensorboard``; the
  ``tensorboard`` package is the optional extra of that name).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import ChargenError
from ..fileio import atomic_write_bytes
from ..training.events import AutoChosen, EvalDone, Event, RunFinished, RunStarted, StepDone
from ..evaluation import nats_to_bits

TRACKERS = ("tensorboard", "csv")
CSV_NAME = "metrics.csv"
CSV_COLUMNS = ("step", "time", "epoch", "train_loss", "train_bpc", "lr", "grad_norm", "chars_per_sec",
               "val_loss", "val_bpc")
MISSING_TENSORBOARD = "--log tensorboard: needs the tensorboard package: pip install 'chargen[tensorboard]'"


class Rows:
    """Turns events into logged rows: one per ``log_every`` steps and per evaluation, each row
    finished when the next step starts (an evaluation of the same step joins its row)."""

    def __init__(self, write):
        self.write = write  # called with each finished row (a dict of CSV_COLUMNS)
        self.log_every = 1
        self.pending: dict | None = None
        self.window_loss = 0.0
        self.window_steps = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.log_every = max(1, event.config.log_every)
        elif isinstance(event, StepDone):
            self.flush()
            self.window_loss += event.loss
            self.window_steps += 1
            if event.step % self.log_every == 0:
                loss = self.window_loss / self.window_steps
                self.pending = {"step": event.step, "time": round(event.elapsed, 3), "epoch": round(event.epoch, 4),
                                "train_loss": loss, "train_bpc": nats_to_bits(loss), "lr": event.lr,
                                "grad_norm": event.grad_norm, "chars_per_sec": round(event.chars_per_sec, 1)}
                self.window_loss, self.window_steps = 0.0, 0
        elif isinstance(event, EvalDone):
            if self.pending is None or self.pending["step"] != event.step:
                self.flush()
                self.pending = {"step": event.step}
            self.pending.update(val_loss=event.val_loss, val_bpc=nats_to_bits(event.val_loss))
        elif isinstance(event, RunFinished):
            self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            row, self.pending = self.pending, None
            self.write(row)


class CsvTracker:
    """``metrics.csv`` in the run directory; a resumed run drops the rows past its start first."""

    def __init__(self):
        self.rows = Rows(self.write_row)
        self.file = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.open(event.run_dir / CSV_NAME, event.start_step)
        self.rows(event)

    def open(self, path: Path, start_step: int) -> None:
        if start_step and path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                kept = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in CSV_COLUMNS} for r in kept)
            atomic_write_bytes(path, buffer.getvalue().encode(), "metrics.csv")
        fresh = not path.exists() or path.stat().st_size == 0
        try:
            self.file = open(path, "a", newline="", encoding="utf-8")
        except OSError as exc:
            raise ChargenError(f"--log csv: cannot write {path}: {exc.strerror or exc}") from None
        self.writer = csv.DictWriter(self.file, CSV_COLUMNS, lineterminator="\n")
        if fresh:
            self.writer.writeheader()

    def write_row(self, row: dict) -> None:
        if self.file is not None:
            self.writer.writerow(row)
            self.file.flush()  # a crash loses at most the row being written

    def close(self) -> None:
        self.rows.flush()
        if self.file is not None:
            self.file.close()
            self.file = None


class TensorBoardTracker:
    """Scalars (losses, bits/char, lr, grad norm before clipping, throughput), the auto choices and
    the run's settings as text, and the text previews, for ``tensorboard --logdir RUN``."""

    def __init__(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ChargenError(MISSING_TENSORBOARD) from None
        self.writer_class = SummaryWriter
        self.writer = None
        self.rows = Rows(self.write_row)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.writer = self.writer_class(log_dir=str(event.run_dir), purge_step=event.start_step or None)
            self.writer.add_text("run/config", "\n".join(f"    {k} = {v!r}" for k, v in vars(event.config).items()),
                                 event.start_step)
            self.writer.add_text("run/model", f"    {event.model_config.shape()}, {event.num_parameters:,} parameters, "
                                 f"{event.device} {event.precision}", event.start_step)
            for name, plan in (("auto/shape", event.shape_plan), ("auto/precision", event.precision_plan)):
                if plan:
                    self.writer.add_text(name, f"    {plan}", event.start_step)
        elif isinstance(event, AutoChosen) and self.writer:
            self.writer.add_text("auto/chosen", f"{event.describe()} (~{event.planned_epochs:.1f} epochs planned)",
                                 event.step)
            for name in ("dropout", "weight_decay", "lr", "ar", "tar"):
                if getattr(event, name) is not None:
                    self.writer.add_scalar(f"auto/{name}", getattr(event, name), event.step)
        elif isinstance(event, EvalDone) and self.writer and event.sample:
            self.writer.add_text("sample", "    " + event.sample.replace("\n", "\n    "), event.step)
        self.rows(event)
        if isinstance(event, RunFinished) and self.writer:
            self.writer.flush()

    def write_row(self, row: dict) -> None:
        if self.writer is None:
            return
        names = {"train_loss": "loss/train", "val_loss": "loss/val", "train_bpc": "bpc/train", "val_bpc": "bpc/val",
                 "lr": "lr", "grad_norm": "grad_norm", "chars_per_sec": "throughput/chars_per_sec"}
        for key, tag in names.items():
            if key in row:
                self.writer.add_scalar(tag, row[key], row["step"])

    def close(self) -> None:
        self.rows.flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Trackers:
    """The trackers ``--log`` asked for, as one event consumer and context manager. Each tracker's
    package is checked when this is built, before any training starts."""

    def __init__(self, kinds: list[str] | None):
        self.trackers = [{"csv": CsvTracker, "tensorboard": TensorBoardTracker}[kind]()
                         for kind in dict.fromkeys(kinds or [])]

    def __call__(self, event: Event) -> None:
        for tracker in self.trackers:
            tracker(event)

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, *exc) -> None:
        for tracker in self.trackers:
            tracker.close()
