"""bench/long_lag.py --plot: the vanishing-gradient figure is written (a few training steps only)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def test_the_gradient_figure_is_written(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'chargen[plot]')")
    from PIL import Image

    import long_lag

    out = tmp_path / "grad.png"
    long_lag.main(["--cells", "rnn,lstm", "--lags", "10", "--steps", "2", "--lstm-hidden", "16", "--plot", str(out)])
    out_text = capsys.readouterr().out
    assert "| rnn |" in out_text and f"wrote {out}" in out_text
    with Image.open(out) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 600
