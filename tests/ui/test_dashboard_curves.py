"""The dashboard's live loss curves: drawn in the live view at the terminal's width, absent in --plain."""

import io

from rich.console import Console

from chargen.training.events import EvalDone, StepDone
from chargen.ui.dashboard import Dashboard


def events():
    for n in range(1, 301):
        yield StepDone(step=n, epoch=n / 100, elapsed=n / 10, loss=3.0 / (1 + n / 50), lr=1e-3, grad_norm=0.4,
                       chars_per_sec=1000.0, progress=n / 300, skipped_steps=0)
        if n % 100 == 0:
            yield EvalDone(n, 2.0 / (1 + n / 100), 1.0, True, "")


def braille(text: str) -> int:
    return sum(0x2800 < ord(ch) <= 0x28FF for ch in text)


def test_live_view_draws_the_curves_at_the_terminals_width():
    dashboard = Dashboard(Console(file=io.StringIO(), force_terminal=True, width=100), live=True)
    for event in events():
        dashboard(event)
    assert dashboard.train_curve[-1] == (300, 3.0 / 7) and len(dashboard.val_curve) == 3
    for width in (60, 140):  # the terminal resized: the chart follows
        console = Console(width=width, record=True, color_system=None)
        console.print(dashboard._render())
        text = console.export_text()
        assert "loss (nats/char)" in text and braille(text) > 50
        assert max(len(line) for line in text.splitlines()) <= width
        chart_lines = [line for line in text.splitlines() if braille(line)]
        assert max(len(line.rstrip()) for line in chart_lines) > width - 10


def test_plain_mode_has_no_chart():
    out = io.StringIO()
    dashboard = Dashboard(Console(file=out, width=100), live=False)
    with dashboard:
        for event in events():
            dashboard(event)
    assert "eval step 100" in out.getvalue() and braille(out.getvalue()) == 0


def test_a_long_run_keeps_a_bounded_curve():
    dashboard = Dashboard(Console(file=io.StringIO(), width=80), live=False)
    for n in range(1, 10_001):
        dashboard(StepDone(n, 0.0, 0.0, 1.0, 1e-3, 0.1, 1.0, n / 10_000, 0))
    assert len(dashboard.train_curve) <= 4000 and dashboard.train_curve[-1][0] > 9_990
