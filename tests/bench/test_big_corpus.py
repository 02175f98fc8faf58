"""bench/big_corpus.py writes the mixed-script corpora the scaling benchmark reads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "big_corpus.py"


def test_bench_generates_mixed_script_utf8_of_the_requested_size(tmp_path):
    spec = importlib.util.spec_from_file_location("big_corpus", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path, size = bench.write_corpus(tmp_path, 0.3, files=0)
    text = path.read_text(encoding="utf-8")
    assert len(path.read_bytes()) == size and 300_000 <= size < 301_000
    for script in ("latin", "cyrillic", "devanagari", "arabic", "cjk", "emoji"):
        assert any(c in text for c in bench.SCRIPTS[script]), script
    many = tmp_path / "many"
    many.mkdir()
    folder, _ = bench.write_corpus(many, 0.05, files=40)
    assert len(list(folder.rglob("*.txt"))) == 40
