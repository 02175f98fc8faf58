"""Stop strings: stream text out while holding back what may be the start of a stop string."""

from __future__ import annotations



class StopFilter:
    """Streams text but holds back what might be the start of a stop string.

    ``stop`` is one string, several, or None. The first stop string to appear in the text wins
    (at the same place, the one listed first); ``stopped_by`` says which. ``push(text, armed=False)``
    passes text through without looking for stops: what ``--min-length`` asks before its count.
    """

    def __init__(self, stops: tuple[str, ...]):
        """``stops``: the stop strings, as ``SamplingSettings.stops`` gives them."""
        self.stops = tuple(s for s in stops if s)
        self.pending, self.stopped, self.stopped_by = "", False, None
        self._longest = max(map(len, self.stops), default=0)

    def push(self, text: str, armed: bool = True) -> str:
        if not self.stops:
            return text
        self.pending += text
        if armed:
            hit, which = self._first_hit()
            if which is not None:
                self.stopped, self.stopped_by = True, which
                out, self.pending = self.pending[:hit], ""
                return out
        keep = self._held_suffix()
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        return out

    def _first_hit(self) -> tuple[int, str | None]:
        best, which = len(self.pending) + 1, None
        for stop in self.stops:
            hit = self.pending.find(stop)
            if 0 <= hit < best:
                best, which = hit, stop
        return best, which

    def _held_suffix(self) -> int:
        """The longest suffix of pending that is the start of some stop string (it may complete)."""
        for size in range(min(self._longest - 1, len(self.pending)), 0, -1):
            tail = self.pending[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
