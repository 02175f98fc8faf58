"""Fault injection for the crash tests: make ``chargen.fileio``'s atomic writes fail at a chosen point.

A spec is ``<action>@<stage>``. Actions: ``kill`` (SIGKILL this process, as a power cut would),
``enospc`` (disk full), ``erofs`` (read-only file system). Stages, in the order a write reaches them:

- ``open``: before the temp file is opened;
- ``write``: half the bytes are in the temp file;
- ``rename``: the temp file is complete, not yet renamed over the target;
- ``renamed``: renamed, the directory not yet synced.

In a test: ``install(spec, monkeypatch)``; in a forked child, ``install(spec)``. In a subprocess,
``python -m tests.faults SPEC ARGS...`` runs ``chargen ARGS...`` with the fault installed.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

from chargen import fileio

ACTIONS = ("kill", "enospc", "erofs")
STAGES = ("open", "write", "rename", "renamed")


def fail(action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    code = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}[action]
    raise OSError(code, os.strerror(code))


class OsWith:
    """The ``os`` module, but for the functions given."""

    def __init__(self, **replaced):
        self.replaced = replaced

    def __getattr__(self, name):
        return self.replaced[name] if name in self.replaced else getattr(os, name)


def install(spec: str, monkeypatch=None) -> None:
    """Make every atomic write of ``chargen.fileio`` fail as ``spec`` says, from now on (with
    ``monkeypatch``: until the test ends)."""
    action, _, stage = spec.partition("@")
    if action not in ACTIONS or stage not in STAGES:
        raise ValueError(f"fault {spec!r}: want <{'|'.join(ACTIONS)}>@<{'|'.join(STAGES)}>")
    setattr_ = monkeypatch.setattr if monkeypatch is not None else setattr

    if stage == "open":
        def open_(path, flags, *args, **kwargs):
            if flags & os.O_CREAT:  # the temp file; the directory sync opens read-only
                fail(action)
            return os.open(path, flags, *args, **kwargs)
        setattr_(fileio, "os", OsWith(open=open_))
    elif stage == "write":
        real_write_all = fileio.write_all

        def write_all(fd, view):
            real_write_all(fd, view[:len(view) // 2])
            fail(action)
        setattr_(fileio, "write_all", write_all)
    elif stage == "rename":
        def replace(src, dst):
            fail(action)
            os.replace(src, dst)
        setattr_(fileio, "os", OsWith(replace=replace))
    else:
        real_fsync_directory = fileio.fsync_directory

        def fsync_directory(directory):
            fail(action)
            real_fsync_directory(directory)
        setattr_(fileio, "fsync_directory", fsync_directory)


if __name__ == "__main__":
    from chargen.ui.cli import main

    install(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
