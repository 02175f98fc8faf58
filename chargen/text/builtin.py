"""Corpora that every machine already has, built offline from the Python installation itself.

- ``stdlib``: the source code of the Python standard library (the ``.py`` files of the running
  interpreter), concatenated in a fixed order. Code has strong structure (indentation, keywords,
  names that repeat), so even a model trained for a minute or two produces recognisable Python:
  the same demonstration char-rnn made famous with the Linux kernel source.
- ``stdlib-docs``: the docstrings of the same modules, for English prose.

Both are built locally on demand, so nothing third-party is committed or downloaded.
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

from ..errors import ChargenError
from ..fileio import atomic_write_bytes
from ..limits import MAX_LAG
from .long_lag import long_lag_text

CORPORA = {
    "stdlib": "Python standard library source code (.py files of this interpreter)",
    "stdlib-docs": "docstrings of the Python standard library (English prose)",
    "long-lag": "synthetic recall episodes: a cue, --lag random distractors, '=', the cue again "
                "(the LSTM long-time-lag test; train with --seq-len above the lag)",
}
SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "__pycache__", "ensurepip"}


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py")
                  if not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1]))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    docs = (ast.get_docstring(n) for n in nodes)
    return [d for d in docs if d and len(d) > 40]


def build_corpus(name: str, out: str | Path, max_bytes: int = 4 << 20, lag: int = 100) -> Path:
    """Write corpus ``name`` to ``out`` (at most ``max_bytes`` of UTF-8) and return the path.

    ``lag`` is used by ``long-lag`` only: the distractors between cue and recall.
    """
    if name not in CORPORA:
        raise ChargenError(f"unknown corpus {name!r}; available: {', '.join(CORPORA)}")
    if name == "long-lag":
        if not (isinstance(lag, int) and 0 <= lag <= MAX_LAG):  # before the size check that uses it
            raise ChargenError(f"--lag {lag}: must be a whole number in [0, {MAX_LAG}]")
        episode = lag + 4  # cue, distractors, '=', cue, newline (all ASCII: one byte a char)
        if max_bytes < episode:
            raise ChargenError(f"--max-mb: too small for even one episode of lag {lag}")
        return _write(out, long_lag_text(lag, max_bytes // episode * episode))
    pieces, size = [], 0
    for path in _stdlib_files():
        source = _read(path)
        if source is None:
            continue
        texts = [source] if name == "stdlib" else _docstrings(source)
        for text in texts:
            chunk = text.strip("\n") + "\n\n"
            chunk_size = len(chunk.encode("utf-8"))
            if size + chunk_size <= max_bytes:  # a piece that does not fit is skipped, not cut
                pieces.append(chunk)
                size += chunk_size
    if not pieces:
        raise ChargenError("could not find the Python standard library's source files on this machine")
    return _write(out, "".join(pieces))


def _write(out: str | Path, text: str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode("utf-8"), "corpus")  # an older corpus stays whole on failure
    return out
