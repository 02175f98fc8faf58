"""Line charts drawn with braille characters: loss curves in the dashboard and in ``chargen plot``.

Each terminal cell is a 2x4 grid of braille dots, so a chart ``width`` cells wide and ``height``
rows high has ``2·width`` by ``4·height`` points. :func:`braille_rows` is a pure function from
curves to rows of text (tested directly); :class:`LineChart` is the rich renderable around it,
sized to the width it is given at each redraw, so it follows the terminal when it is resized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

# Braille dot bits by (column, row) within a cell (Unicode's numbering: 1-2-3-7 left, 4-5-6-8 right).
DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
BRAILLE_BLANK = 0x2800
MAX_POINTS = 600  # a curve longer than twice this is thinned (pairs averaged): plenty for a terminal's width


Curve = list[tuple[float, float]]


def thin(points: Curve, limit: int = MAX_POINTS) -> Curve:
    """``points`` halved (each pair averaged) until at most ``limit`` remain: a long run keeps its shape."""
    while len(points) > limit:
        odd = points[-1:] if len(points) % 2 else []
        points = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(points[::2], points[1::2])] + odd
    return points


def bounds(curves: list[Curve], log_y: bool = False) -> tuple[float, float, float, float] | None:
    """(x min, x max, y min, y max) over every finite point (positive ones only with ``log_y``)."""
    xs, ys = [], []
    for curve in curves:
        for x, y in curve:
            if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y):
                xs.append(x)
                ys.append(math.log10(y) if log_y else y)
    if not xs:
        return None
    return min(xs), max(xs), min(ys), max(ys)


def braille_rows(curves: list[Curve], width: int, height: int, log_y: bool = False,
                 box: tuple[float, float, float, float] | None = None) -> tuple[list[str], list[list[int]]]:
    """Draw ``curves`` (lists of (x, y), joined by lines) into ``height`` rows of ``width`` braille
    cells. Returns the rows and, for each cell, the index of the curve drawn there last (-1: none),
    which the caller colours by. ``box`` is the (x0, x1, y0, y1) to fit, by default the data's."""
    bits = [[0] * width for _ in range(height)]
    owner = [[-1] * width for _ in range(height)]
    box = box or bounds(curves, log_y)
    if box is None or width < 1 or height < 1:
        return ["".join(chr(BRAILLE_BLANK) for _ in range(width)) for _ in range(height)], owner
    x0, x1, y0, y1 = box
    dots_x, dots_y = 2 * width - 1, 4 * height - 1

    def pixel(x: float, y: float) -> tuple[float, float]:
        y = math.log10(y) if log_y else y
        px = (x - x0) / (x1 - x0) * dots_x if x1 > x0 else dots_x / 2
        py = (y1 - y) / (y1 - y0) * dots_y if y1 > y0 else dots_y / 2
        return px, py

    def dot(px: float, py: float, index: int) -> None:
        ix, iy = round(px), round(py)
        if 0 <= ix <= dots_x and 0 <= iy <= dots_y:
            bits[iy // 4][ix // 2] |= DOTS[ix % 2][iy % 4]
            owner[iy // 4][ix // 2] = index

    for index, curve in enumerate(curves):
        points = envelope([pixel(x, y) for x, y in curve
                           if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)])
        for (ax, ay), (bx, by) in zip(points, points[1:]):
            steps = max(1, int(max(abs(bx - ax), abs(by - ay)) * 2))
            for s in range(steps + 1):
                dot(ax + (bx - ax) * s / steps, ay + (by - ay) * s / steps, index)
        if len(points) == 1:
            dot(*points[0], index)
    return ["".join(chr(BRAILLE_BLANK + b) for b in row) for row in bits], owner


def envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points in pixel space reduced to the lowest and highest of each dot column, in order: the
    same picture, with at most two points per column to join (a long noisy curve would otherwise
    cost a redraw many thousands of line segments)."""
    out: list[tuple[float, float]] = []
    column, low, high = None, 0.0, 0.0
    for px, py in points:
        if round(px) != column:
            if column is not None:
                out += [(column, low), (column, high)] if low != high else [(column, low)]
            column, low, high = round(px), py, py
        else:
            low, high = min(low, py), max(high, py)
    if column is not None:
        out += [(column, low), (column, high)] if low != high else [(column, low)]
    return out


def axis_label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e5 else f"{value:.2e}"


@dataclass
class LineChart:
    """A rich renderable: curves with a y axis on the left and the x range below, as wide as the
    space rich offers it (``height`` rows of plot)."""

    curves: list[Curve]
    styles: list[str]
    names: list[str]
    height: int = 8
    log_y: bool = False
    x_label: str = "step"
    marks: list[tuple[float, float]] = field(default_factory=list)  # drawn as their own curve (a dot)

    def lines(self, width: int) -> list[Text]:
        curves = self.curves + [[m] for m in self.marks]
        box = bounds(curves, self.log_y)
        if box is None:
            return [Text("(no points yet)", style="dim")]
        y_top, y_bottom = (10 ** box[3], 10 ** box[2]) if self.log_y else (box[3], box[2])
        labels = [axis_label(y_top), axis_label(y_bottom)]
        gutter = max(map(len, labels)) + 1
        plot_width = max(width - gutter - 1, 4)
        rows, owner = braille_rows(curves, plot_width, self.height, self.log_y, box)
        styles = self.styles + ["bold yellow"] * len(self.marks)
        out = []
        for r, row in enumerate(rows):
            label = labels[0] if r == 0 else labels[1] if r == len(rows) - 1 else ""
            line = Text(label.rjust(gutter - 1) + " ┤" if label else " " * (gutter - 1) + " │", style="dim")
            for c, ch in enumerate(row):
                line.append(ch, style=styles[owner[r][c]] if owner[r][c] >= 0 else None)
            out.append(line)
        x_axis = f"{axis_label(box[0])} {self.x_label}"
        legend = Text(" " * gutter + x_axis.ljust(max(plot_width - len(axis_label(box[1])), len(x_axis) + 1))
                      + axis_label(box[1]), style="dim")
        keys = Text(" " * gutter)
        for name, style in zip(self.names, self.styles):
            keys.append("⣿ ", style=style).append(name + "   ")
        if self.marks:
            keys.append("⣿ ", style="bold yellow").append("best val")
        return out + [legend, keys]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.lines(options.max_width)
