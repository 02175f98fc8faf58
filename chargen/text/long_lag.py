"""The long-lag corpus: text that measures how far back a recurrent cell can remember.

After Hochreiter & Schmidhuber (1997), experiment 2, every line is one episode

    C x1 x2 ... xq = C

a cue ``C`` drawn uniformly from a few upper-case symbols, ``q`` random lower-case distractors,
the recall mark ``=`` and the cue again. The distractors and the next line's cue are pure noise;
the only thing in the text that can be predicted better than chance is the symbol after ``=``,
and only by remembering the cue read ``q + 1`` steps earlier. Recall accuracy therefore has a
known chance level, ``1 / symbols``.

Training with truncated BPTT, the loss at ``=`` sends gradient back to the cue only when both fall
inside one ``seq_len`` window: ``seq_len`` must exceed the lag. ``bench/long_lag.py`` trains on
the recall alone, as the paper did (``bench/recall.py``), which learns far faster.
"""

from __future__ import annotations

import random

from ..errors import ChargenError
from ..limits import MAX_LAG
from .tokenizers import CharTokenizer

CUES = "ABCDEFGH"
DISTRACTORS = "abcdefghijklmnopqrstuvwxyz"
RECALL_MARK = "="


def check_long_lag(lag: int, symbols: int, distractors: int) -> None:
    if not (isinstance(lag, int) and 0 <= lag <= MAX_LAG):
        raise ChargenError(f"--lag {lag}: must be a whole number in [0, {MAX_LAG}]")
    if not 2 <= symbols <= len(CUES):
        raise ChargenError(f"symbols {symbols}: must be between 2 and {len(CUES)}")
    if not 1 <= distractors <= len(DISTRACTORS):
        raise ChargenError(f"distractors {distractors}: must be between 1 and {len(DISTRACTORS)}")


def long_lag_text(lag: int, n_chars: int, *, symbols: int = 4, distractors: int = 8, seed: int = 0) -> str:
    """Whole long-lag episodes (one per line), at least ``n_chars`` characters in all.

    ``symbols`` cues (chance recall is ``1 / symbols``), ``distractors`` distinct filler symbols.
    The same arguments always give the same text.
    """
    check_long_lag(lag, symbols, distractors)
    rng = random.Random(seed)
    cues, filler = CUES[:symbols], DISTRACTORS[:distractors]
    episode_len = lag + 4
    lines = []
    for _ in range(max(1, -(-n_chars // episode_len))):
        cue = rng.choice(cues)
        lines.append(f"{cue}{''.join(rng.choices(filler, k=lag))}{RECALL_MARK}{cue}\n")
    return "".join(lines)


def long_lag_tokenizer(symbols: int = 4, distractors: int = 8) -> CharTokenizer:
    """The char tokenizer of long-lag text: exactly the vocabulary ``chargen train`` would build."""
    return CharTokenizer(sorted(CUES[:symbols] + DISTRACTORS[:distractors] + RECALL_MARK + "\n"))
