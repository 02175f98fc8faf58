"""The run directory: where a run's checkpoints and metrics live, and who may write there."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from ..checkpoint import BEST_NAME, LAST_NAME
from ..errors import ChargenError
from ..fileio import atomic_write_bytes

METRICS_NAME = "metrics.jsonl"
LOCK_NAME = ".lock"


def make_run_dir(out: str | None, corpus_paths: list[str]) -> Path:
    """``--out`` as given (it must not hold a run already), else checkpoints/<corpus>-<time>."""
    if out:
        path = Path(out)
        if (path / LAST_NAME).exists() or (path / BEST_NAME).exists():
            raise ChargenError(f"--out {path}: already holds a training run; continue it with "
                               f"--resume {path} or choose another --out")
        return path
    stem = Path(corpus_paths[0]).stem if corpus_paths else "run"
    base = Path("checkpoints") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_writable(run_dir: Path, option: str = "--out") -> None:
    """A clear error now if the run directory cannot be created or written, not after encoding."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = "choose another --out" if option == "--out" else "make it writable (or copy the run elsewhere)"
    if not existing.is_dir():
        raise ChargenError(f"{option} {run_dir}: {existing} is a file, not a directory; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ChargenError(f"{option} {run_dir}: {existing} is not writable; {fix}")


def create_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChargenError(f"--out {run_dir}: cannot create the run directory: "
                           f"{exc.strerror or exc}; choose another --out") from None


def lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on the run directory so two trainers never write the same run.

    Returns the open lock file (close it to release), or None where the platform has no advisory
    locks. The lock dies with the process (even on kill -9), so a crash never leaves it stuck.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; nothing to hold
        return None
    try:
        handle = open(run_dir / LOCK_NAME, "a+")
    except OSError as exc:
        raise ChargenError(f"{run_dir}: cannot write in the run directory: {exc.strerror or exc}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ChargenError(f"{run_dir}: another chargen process is training this run right now; "
                           "wait for it to finish (or stop it) first") from None
    return handle


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, appended as training goes."""

    def __init__(self, run_dir: Path):
        self.path, self.run_dir = run_dir / METRICS_NAME, run_dir

    def append(self, **record) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise ChargenError(f"{self.path}: cannot write metrics: {exc.strerror or exc}; free some disk space, "
                               f"then continue with: chargen train --resume {self.run_dir}") from None

    def trim_after(self, step: int) -> None:
        """On resume, drop records past ``step`` (and torn ones) so that no step is logged twice."""
        if not self.path.exists():
            return
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ChargenError(f"{self.path}: cannot read the metrics log: {exc.strerror or exc}; "
                               "move it aside to resume") from None
        records = parse_metrics(text)
        kept = [r for r in records if isinstance(r.get("step", 0), (int, float)) and r.get("step", 0) <= step]
        if len(kept) == len(records) == len(text.splitlines()) and text.endswith("\n"):
            return  # nothing to drop: leave the file alone
        data = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write_bytes(self.path, data.encode(), "metrics log")


def parse_metrics(text: str) -> list[dict]:
    """The records of a metrics log's text, skipping lines that are not whole JSON objects: the last
    one may have been cut by a kill in the middle of a write."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_metrics(path: Path) -> list[dict]:
    """Every whole record of ``metrics.jsonl`` (none if it does not exist), as training wrote them."""
    try:
        return parse_metrics(Path(path).read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return []
