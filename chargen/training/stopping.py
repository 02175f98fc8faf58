"""Stopping a run on request: Ctrl-C or SIGTERM once finishes the step and saves, twice aborts."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .events import TrainingAborted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A flag the loop checks between steps, set by a signal handler or by any thread."""

    def __init__(self):
        self.signal_number: int | None = None
        self._event = threading.Event()

    def set(self, signal_number: int | None = None) -> None:
        self.signal_number = signal_number
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    @contextmanager
    def on_signals(self, run_dir: Path) -> Iterator[None]:
        """While inside, the first Ctrl-C/SIGTERM sets the flag and the second raises
        ``TrainingAborted``. Signal handlers belong to the main thread: elsewhere, nothing changes."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.is_set():
                # Second Ctrl-C: abort now. A save in progress is abandoned (its temp file is
                # removed), so the last complete checkpoint stays as it was.
                raise TrainingAborted(run_dir, signum)
            self.set(signum)

        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
