"""``--save-every``: when the trainer saves ``last`` between evaluations, so that a kill loses little.

Evaluations save ``last`` (and ``best``), but they can be many minutes apart for a big model on a
CPU. A time-capped save writes ``last`` alone, with its training state, when that many seconds of
the run's clock have passed since the newest save; ``best`` still follows validation only.
"""

from __future__ import annotations

from ..limits import MAX_SECONDS
from .auto import AUTO_SAVE_EVERY_SECONDS

SAVE_EVERY_WORDS = ("auto", "off")  # what --save-every takes besides a duration


def save_interval(save_every: float | str) -> float | None:
    """Seconds between time-capped saves: ``auto`` is AUTO_SAVE_EVERY_SECONDS; ``off`` is None."""
    if save_every == "off":
        return None
    return float(AUTO_SAVE_EVERY_SECONDS if save_every == "auto" else save_every)


def save_due(elapsed: float, last_save: float, save_every: float | str) -> bool:
    """Whether ``last`` is due for a time-capped save, ``elapsed`` seconds into the run, the newest
    save having been at ``last_save`` seconds (or the start or resume, if none yet)."""
    interval = save_interval(save_every)
    return interval is not None and elapsed - last_save >= interval


def valid_save_every(save_every) -> bool:
    """``auto``, ``off``, or a number of seconds > 0 and at most MAX_SECONDS."""
    if save_every in SAVE_EVERY_WORDS:
        return True
    return isinstance(save_every, (int, float)) and not isinstance(save_every, bool) \
        and 0 < save_every <= MAX_SECONDS
