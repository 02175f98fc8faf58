"""chargen viz: the page's data matches the model, it stays small, bad input is one line, and a real
browser renders it (one element per character, a unit picker that recolours the text)."""

import base64
import json
import re

import numpy as np
import pytest

from chargen.checkpoint import save_checkpoint
from chargen.model.inspect import trace_text
from chargen.model.interpret import UnitScore
from chargen.ui.viz import dequantize, quantize, select_units
from tests.browser import browser  # noqa: F401
from tests.conftest import TOKENIZER, make_text, random_model


def page_json(path) -> dict:
    page = path.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def series(entry) -> np.ndarray:
    return dequantize(entry["lo"], entry["hi"], base64.b64decode(entry["q"]))


def test_quantize_round_trip_within_half_a_step():
    values = np.random.default_rng(0).normal(size=1000) * 3
    lo, hi, data = quantize(values)
    assert len(data) == 1000 and (lo, hi) == (values.min(), values.max())
    assert np.abs(dequantize(lo, hi, data) - values).max() <= (hi - lo) / 510 + 1e-12
    assert (dequantize(*quantize(np.full(5, 0.25))) == 0.25).all()  # a constant stays exact


def test_select_units_puts_featured_first_then_takes_groups_in_turn():
    rankings = {(0, "c"): [UnitScore(u, "x", 0.0) for u in (5, 1, 2)],
                (0, "h"): [UnitScore(u, "x", 0.0) for u in (9, 8)]}
    featured = [((0, "h"), UnitScore(8, "x", 0.9))]
    assert select_units(rankings, 3, featured) == {(0, "c"): [5], (0, "h"): [8, 9]}
    assert select_units(rankings, 99, featured) == {(0, "c"): [5, 1, 2], (0, "h"): [8, 9]}


def test_page_holds_the_models_activations(tiny_run, tmp_path, cli):
    import chargen

    text_file = tmp_path / "text.txt"
    text_file.write_text(make_text(12, seed=3), encoding="utf-8")
    out = tmp_path / "v.html"
    code, stdout, err = cli("viz", tiny_run, "--text", text_file, "--out", out)
    assert code == 0, err
    assert "wrote" in stdout and out.exists()
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched: works offline
    data = page_json(out)
    model = chargen.load(tiny_run)
    trace = trace_text(model.model, model.tokenizer, text_file.read_text(encoding="utf-8"))
    assert data["text"] == trace.text
    by_label = {q["label"]: q for q in data["quantities"]}
    cells = by_label["layer 1 cell state c"]
    assert cells["total"] == 32 and len(cells["units"]) == 32  # a tiny model fits whole
    for unit in cells["units"][:5]:
        want = trace.states["c"][:, 0, unit["unit"]]
        assert np.abs(series(unit) - want).max() <= (want.max() - want.min()) / 510 + 1e-6
    surprisal = series(data["quantities"][0])
    np.testing.assert_allclose(surprisal[1:], trace.surprisal[1:], atol=(np.nanmax(trace.surprisal) / 510) + 1e-6)
    assert {q["kind"] for q in data["quantities"]} >= {"surprisal", "norm", "c", "h", "i", "f", "o"}
    assert data["featured"] and all(f["feature"] for f in data["featured"])


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """A checkpoint too wide to store every unit of a 20,000-character text."""
    path = tmp_path_factory.mktemp("wide") / "wide.safetensors"
    save_checkpoint(path, random_model(layers=2, hidden=128), TOKENIZER, {"step": 0})
    return path


def test_a_20000_character_page_stays_small(wide_run, tmp_path, cli):
    text = tmp_path / "long.txt"
    text.write_text(make_text(600, seed=1).replace("x", "")[:20_000], encoding="utf-8")
    assert len(text.read_text()) == 20_000
    out = tmp_path / "long.html"
    code, _, err = cli("viz", wide_run, "--text", text, "--out", out)
    assert code == 0, err
    assert out.stat().st_size < 10e6
    data = page_json(out)
    assert 0 < data["stored_units"] < data["total_units"] == 2 * 128 * 5
    kinds = {q["kind"] for q in data["quantities"] if q.get("units")}
    assert kinds == {"c", "h", "i", "f", "o"}  # every kind keeps some units


def test_bad_inputs_are_one_line(tiny_run, tmp_path, cli):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    alien = tmp_path / "alien.txt"
    alien.write_text("ζζζ", encoding="utf-8")
    cases = [
        (["--text", tmp_path / "missing.txt"], "no such file"),
        (["--text", empty], "empty"),
        (["--text", alien], "never saw"),
        (["--generate", "0"], "--generate 0"),
        (["--text", alien, "--max-chars", "0"], "--max-chars 0"),
        (["--generate", "50", "--max-mb", "0"], "--max-mb 0"),
        (["--generate", "3000", "--max-mb", "0.01"], "too small"),
    ]
    for args, needle in cases:
        code, out, err = cli("viz", tiny_run, *args, "--out", tmp_path / "x.html")
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = cli("viz", tmp_path / "nothing", "--generate", "10")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()


def test_the_page_in_a_real_browser(browser, tiny_run, tmp_path, cli):  # noqa: F811
    out = tmp_path / "v.html"
    code, _, err = cli("viz", tiny_run, "--generate", "400", "--seed", "1", "--out", out)
    assert code == 0, err
    data = page_json(out)
    browser.get(out.as_uri())
    assert browser.execute_script("return document.body.dataset.ready") == "1"
    cells = browser.execute_script("return document.querySelectorAll('#text span.ch').length")
    assert cells == len(data["text"]) >= 400
    options = browser.execute_script("return Array.from(document.querySelectorAll('#unit option'), o => o.text)")
    assert len(options) > 1 and options[0].startswith("unit ")
    rows = browser.execute_script("return document.querySelectorAll('#featured tr.unit-row').length")
    assert rows == len(data["featured"]) > 0

    colours = "return Array.from(document.querySelectorAll('#text span.ch'), s => s.style.backgroundColor)"
    before = browser.execute_script(colours)
    assert len(set(before)) > 3  # coloured by the first featured unit
    browser.execute_script("const u = document.getElementById('unit'); u.selectedIndex = 1;"
                           "u.dispatchEvent(new Event('change'));")
    after = browser.execute_script(colours)
    assert after != before and len(after) == len(before)
    browser.find_elements("css selector", "#featured tr.unit-row")[-1].click()  # a row of the table
    assert browser.execute_script(colours) != after
    tip = browser.execute_script("const s = document.querySelectorAll('#text span.ch')[10];"
                                 "s.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));"
                                 "return document.getElementById('tip').textContent")
    assert "surprisal:" in tip and "nats" in tip and tip.count("%") == 5  # the top-5 predictions
    browser.save_screenshot(str(tmp_path / "viz.png"))
    assert (tmp_path / "viz.png").stat().st_size > 10_000
