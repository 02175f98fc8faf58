"""chargen plot: files and terminal charts from a real run's metrics, and a line for each bad input."""

import builtins
import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from chargen.ui.plot import load_run


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def test_png_and_svg_from_a_real_run(tiny_run, tmp_path, cli):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'chargen[plot]')")
    from PIL import Image

    png, svg = tmp_path / "c.png", tmp_path / "c.svg"
    assert cli("plot", tiny_run, "--out", png)[0] == 0
    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 400
    code, out, err = cli("plot", tiny_run, tiny_run, "--x", "tokens", "--log-y", "--out", svg)
    assert code == 0, err
    assert ET.parse(svg).getroot().tag.endswith("svg")
    assert cli("plot", tiny_run, "--x", "time", "--out", tmp_path / "c.pdf")[0] == 0
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")


def test_terminal_chart(tiny_run, cli):
    code, out, err = cli("plot", tiny_run, "--height", "6")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 6 + 2
    assert any(0x2800 < ord(ch) <= 0x28FF for ch in lines[2])  # braille dots drawn
    assert "train" in lines[-1] and "val" in lines[-1] and "best val" in lines[-1]


def test_curves_and_best_point_come_from_the_log(tiny_run):
    run = load_run(str(tiny_run))
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _, _ in run.train] == [r["step"] for r in records if "train_loss" in r]
    vals = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    assert run.best("step") == min(vals, key=lambda v: v[1])
    assert run.points("train", "tokens")[0][0] == run.train[0][0] * 8 * 16  # batch 8 x seq len 16


def test_a_truncated_last_line_is_read_up_to_the_last_whole_record(run_copy, tmp_path, cli):
    metrics = run_copy / "metrics.jsonl"
    whole = len(load_run(str(run_copy)).train)
    metrics.write_text(metrics.read_text() + '{"step": 999, "time": 3.0, "train_lo')
    assert len(load_run(str(run_copy)).train) == whole
    assert cli("plot", run_copy)[0] == 0


def test_bad_inputs_are_one_line(run_copy, tmp_path, cli, monkeypatch):
    (tmp_path / "nometrics").mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "metrics.jsonl").write_text('{"step": 5, "time": 1.0, "train_l')  # only a torn record
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "metrics.jsonl").write_text((run_copy / "metrics.jsonl").read_text() * 2)
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(run_copy / "metrics.jsonl", no_ckpt)
    cases = [
        ([tmp_path / "missing"], "no such run directory"),
        ([tmp_path / "nometrics"], "no metrics.jsonl"),
        ([empty], "is empty"),
        ([junk], "no whole record"),
        ([mixed], "mixes runs"),
        ([no_ckpt, "--x", "tokens"], "--x tokens"),
        ([run_copy, "--out", tmp_path / "c.gif"], ".png"),
        ([run_copy, "--height", "1"], "--height 1"),
    ]
    for args, needle in cases:
        code, out, err = cli("plot", *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
        assert out == ""

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, _, err = cli("plot", run_copy, "--out", tmp_path / "c.png")
    assert code == 2 and "pip install 'chargen[plot]'" in err and len(err.strip().splitlines()) == 1
    assert err.startswith("chargen plot: error: --out needs matplotlib")  # the command named once
    assert not (tmp_path / "c.png").exists()
