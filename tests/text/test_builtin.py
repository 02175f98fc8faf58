"""The built-in corpora, made from the Python installation itself: nothing is downloaded."""

import __future__
import inspect

import pytest

from chargen.errors import ChargenError
from chargen.limits import MAX_LAG
from chargen.text.builtin import CORPORA, build_corpus
from chargen.text.long_lag import RECALL_MARK
from tests import faults


def test_stdlib_source_fills_the_size_cap_with_whole_files(tmp_path):
    out = build_corpus("stdlib", tmp_path / "sub" / "stdlib.txt", max_bytes=200_000)
    text = out.read_text(encoding="utf-8")
    assert 150_000 < len(text.encode()) <= 200_000 and "def " in text and "import " in text
    assert text.endswith("\n\n")  # pieces are whole files, each ended by a blank line, never cut
    assert build_corpus("stdlib", tmp_path / "again.txt", max_bytes=200_000).read_text(encoding="utf-8") == text


def test_stdlib_docs_are_docstrings(tmp_path):
    text = build_corpus("stdlib-docs", tmp_path / "docs.txt", max_bytes=50_000).read_text(encoding="utf-8")
    assert 40_000 < len(text.encode()) <= 50_000
    assert inspect.cleandoc(__future__.__doc__) + "\n\n" in text  # a module's docstring, as written
    assert "all_feature_names = [" not in text  # and not its code


def test_long_lag_corpus_is_whole_episodes_of_the_given_lag(tmp_path):
    text = build_corpus("long-lag", tmp_path / "ll.txt", max_bytes=1000, lag=20).read_text()
    lines = text.splitlines()
    assert len(text) == 1000 // 24 * 24 and len(lines) == 1000 // 24
    assert all(len(line) == 23 and line[-2] == RECALL_MARK and line[0] == line[-1] for line in lines)


@pytest.mark.parametrize("name, options, message", [
    ("wikipedia", {}, "unknown corpus 'wikipedia'; available: " + ", ".join(CORPORA)),
    ("long-lag", {"lag": -1}, f"--lag -1: must be a whole number in \\[0, {MAX_LAG}\\]"),
    ("long-lag", {"lag": MAX_LAG + 1}, f"--lag {MAX_LAG + 1}: must be a whole number"),
    ("long-lag", {"lag": 100, "max_bytes": 103}, "--max-mb: too small for even one episode of lag 100"),
])
def test_bad_requests_are_clear_errors(tmp_path, name, options, message):
    with pytest.raises(ChargenError, match=message):
        build_corpus(name, tmp_path / "out.txt", **options)
    assert not (tmp_path / "out.txt").exists()


def test_a_full_disk_keeps_the_older_corpus_whole(tmp_path, monkeypatch):
    out = build_corpus("long-lag", tmp_path / "ll.txt", max_bytes=500, lag=3)
    before = out.read_bytes()
    faults.install("enospc@write", monkeypatch)
    with pytest.raises(ChargenError, match="ll.txt: cannot save the corpus: No space left on device"):
        build_corpus("long-lag", out, max_bytes=5000, lag=3)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ll.txt"]
