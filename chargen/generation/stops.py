"""Stop strings: stream text out while holding back what may be the start of the stop string."""

from __future__ import annotations


class StopFilter:
    """Streams text but holds back what might be the start of the stop string."""

    def __init__(self, stop: str | None):
        self.stop, self.pending, self.stopped = stop, "", False

    def push(self, text: str) -> str:
        if not self.stop:
            return text
        self.pending += text
        hit = self.pending.find(self.stop)
        if hit >= 0:
            self.stopped = True
            out, self.pending = self.pending[:hit], ""
            return out
        keep = 0  # longest suffix of pending that is a prefix of stop
        for size in range(min(len(self.stop) - 1, len(self.pending)), 0, -1):
            if self.stop.startswith(self.pending[-size:]):
                keep = size
                break
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
