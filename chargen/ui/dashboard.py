"""A live view of training events: a rich dashboard in a terminal, plain log lines elsewhere."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..training.events import AutoChosen, CheckpointSaved, EvalDone, Event, RunFinished, RunStarted, StepDone
from .charts import MAX_POINTS, LineChart, thin
from ..evaluation import nats_to_bits

PLAIN_LINE_EVERY_S = 5.0
# The live view is redrawn from the training thread, at most this often between other events,
# rather than by rich's refresh thread: that thread cost a short CPU run several percent of its
# steps (bench/HISTORY.md).
REDRAW_EVERY_S = 0.5
CHART_ROWS = 8  # the loss chart's height; its width follows the terminal's


def _bits(nats: float | None) -> str:
    return "-" if nats is None else f"{nats:.4f} nats  {nats_to_bits(nats):.3f} bpc"


def _describe_run(e: RunStarted) -> str:
    m = e.model_config
    budget = []
    if e.total_steps:
        budget.append(f"{e.total_steps:,} steps")
    if e.config.max_time:
        budget.append(f"{e.config.max_time:g}s")
    return (f"{m.shape()}, {e.num_parameters:,} params, vocab {m.vocab_size} "
            f"({e.config.tokenizer}) | {e.device} {e.precision} | train {e.train_tokens:,} / val "
            f"{e.val_tokens:,} tokens | batch {e.config.batch_size}x{e.config.seq_len} | "
            f"budget {' or '.join(budget)} | {e.run_dir}")


def describe_shape(plan: dict) -> str:
    speeds = ", ".join(f"{width}: {speed:,}" for width, speed in plan["tokens_per_second"].items())
    return (f"hidden {plan['hidden']}, seq len {plan['seq_len']} for {plan['budget_seconds']:.0f}s "
            f"(probed tokens/s by width: {speeds})")


def describe_precision(plan: dict) -> str:
    speeds = ", ".join(f"{precision} {speed:,}" for precision, speed in plan["tokens_per_second"].items())
    return f"{plan['precision']} (timed {plan['hidden']}-wide, {plan['seq_len']}-token windows: {speeds} tokens/s)"


class Dashboard:
    """Consumes training events. Use as a context manager and pass it as ``on_event``."""

    def __init__(self, console: Console | None = None, live: bool | None = None):
        self.console = console or Console()
        self.live_mode = self.console.is_terminal if live is None else live
        self.start: RunStarted | None = None
        self.last_step: StepDone | None = None
        self.last_eval: EvalDone | None = None
        self.auto: AutoChosen | None = None
        self.sample = ""
        # The loss curves the live view draws: (step, nats/char), thinned as they grow.
        self.train_curve: list[tuple[float, float]] = []
        self.val_curve: list[tuple[float, float]] = []
        self._last_plain = self._last_redraw = 0.0
        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), TaskProgressColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console)
        self.task = self.progress.add_task("train", total=1000)
        self.live = Live(self._render(), console=self.console, auto_refresh=False,
                         transient=False) if self.live_mode else None

    def __enter__(self) -> "Dashboard":
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.update(self._render(), refresh=True)
            self.live.stop()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.start = event
            self._plain(f"run: {_describe_run(event)}")
            if event.shape_plan:
                self._plain(f"auto: {describe_shape(event.shape_plan)}")
            if event.precision_plan:
                self._plain(f"auto precision: {describe_precision(event.precision_plan)}")
        elif isinstance(event, StepDone):
            self.last_step = event
            self.train_curve.append((event.step, event.loss))
            if len(self.train_curve) > 2 * MAX_POINTS:
                self.train_curve = thin(self.train_curve)
            self.progress.update(self.task, completed=event.progress * 1000)
            now = time.monotonic()
            if now - self._last_plain >= PLAIN_LINE_EVERY_S:
                self._last_plain = now
                self._plain(self._step_line(event))
        elif isinstance(event, AutoChosen):
            self.auto = event
            self._plain(f"{event.describe()} (auto: the budget allows ~{event.planned_epochs:.1f} epochs)")
        elif isinstance(event, EvalDone):
            self.last_eval, self.sample = event, event.sample
            self.val_curve.append((event.step, event.val_loss))
            mark = " (new best)" if event.is_best else ""
            self._plain(f"eval step {event.step}: val {_bits(event.val_loss)}{mark}")
            if event.sample:
                self._plain("sample: " + event.sample.replace("\n", "\n        "))
        elif isinstance(event, CheckpointSaved):
            self._plain(f"saved {event.path} (step {event.step})")
        elif isinstance(event, RunFinished):
            self.progress.update(self.task, completed=1000)
            self._plain(f"done: {event.step} steps in {event.elapsed:.0f}s, best val "
                        f"{_bits(event.best_val_loss)}; checkpoints in {event.run_dir}")
        if self.live:
            now = time.monotonic()
            if not isinstance(event, StepDone) or now - self._last_redraw >= REDRAW_EVERY_S:
                self._last_redraw = now
                self.live.update(self._render(), refresh=True)

    def _plain(self, line: str) -> None:
        if not self.live_mode:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    @staticmethod
    def _step_line(e: StepDone) -> str:
        return (f"step {e.step} (epoch {e.epoch:.2f}) loss {_bits(e.loss)} | {e.chars_per_sec:,.0f} chars/s"
                f" | lr {e.lr:.2e} | grad norm {e.grad_norm:.2f}"
                + (f" | skipped {e.skipped_steps}" if e.skipped_steps else ""))

    def _render(self):
        stats = Table.grid(padding=(0, 2))
        stats.add_column(style="bold cyan", justify="right")
        stats.add_column()
        s, v = self.last_step, self.last_eval
        stats.add_row("step", f"{s.step:,}  (epoch {s.epoch:.2f})" if s else "-")
        stats.add_row("train loss", _bits(s.loss) if s else "-")
        stats.add_row("val loss", _bits(v.val_loss) if v else "-")
        stats.add_row("best val", _bits(v.best_val_loss) if v else "-")
        stats.add_row("speed", f"{s.chars_per_sec:,.0f} chars/s" if s else "-")
        stats.add_row("lr", f"{s.lr:.2e}" if s else "-")
        stats.add_row("grad norm", f"{s.grad_norm:.3f} (before clipping)" if s else "-")
        if self.start and self.start.shape_plan:
            stats.add_row("auto shape", describe_shape(self.start.shape_plan))
        if self.start and self.start.precision_plan:
            stats.add_row("auto precision", describe_precision(self.start.precision_plan))
        if self.auto:
            stats.add_row("auto", f"{self.auto.describe()} (~{self.auto.planned_epochs:.1f} epochs planned)")
        if s and s.skipped_steps:
            stats.add_row("skipped", f"{s.skipped_steps} non-finite steps", style="yellow")
        title = f"chargen · {self.start.run_dir}" if self.start else "chargen"
        parts = [Text(_describe_run(self.start), style="dim")] if self.start else []
        parts += [self.progress, stats]
        if self.train_curve:
            chart = LineChart([self.train_curve, self.val_curve], ["cyan", "bold magenta"], ["train", "val"],
                              height=CHART_ROWS)
            parts.append(Panel(chart, title="loss (nats/char)", title_align="left", border_style="dim"))
        if self.sample:
            parts.append(Panel(Text(self.sample), title=f"sample at step {v.step}", title_align="left",
                               border_style="green"))
        return Panel(Group(*parts), title=title, title_align="left", border_style="blue")
