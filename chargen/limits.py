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
MAX_ACTIVATION_PENALTY = 100.0  # --ar, --tar: far beyond any useful weight (AWD-LSTM: 2 and 1); catches typos
MAX_LR = 10.0
# The training budget. Bigger budgets are typos, not plans; they would also overflow the step
# and epoch counters.
MAX_STEPS, MAX_EPOCHS, MAX_SECONDS = 10**12, 10**6, 365 * 24 * 3600
MAX_PREVIEW_LENGTH = 10_000
# Generation.
MAX_LENGTH = 10_000_000  # tokens per sample or reply; more is a typo (and hours of CPU)
MAX_NUM_SAMPLES = 10_000
MAX_BEAM = 1000
MAX_REPETITION_PENALTY = 100.0  # a penalty of 100 already bans every seen token in practice
MAX_NGRAM = 1000
MAX_TEMPS = 100  # temperatures in one --temp list
# chargen serve: what one HTTP request may ask for, and how much the server takes on at once.
SERVE_MAX_PROMPT_CHARS = 32_000   # a longer prompt is refused (400); only the last 2048 tokens count anyway
SERVE_MAX_TOKENS = 4096           # max_tokens per completion
SERVE_MAX_N = 16                  # completions per request
SERVE_MAX_BEAM = 16               # beam width per request
SERVE_MAX_TEMPERATURE = 2.0       # OpenAI's range for temperature: [0, 2]
SERVE_MAX_STOPS = 4               # stop strings per request, as OpenAI allows
SERVE_MAX_BODY_BYTES = 1 << 20    # a request body over a MiB is refused (413)
SERVE_BATCH_ROWS = 64             # streams stepped together; more requests wait in the queue
SERVE_QUEUE_SIZE = 64             # requests waiting for a row; past that: 503 with Retry-After
SERVE_REQUEST_SECONDS = 300.0     # a completion is cut (finish_reason "length") after this long
SERVE_SHUTDOWN_SECONDS = 10.0     # on SIGTERM, in-flight streams get this long to finish, then are cut
# Corpora.
MAX_CORPUS_MB = 1_000_000  # a terabyte: more is a typo
MAX_LAG = 100_000  # the long-lag corpus's distractors between cue and recall
# chargen viz: the text it shows, and the page's size (its activations are cut to fit).
MAX_VIZ_CHARS = 50_000  # one element per character: more makes the page slow in a browser
VIZ_DEFAULT_MB = 8.0
MAX_VIZ_MB = 1000.0

# torch seeds are 64-bit, signed or not.
SEED_RANGE = (-(1 << 63), 1 << 64)


def check_seed(seed: int | None, option: str = "--seed") -> None:
    """Say that a seed must fit in 64 bits instead of failing deep inside torch."""
    low, high = SEED_RANGE
    if seed is not None and not (isinstance(seed, int) and low <= seed < high):
        raise ChargenError(f"{option} {seed}: must be a whole number that fits in 64 bits")
