"""Every bound on what a user may ask for, defined once.

Validation, ``--help`` and checkpoint loading all read these, so they cannot disagree. Most are
generous: they exist to turn a typo into a clear message instead of hours of work or a crash
deep inside torch.
"""

from __future__ import annotations

from .errors import ChargenError

# Whole-number options such as --layers, --batch-size, --log-every.
MAX_WHOLE = 1_000_000
# The model. A checkpoint describing more is refused too (it was altered).
MAX_LAYERS = 64
MAX_HIDDEN = 16_384
MAX_VOCAB_SIZE = 1 << 21  # more ids than Unicode has code points means a corrupt file
MIN_SENTENCEPIECE_VOCAB = 300
MAX_PARAMETERS = 4 << 30  # refuse configs that would allocate absurd amounts of memory
MAX_DROPOUT = 1.0  # exclusive: a rate of 1 drops everything
MAX_LR = 10.0
# The training budget. Bigger budgets are typos, not plans; they would also overflow the step
# and epoch counters.
MAX_STEPS, MAX_EPOCHS, MAX_SECONDS = 10**12, 10**6, 365 * 24 * 3600
MAX_PREVIEW_LENGTH = 10_000
# Generation.
MAX_LENGTH = 10_000_000  # tokens per sample or reply; more is a typo (and hours of CPU)
MAX_NUM_SAMPLES = 10_000
MAX_BEAM = 1000
# Corpora.
MAX_CORPUS_MB = 1_000_000  # a terabyte: more is a typo
MAX_LAG = 100_000  # the long-lag corpus's distractors between cue and recall

# torch seeds are 64-bit, signed or not.
SEED_RANGE = (-(1 << 63), 1 << 64)


def check_seed(seed: int | None, option: str = "--seed") -> None:
    """Say that a seed must fit in 64 bits instead of failing deep inside torch."""
    low, high = SEED_RANGE
    if seed is not None and not (isinstance(seed, int) and low <= seed < high):
        raise ChargenError(f"{option} {seed}: must be a whole number that fits in 64 bits")
