"""Writing files so that a crash, a kill or a full disk never leaves a half-written one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import ChargenError


def atomic_write_bytes(path: Path, data: bytes, what: str = "checkpoint") -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename over ``path``.

    A crash or kill at any moment leaves either the old file or the new one, never a mix; on
    any failure (disk full, read-only directory, Ctrl-C) the temp file is removed and the old file
    is untouched. ``what`` names the file in the error message.
    """
    tmp = temp_path_for(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, memoryview(data))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException as exc:  # OSError, but also Ctrl-C: never leave a temp file behind
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ChargenError(f"{path}: cannot save the {what}: {exc.strerror or exc}; "
                               f"earlier files are untouched{os_error_hint(exc)}") from None
        raise


def temp_path_for(path: Path) -> Path:
    """The temp file a write of ``path`` goes through: hidden, and named after this process."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_all(fd: int, view: memoryview) -> None:
    """``os.write`` until every byte is written (a write may take only part)."""
    while view:
        view = view[os.write(fd, view):]


def os_error_hint(exc: OSError) -> str:
    """What to do about a failed write, for the end of an error message ('' if nothing useful)."""
    if exc.errno == errno.ENOSPC:
        return "; free some disk space (or choose another --out)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "; the directory is not writable (choose another --out or fix its permissions)"
    return ""


def remove_stale_temp_files(directory: Path, pattern: str = ".*.tmp*") -> None:
    """Delete temp files (``<name>.tmp<pid>``) left by chargen processes killed while saving."""
    for tmp in directory.glob(pattern):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            try:
                tmp.unlink()
            except OSError:
                pass


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
