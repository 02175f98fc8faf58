"""Braille line charts: the pure drawing function, thinning, and the rich renderable's width."""

from rich.console import Console

from chargen.ui.charts import BRAILLE_BLANK, LineChart, braille_rows, thin


def dots(rows):
    """The set of (x, y) dots lit, in dot coordinates."""
    lit = set()
    for r, row in enumerate(rows):
        for c, ch in enumerate(row):
            bits = ord(ch) - BRAILLE_BLANK
            for col, masks in enumerate(((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))):
                for dy, mask in enumerate(masks):
                    if bits & mask:
                        lit.add((2 * c + col, 4 * r + dy))
    return lit


def test_a_falling_line_goes_from_top_left_to_bottom_right():
    rows, owner = braille_rows([[(0, 10.0), (1, 0.0)]], width=5, height=2)
    assert len(rows) == 2 and all(len(r) == 5 for r in rows)
    lit = dots(rows)
    assert (0, 0) in lit and (9, 7) in lit  # the corners: first point high, last low
    assert all(abs(y - x * 7 / 9) <= 1 for x, y in lit)  # on the diagonal
    assert owner[0][0] == 0 and owner[1][0] == -1


def test_each_cell_remembers_the_curve_drawn_there_last():
    _, owner = braille_rows([[(0, 0.0), (1, 0.0)], [(0, 1.0), (1, 1.0)]], width=4, height=2)
    assert owner[0] == [1, 1, 1, 1] and owner[1] == [0, 0, 0, 0]  # val on top, train below


def test_log_scale_spaces_decades_evenly():
    rows, _ = braille_rows([[(0, 1.0), (1, 10.0), (2, 100.0)]], width=3, height=3, log_y=True)
    ys = sorted({y for x, y in dots(rows) if x in (0, 5)})
    assert ys[0] == 0 and ys[-1] == 11


def test_empty_and_flat_curves_draw_without_error():
    rows, _ = braille_rows([[]], width=3, height=1)
    assert rows == [chr(BRAILLE_BLANK) * 3]
    rows, _ = braille_rows([[(5, 1.0), (5, 1.0)]], width=3, height=1)
    assert len({y for _, y in dots(rows)}) == 1  # a flat curve is one level of dots
    rows, _ = braille_rows([[(0, 2.0), (10, 2.0)]], width=3, height=2)
    lit = dots(rows)
    assert len({y for _, y in lit}) == 1 and len({x for x, _ in lit}) == 6  # across the width, one level


def test_thin_keeps_the_shape_in_fewer_points():
    points = [(float(i), float(i % 2)) for i in range(1001)]
    thinned = thin(points, 100)
    assert 50 <= len(thinned) <= 100 and thinned[0][0] < 10 and thinned[-1][0] > 990
    assert all(abs(y - 0.5) < 1e-9 for _, y in thinned[:-2])  # each pair averaged


def test_the_chart_fills_the_width_it_is_given():
    chart = LineChart([[(0, 3.0), (10, 1.0)]], ["cyan"], ["train"], height=4)
    for width in (40, 90):
        console = Console(width=width, record=True, color_system=None)
        console.print(chart)
        lines = console.export_text().splitlines()
        assert max(len(line) for line in lines) <= width
        assert len(lines[0]) >= width - 2 and lines[0].lstrip().startswith("3")
