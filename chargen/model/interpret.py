"""Finding interpretable units: which of a model's units follow simple properties of the text.

Karpathy, Johnson & Fei-Fei ("Visualizing and Understanding Recurrent Networks", 2015) found LSTM
cells that track quotes, line length and indentation. Here each unit's activation over a text is
correlated (Pearson) with a few such properties, computed per character by :func:`text_features`,
and the units are ranked by their best absolute correlation. Pure functions of arrays and text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What each feature measures, after reading the character (as the activations are).
FEATURES = {
    "inside quotes": "1 between an opening and a closing quote (\" across lines; ' within a line, not apostrophes)",
    "bracket depth": "how many (, [ or { are open",
    "position in line": "characters since the last newline",
    "indentation": "leading spaces/tabs of the current line so far",
    "since space": "characters since the last space or newline",
    "inside a word": "1 on letters, digits and _",
}
BRACKETS = {"(": ")", "[": "]", "{": "}"}


@dataclass
class UnitScore:
    unit: int            # column of the activations
    feature: str         # the feature it correlates with best
    correlation: float   # Pearson r, signed

    @property
    def score(self) -> float:
        return abs(self.correlation)


def _is_apostrophe(text: str, t: int) -> bool:
    return 0 < t < len(text) - 1 and text[t - 1].isalnum() and text[t + 1].isalnum()


def _quote_flags(text: str) -> np.ndarray:
    inside = np.zeros(len(text), dtype=np.float32)
    double = single = False
    for t, ch in enumerate(text):
        if ch == '"' and not single:
            double = not double
        elif ch == "'" and not double and not _is_apostrophe(text, t):
            single = not single
        elif ch == "\n":
            single = False  # a lone ' (a possessive, a quote opened in prose) ends with its line
        inside[t] = double or single  # after reading: 1 on the opening quote, 0 on the closing one
    return inside


def text_features(text: str) -> dict[str, np.ndarray]:
    """Each of :data:`FEATURES` for every character of ``text`` (float32 arrays of ``len(text)``)."""
    n = len(text)
    depth, column, indent, since_space = (np.zeros(n, dtype=np.float32) for _ in range(4))
    open_brackets: list[str] = []
    col = ind = gap = 0
    in_indent = True
    for t, ch in enumerate(text):
        if ch in BRACKETS:
            open_brackets.append(BRACKETS[ch])
        elif open_brackets and ch == open_brackets[-1]:
            open_brackets.pop()
        if ch == "\n":
            col = ind = gap = 0
            in_indent = True
        else:
            col += 1
            gap = 0 if ch == " " else gap + 1
            if in_indent and ch in " \t":
                ind += 1
            else:
                in_indent = False
        depth[t], column[t], indent[t], since_space[t] = len(open_brackets), col, ind, gap
    word = np.fromiter((ch.isalnum() or ch == "_" for ch in text), dtype=np.float32, count=n)
    return {"inside quotes": _quote_flags(text), "bracket depth": depth, "position in line": column,
            "indentation": indent, "since space": since_space, "inside a word": word}


def _standardize(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean and unit variance; constant columns to zeros (no correlation)."""
    x = x.astype(np.float64) - x.mean(axis=0)
    std = x.std(axis=0)
    return np.divide(x, std, out=np.zeros_like(x), where=std > 1e-12)


def correlations(activations: np.ndarray, features: dict[str, np.ndarray]) -> np.ndarray:
    """Pearson r of every unit (column of ``activations [T, units]``) with every feature: ``[units, features]``."""
    a = _standardize(activations)
    f = _standardize(np.stack(list(features.values()), axis=1))
    return a.T @ f / max(len(a), 1)


def rank_units(activations: np.ndarray, text: str, top: int | None = None) -> list[UnitScore]:
    """Units ranked by how well they follow one feature of ``text``, best first."""
    features = text_features(text)
    r = correlations(activations, features)
    names = list(features)
    best = np.abs(r).argmax(axis=1)
    scores = [UnitScore(int(u), names[best[u]], float(r[u, best[u]])) for u in range(r.shape[0])]
    scores.sort(key=lambda s: -s.score)
    return scores[:top] if top is not None else scores
