"""The training loop: truncated BPTT over parallel streams, AdamW, warm-up then decay, clipping.

Read ``Trainer.run`` top to bottom: it is the whole algorithm. Everything the loop wants the
outside world to know (progress, evaluations, checkpoints) goes out as an event to ``on_event``;
the dashboard is one consumer, tests are another.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .checkpoint import (BEST_NAME, LAST_NAME, Checkpoint, atomic_write_bytes, load_checkpoint,
                         remove_stale_temp_files, save_checkpoint)
from .data import Corpus, StreamBatches, find_text_files, iter_text, load_corpus
from .evaluate import evaluate
from .engine import cpu_has_native_bf16, faster_precision
from .errors import ChargenError, describe_chars
from .model import CELLS, CharLM, ModelConfig, State, detach_state
from .sampling import Sampler, SamplingSettings
from .tokenizers import CharTokenizer, TOKENIZER_KINDS, Tokenizer

MAX_BAD_STEPS_IN_A_ROW = 5
SCHEDULES = ("cosine", "linear")
MAX_PREVIEW_LENGTH = 10_000
# Bigger budgets are typos, not plans; they would also overflow the step and epoch counters.
MAX_STEPS, MAX_EPOCHS, MAX_SECONDS = 10**12, 10**6, 365 * 24 * 3600
# Options that may differ when resuming: the budget and how the run is watched or executed.
# Everything else (model, data, optimizer settings) is the run's own and must stay as saved.
RESUME_OVERRIDABLE = ("max_steps", "max_time", "epochs", "eval_every", "eval_tokens", "log_every", "preview_length",
                      "device", "precision", "compile", "lr")


@dataclass
class TrainConfig:
    """Every training option, with its default. The CLI's flags are generated from this."""

    # model
    cell: str = "lstm"
    layers: int = 2
    hidden: int | str = "auto"  # auto: DEFAULT_HIDDEN, narrower when --max-time is short (plan_shape)
    dropout: float | str = "auto"  # auto: from the epochs the budget allows (auto_dropout)
    tie_weights: bool = True
    skip_connections: bool = True
    # tokenizer and input
    tokenizer: str = "char"
    vocab_size: int = 2000  # sentencepiece only
    normalize: str | None = None  # char only: NFC or NFKC
    encoding: str = "utf-8"
    # optimization
    seq_len: int | str = "auto"  # auto: DEFAULT_SEQ_LEN, SHORT_SEQ_LEN when --max-time is short (plan_shape)
    batch_size: int = 32
    lr: float | str = "auto"  # peak; auto: from the epochs the budget allows (auto_lr)
    schedule: str = "cosine"  # after the warm-up, lr falls to lr * min_lr_frac along a cosine, or linearly
    min_lr_frac: float = 0.0  # all the way down (bench/HISTORY.md)
    warmup_steps: int = 100
    weight_decay: float | str = "auto"  # auto: from the epochs the budget allows (auto_weight_decay)
    grad_clip: float = 1.0
    # budget: training stops at the first limit reached; with none given, after 10 epochs
    max_steps: int | None = None
    max_time: float | None = None  # seconds
    epochs: float | None = None
    # evaluation and output
    val_frac: float = 0.1
    eval_every: int | str = "auto"  # steps; auto: every EVAL_EVERY_TOKENS training tokens
    # Validation tokens scored per evaluation (0 = the whole split). At the defaults that costs
    # about a tenth of the compute of the training steps between two evaluations.
    eval_tokens: int = 250_000
    log_every: int = 10
    preview_length: int = 160
    out: str | None = None
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16
    compile: bool = False
    init_from: str | None = None
    extend_vocab: bool = False

    def validate(self) -> "TrainConfig":
        def need(ok: bool, option: str, value, rule: str):
            if not ok:
                raise ChargenError(f"--{option.replace('_', '-')} {value}: {rule}")

        def finite(x):
            return isinstance(x, (int, float)) and math.isfinite(x)

        for name in ("layers", "hidden", "seq_len", "batch_size", "eval_every", "log_every"):
            value = getattr(self, name)
            may_be_auto = name in ("hidden", "seq_len", "eval_every")
            if may_be_auto and value == "auto":
                continue
            need(isinstance(value, int) and 1 <= value <= 1_000_000, name, value,
                 f"must be {'auto or ' if may_be_auto else ''}a whole number from 1 to 1000000")
        need(self.layers <= 64, "layers", self.layers, "must be at most 64")
        need(self.hidden == "auto" or self.hidden <= 16384, "hidden", self.hidden, "must be auto or at most 16384")
        need(self.cell in CELLS, "cell", self.cell, f"choose one of {', '.join(CELLS)}")
        need(self.tokenizer in TOKENIZER_KINDS, "tokenizer", self.tokenizer, f"choose one of {', '.join(TOKENIZER_KINDS)}")
        need(300 <= self.vocab_size <= 1_000_000, "vocab_size", self.vocab_size, "must be between 300 and 1000000")
        need(self.dropout == "auto" or (finite(self.dropout) and 0 <= self.dropout < 1), "dropout", self.dropout,
             "must be auto or a number in [0, 1)")
        need(self.lr == "auto" or (finite(self.lr) and 0 < self.lr <= 10), "lr", self.lr,
             "must be auto or a number in (0, 10]")
        need(self.schedule in SCHEDULES, "schedule", self.schedule, f"choose {' or '.join(SCHEDULES)}")
        need(finite(self.min_lr_frac) and 0 <= self.min_lr_frac <= 1, "min_lr_frac", self.min_lr_frac, "must be in [0, 1]")
        need(isinstance(self.warmup_steps, int) and 0 <= self.warmup_steps <= MAX_STEPS, "warmup_steps",
             self.warmup_steps, f"must be >= 0 and at most {MAX_STEPS:.0e}")
        need(self.weight_decay == "auto" or (finite(self.weight_decay) and 0 <= self.weight_decay <= 1), "weight_decay",
             self.weight_decay, "must be auto or a number in [0, 1]")
        need(finite(self.grad_clip) and self.grad_clip > 0, "grad_clip", self.grad_clip, "must be a number > 0")
        need(self.max_steps is None or (isinstance(self.max_steps, int) and 1 <= self.max_steps <= MAX_STEPS),
             "max_steps", self.max_steps, f"must be a whole number >= 1 and at most {MAX_STEPS:.0e}")
        need(self.max_time is None or (finite(self.max_time) and 0 < self.max_time <= MAX_SECONDS), "max_time",
             self.max_time, "must be > 0 and at most a year (e.g. 90s, 5m, 2h)")
        need(self.epochs is None or (finite(self.epochs) and 0 < self.epochs <= MAX_EPOCHS), "epochs", self.epochs,
             f"must be a number > 0 and at most {MAX_EPOCHS:.0e}")
        need(finite(self.val_frac) and 0 <= self.val_frac < 1, "val_frac", self.val_frac, "must be in [0, 1)")
        need(isinstance(self.eval_tokens, int) and self.eval_tokens >= 0, "eval_tokens", self.eval_tokens,
             "must be a whole number >= 0 (0 scores the whole validation split)")
        need(isinstance(self.preview_length, int) and 0 <= self.preview_length <= MAX_PREVIEW_LENGTH,
             "preview_length", self.preview_length, f"must be between 0 and {MAX_PREVIEW_LENGTH}")
        need(isinstance(self.seed, int) and -(1 << 63) <= self.seed < 1 << 64, "seed", self.seed,
             "must be a whole number that fits in 64 bits")
        need(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "choose auto, fp32 or bf16")
        need(self.normalize in (None, "NFC", "NFKC"), "normalize", self.normalize, "choose NFC or NFKC")
        return self

    def model_config(self, vocab_size: int, dropout: float) -> ModelConfig:
        assert self.hidden != "auto", "settle --hidden auto first (plan_shape)"
        return ModelConfig(vocab_size=vocab_size, cell=self.cell, layers=self.layers, hidden=self.hidden,
                           dropout=dropout, tie_weights=self.tie_weights, skip_connections=self.skip_connections)


# With --dropout or --weight-decay auto and a time budget, steps AUTO_TIMING_STEPS[0]..[1] are timed
# (their median) to learn how many epochs the budget allows; the auto options are set then (the
# first steps are warm-up anyway). The timed steps run without dropout, so they can be quicker
# than the rest: the plan can run high (bench/HISTORY.md); the auto rules were tuned with
# this estimate.
AUTO_TIMING_STEPS = (10, 100)
# An evaluation only runs forward, about a third of the work per token of a training step.
EVAL_COST_PER_TOKEN = 1 / 3


DROPOUT_FREE_EPOCHS = 7  # auto_dropout: none while the text is read at most this many times


def auto_dropout(planned_epochs: float) -> float:
    """The dropout for a run that will read its training text ``planned_epochs`` times.

    The more often a network sees the same text, the more it memorises it. Measured on Tiny
    Shakespeare (bench/HISTORY.md): in a 20-minute run on a 2-core CPU, 2x512 reading the
    text ~10 times did better with 0.2 than 0.3, and ~20 times, 0.3 held the validation loss flat
    where 0.1 let it climb from the fifth minute on. In 5 minutes, 2x384 reading it 5-7 times did
    better without dropout (1.3979-1.4039 in five runs) than with the 0.1-0.13 an earlier rule
    gave it (1.4037-1.4196 in five); dropout also costs those runs 5-10% of their steps (the
    fused two-layer kernel cannot take it). So: none up to 7 epochs, 0.2 at 10, then 0.1 more per
    doubling, at most 0.4.
    """
    if planned_epochs <= DROPOUT_FREE_EPOCHS:
        return 0.0
    if planned_epochs < 10:
        return round(0.2 * math.log2(planned_epochs / DROPOUT_FREE_EPOCHS) / math.log2(10 / DROPOUT_FREE_EPOCHS), 2)
    return round(min(0.2 + 0.1 * math.log2(planned_epochs / 10), 0.4), 2)


def auto_weight_decay(planned_epochs: float) -> float:
    """The AdamW weight decay for a run that will read its training text ``planned_epochs`` times.

    Like the dropout, it must grow as the text is read more often. Measured on Tiny Shakespeare
    with 2x512 (bench/HISTORY.md): in a 5-minute run (~5 epochs) 0.3 beat 0.1 and 1.0; in a
    20-minute run (~18 epochs) 0.6 beat 0.3. So: 0.3 up to 5 epochs, 0.15 more per doubling, at
    most 1.0. (No run has shown that a text read only once or twice wants less.)
    """
    if planned_epochs <= 5:
        return 0.3
    return round(min(0.3 + 0.15 * math.log2(planned_epochs / 5), 1.0), 2)


def auto_lr(planned_epochs: float) -> float:
    """The peak learning rate for a run that will read its training text ``planned_epochs`` times.

    Measured on Tiny Shakespeare with 2x512 (bench/HISTORY.md): in a 5-minute run (~5
    epochs) 5e-3 beat 3e-3, 4e-3 and 7e-3; in a 20-minute run (~18 epochs) 7e-3 beat 5e-3 and
    1e-2. A longer run can afford larger steps before its schedule winds down, and with AdamW
    the rate also scales the weight decay. So: 5e-3 up to 5 epochs, 7e-3 from 10 on, and in
    between along log2(epochs).
    """
    if planned_epochs <= 5:
        return 5e-3
    return round(5e-3 + 2e-3 * min(math.log2(planned_epochs / 5), 1.0), 5)


# Options that may be given as "auto", and the rule that settles each from the planned epochs.
AUTO_RULES = {"dropout": auto_dropout, "weight_decay": auto_weight_decay, "lr": auto_lr}
# What an auto option is while a time budget's steps are being timed (the lr warms up towards it).
AUTO_WHILE_TIMING = {"dropout": 0.0, "weight_decay": auto_weight_decay(0), "lr": auto_lr(0)}


# --hidden and --seq-len auto. Without a time budget: 2x512 and 64-token windows, the shape the
# rules above were tuned on. A --max-time budget can be too short to train that model: a
# narrower one reads more text in the same time and ends lower, and while the text is read only
# a few times, shorter windows (more, smaller updates) help. Measured on Tiny Shakespeare on a
# 2-core CPU (bench/HISTORY.md): in 5 minutes 2x384 with 32-token windows gave 1.4044,
# 2x512 1.4300 (32) and 1.4381 (64), 2x384 with 64-token windows 1.4334; in 20 minutes 2x512 with
# 64 gave 1.3559 and with 32 1.3707.
DEFAULT_HIDDEN, DEFAULT_SEQ_LEN = 512, 64
WIDTHS = (512, 448, 384, 320, 256)  # what --hidden auto picks among, widest first
SHORT_SEQ_LEN = 32
# A real run reads ~70% of the tokens the probe's speed implies: the probe leaves out the
# optimizer, the evaluations and the loop. (5 minutes here: 2x384 probed ~25k tokens/s and read
# 16.6k a second; 2x512 ~10.5k and 8.1k.)
PROBE_EFFICIENCY = 0.7
# A model must be able to read this many tokens per parameter in its budget. As planned from
# this session's probes: in 5 minutes here 2x512 could read 0.5-0.6 and 2x448 1.1-1.2, 2x384
# 2.0-2.3 (the best of the 5-minute runs); in 20 minutes 2x512 1.8-2.5 (the best there).
TOKENS_PER_PARAMETER = 1.5
# Short windows pay while the text is read at most this many times. As planned: 2x384 in 5
# minutes 4.5-5.3 epochs of Tiny Shakespeare (32 better), 2x512 in 20 minutes 7.7-10.6 (64
# better); the threshold sits about as far from each.
SHORT_SEQ_MAX_EPOCHS = 6.5
# The first probe step warms up (kernel selection, allocation); the fastest of the rest counts.
# Fewer steps let a slow spell of a shared machine decide the width: timing 2x384 with 5 steps
# gave 13.9k-20.6k tokens/s in six probes in a row on a 2-core AMD EPYC, once below the 17.2k
# that 2x384 needs for 5 minutes (one 5-minute run fell to 2x320 that way; 2x320 had given 1.4342
# against 1.3979-1.4039 for 2x384); timing 11 steps, 20.4k-24.3k. It costs ~2 s more probing.
PROBE_STEPS = 12
# --eval-every auto: evaluate after this many training tokens, 800 steps of the default 32 x 64,
# whatever the window. Scoring Tiny Shakespeare's validation split (111,540 tokens) costs about
# as much as 40,000 training tokens: every 1.6M tokens that is ~2.5% of the budget, which a
# 5-minute run turns into steps (every 0.8M tokens it was ~5-6%, ~17 s of 300 on a 2-core CPU).
EVAL_EVERY_TOKENS = 800 * 32 * 64


def plan_shape(hidden: int | str, seq_len: int | str, seconds: float, train_tokens: int,
               parameters: Callable[[int], int], tokens_per_second: Callable[[int, int], float]) -> tuple[int, int]:
    """``--hidden`` and ``--seq-len`` for a budget of ``seconds``, settling whichever is ``auto``.

    The width is the widest of WIDTHS that can read TOKENS_PER_PARAMETER tokens per parameter
    in the budget, at PROBE_EFFICIENCY times the speed ``tokens_per_second(width, seq_len)``
    measures (the narrowest if none can). The window is SHORT_SEQ_LEN if that width reads the
    training text at most SHORT_SEQ_MAX_EPOCHS times, else DEFAULT_SEQ_LEN. Numbers given stay.
    """
    window = SHORT_SEQ_LEN if seq_len == "auto" else seq_len
    widths = WIDTHS if hidden == "auto" else (hidden,)
    for width in widths:
        tokens = PROBE_EFFICIENCY * tokens_per_second(width, window) * seconds
        if tokens >= TOKENS_PER_PARAMETER * parameters(width):
            break
    if seq_len == "auto" and tokens > SHORT_SEQ_MAX_EPOCHS * train_tokens:
        window = DEFAULT_SEQ_LEN
    return width, window


def measure_speed(config: "TrainConfig", vocab_size: int, hidden: int, seq_len: int, rows: int,
                  tokens: np.ndarray, device: torch.device, autocast: Callable) -> float:
    """Training tokens per second of a fresh ``hidden``-wide model: forward and backward of
    ``rows`` windows of ``seq_len`` real tokens, no dropout, fastest of PROBE_STEPS - 1 timed steps."""
    model = CharLM(replace(config, hidden=hidden).model_config(vocab_size, 0.0)).to(device).train()
    window = torch.from_numpy(np.asarray(tokens[:rows * (seq_len + 1)], dtype=np.int64))
    window = window.view(rows, seq_len + 1).to(device)
    fastest = math.inf
    for step in range(PROBE_STEPS):
        started = time.perf_counter()
        with autocast():
            logits, _ = model(window[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), window[:, 1:].flatten())
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()
        if step:
            fastest = min(fastest, time.perf_counter() - started)
    return rows * seq_len / max(fastest, 1e-9)


# ---- events: what the loop tells the outside world -------------------------------------------

@dataclass
class RunStarted:
    run_dir: Path
    config: TrainConfig
    model_config: ModelConfig
    num_parameters: int
    device: str
    precision: str
    train_tokens: int
    val_tokens: int
    steps_per_epoch: int
    total_steps: int | None
    start_step: int
    # What --hidden / --seq-len auto chose for a time budget: hidden, seq_len, budget_seconds and
    # the probed tokens_per_second by width (None when nothing was probed).
    shape_plan: dict | None = None
    # What --precision auto timed and chose: precision, hidden, seq_len and tokens_per_second by
    # precision (None when nothing was timed).
    precision_plan: dict | None = None


@dataclass
class StepDone:
    step: int
    epoch: float
    elapsed: float
    loss: float
    lr: float
    grad_norm: float
    chars_per_sec: float
    progress: float  # fraction of the budget used, 0..1
    skipped_steps: int


@dataclass
class AutoChosen:
    """``--dropout``, ``--weight-decay`` and ``--lr auto`` settled from the budget's planned epochs.
    An option given as a number is None here: it was not chosen."""
    step: int
    planned_epochs: float
    dropout: float | None
    weight_decay: float | None
    lr: float | None

    def describe(self) -> str:
        """What was chosen, e.g. ``dropout 0.3, weight decay 0.6, lr 0.007``."""
        chosen = {"dropout": self.dropout, "weight decay": self.weight_decay, "lr": self.lr}
        return ", ".join(f"{name} {value:g}" for name, value in chosen.items() if value is not None)


@dataclass
class EvalDone:
    step: int
    val_loss: float  # nats per char
    best_val_loss: float
    is_best: bool
    sample: str


@dataclass
class CheckpointSaved:
    path: Path
    step: int


@dataclass
class RunFinished:
    run_dir: Path
    step: int
    elapsed: float
    best_val_loss: float | None
    reason: str  # "max_steps", "max_time", "epochs", "interrupted"


Event = RunStarted | StepDone | AutoChosen | EvalDone | CheckpointSaved | RunFinished


class TrainingAborted(KeyboardInterrupt):
    """A second Ctrl-C/SIGTERM: stopped at once without saving; the last checkpoint is intact."""

    def __init__(self, run_dir: Path, signal_number: int):
        self.run_dir, self.signal_number = run_dir, signal_number
        super().__init__(f"aborted; the last checkpoint in {run_dir} is intact")


class TrainingInterrupted(Exception):
    """Training stopped early on request (Ctrl-C, SIGTERM); a checkpoint was written."""

    def __init__(self, run_dir: Path, step: int, signal_number: int | None):
        self.run_dir, self.step, self.signal_number = run_dir, step, signal_number
        super().__init__(f"interrupted at step {step}; resume with: chargen train --resume {run_dir}")


# ---- devices ---------------------------------------------------------------------------------

def pick_device(requested: str) -> torch.device:
    """``auto`` takes CUDA, then Apple's MPS, then the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested not in ("cpu", "cuda", "mps") and not requested.startswith("cuda:"):
        raise ChargenError(f"--device {requested}: choose auto, cpu, cuda or mps")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ChargenError(f"--device {requested}: no CUDA GPU is available here; use --device cpu")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ChargenError("--device mps: Apple MPS is not available here; use --device cpu")
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto`` uses bf16 autocast where the hardware computes bf16 natively, fp32 elsewhere.

    That is GPUs that support it, and CPUs with AVX512-BF16 or AMX. Other CPUs only emulate bf16,
    which is slower than fp32. On a CPU with native bf16 this is only the candidate: the trainer
    times both precisions and keeps bf16 only where it is faster (``faster_precision``).
    """
    if requested == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if requested == "bf16" and device.type == "mps":
        raise ChargenError("--precision bf16: not supported on MPS; use fp32")
    return requested


# --precision auto on a CPU with native bf16 times a few training steps in both precisions
# (faster_precision). Measured on this project's 2-core machines (bench/HISTORY.md): bf16
# autocast trained 2x512 1.6-1.8x faster than fp32 on an AMD Zen 4 (AVX512-BF16) and on an Intel
# Xeon with AMX, but 0.6-0.7x as fast on an Intel Xeon with AVX512-BF16 and no AMX.
PRECISIONS_TO_TIME = ("fp32", "bf16")


def autocast_for(device: torch.device, precision: str):
    """A zero-argument context factory: bf16 autocast or nothing."""
    if precision != "bf16":
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


# Each training step frees its activations and allocates them again. By default glibc's malloc
# serves blocks over 128 KiB (adjusting upward as they are freed, up to 32 MiB) with mmap, and
# returns freed memory at the top of its heap to the kernel once 128 KiB of it is free: either way
# the next step page-faults the memory in again, each page zeroed by the kernel. Measured on this
# project's 2-core CPU: ~5,000-7,000 faults a step for 2x384 with 32x32 batches, ~17,000 for
# 2x512 with 32x64, up to a quarter of the step's time. Serving every block from the heap (with
# M_MMAP_MAX 0 glibc maps memory only to grow a heap, or when it cannot grow) and keeping up to
# MALLOC_KEEP of freed memory at its top takes that to a few dozen (bench/malloc.py).
MALLOC_KEEP = 1 << 30
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt() parameter numbers


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse the memory a training step frees for the next step, instead of
    handing it back to the kernel. Process-wide; memory in use peaks as before, but what was freed
    stays with the process. True if applied (Linux with glibc), else False and nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, MALLOC_KEEP) == 1


# ---- the loop --------------------------------------------------------------------------------

class Trainer:
    """One training run. Build it with ``Trainer(config, corpus_paths)``, then call ``run()``."""

    def __init__(self, config: TrainConfig, corpus_paths: list[str] | None = None,
                 on_event: Callable[[Event], None] | None = None, resume: str | None = None):
        self._created = time.perf_counter()  # --max-time counts from here: reading the corpus is part of the run
        self.on_event = on_event or (lambda event: None)
        self._stop_signal: int | None = None
        self._stop_requested = threading.Event()
        resumed = load_resumable(resume) if resume else None
        if resumed is not None:
            config = self._config_for_resume(config, resumed, resume)
            corpus_paths = corpus_paths or self._recorded_corpus(resumed, resume)
        self.config = config.validate()
        torch.manual_seed(config.seed)
        # Under torchrun: join the job; each rank trains its own streams of the batch.
        self.dist, self.device = distributed.setup(pick_device(config.device))
        if not self.dist.is_main:
            self.on_event = lambda event: None  # rank 0 alone reports
        if config.batch_size % self.dist.world_size:
            raise ChargenError(f"--batch-size {config.batch_size}: must be divisible by the number of "
                               f"processes ({self.dist.world_size}); it is the total over all of them")
        if self.device.type == "cpu":
            keep_freed_memory()
        self.precision = resolve_precision(config.precision, self.device)
        self.autocast = autocast_for(self.device, self.precision)
        # Native bf16 on a CPU is not always the faster: with auto, timed steps decide (_settle_shape
        # with the shape, else _settle_precision).
        self._precision_to_time = config.precision == "auto" and self.device.type == "cpu" and self.precision == "bf16"
        self.precision_plan: dict | None = None  # what --precision auto measured and chose

        self.run_dir = self.dist.broadcast_object(  # a generated name is rank 0's
            resumed.path.parent if resumed else make_run_dir(config.out, corpus_paths))
        check_writable(self.run_dir, "--resume" if resumed else "--out")  # fail before reading the corpus
        init = load_checkpoint(config.init_from) if config.init_from and not resumed else None
        tokenizer = resumed.tokenizer if resumed else self._init_tokenizer(init, corpus_paths)
        with self.dist.local_main_first():  # one process per machine encodes; the rest hit the cache
            self.corpus: Corpus = load_corpus(
                corpus_paths, tokenizer=tokenizer, tokenizer_kind=config.tokenizer,
                vocab_size=config.vocab_size, normalize=config.normalize, encoding=config.encoding,
                cache_dir=self.run_dir.parent / ".cache")
        self.tokenizer = self.corpus.tokenizer
        train_tokens, self.val_tokens = self.corpus.split(config.val_frac)
        self.corpus_fingerprint = corpus_fingerprint(train_tokens)
        if resumed:
            self._check_same_corpus(resumed, train_tokens)
        self.shape_plan: dict | None = None  # what --hidden / --seq-len auto measured and chose
        config = self.config = self._settle_shape(config, train_tokens, init)
        if config.eval_every == "auto":
            config = self.config = replace(config, eval_every=max(1, round(
                EVAL_EVERY_TOKENS / (config.batch_size * config.seq_len))))
        self.batches = StreamBatches(train_tokens, config.batch_size, config.seq_len,
                                     streams=self.dist.streams(config.batch_size))
        if config.val_frac > 0 and len(self.val_tokens) < 2:
            raise ChargenError(f"--val-frac {config.val_frac}: the validation split is empty for this "
                               "small corpus; raise it or use --val-frac 0")
        self.chars_per_token = self.corpus.tokenizer.count_chars(np.asarray(train_tokens[:1 << 20])) / \
            max(min(len(train_tokens), 1 << 20), 1)

        # The auto options are settled at this step (None: nothing to settle; a resumed run keeps its own).
        self._auto_step = None
        if any(getattr(config, name) == "auto" for name in AUTO_RULES) and not resumed:
            self._auto_step = AUTO_TIMING_STEPS[1] if config.max_time else 0
        self._timing_marks: list[float] = []  # when each timed step started (elapsed seconds)
        if not (resumed or init):
            check_model_fits(config, self.tokenizer.vocab_size, self.device)
        if self._precision_to_time:
            self._settle_precision(config, train_tokens)
        if resumed:
            self.model = resumed.model
        elif init:
            self.model = grow_vocab(init.model, self.tokenizer.vocab_size) if config.extend_vocab else init.model
            self.model.set_dropout(self._initial("dropout"))
        else:
            self.model = CharLM(config.model_config(self.tokenizer.vocab_size, self._initial("dropout")))
        self.model.to(self.device).train()
        self.peak_lr = self._initial("lr")
        self.optimizer = make_optimizer(self.model, self._initial("weight_decay"), self.peak_lr)
        train_model = self.dist.wrap_model(self.model, self.device)  # DDP under torchrun
        self.step_fn = torch.compile(train_model) if config.compile else train_model
        if self.dist.enabled:
            torch.manual_seed(config.seed + self.dist.rank)  # own dropout masks for own streams

        self.step, self.elapsed_before, self.skipped_steps = 0, 0.0, 0
        self._last_eval_seconds = 0.0
        self.best_val_loss: float | None = None
        self.state: State = None
        if resumed:
            self._restore(resumed)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChargenError(f"--out {self.run_dir}: cannot create the run directory: "
                               f"{exc.strerror or exc}; choose another --out") from None
        self._lock = None
        if self.dist.is_main:  # the only writer; other ranks would find the lock taken
            self._lock = lock_run_dir(self.run_dir)
            remove_stale_temp_files(self.run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._trim_metrics()
        if self.shape_plan:
            self._log_metrics(step=0, **self.shape_plan)
        if self.precision_plan:
            self._log_metrics(step=0, precision_plan=self.precision_plan)

    # -- set-up helpers --

    @staticmethod
    def _recorded_corpus(resumed, resume: str) -> list[str]:
        """The corpus files a resumed run trained on, with a way forward if they are gone."""
        corpus_paths = resumed.summary.get("corpus", [])
        if not corpus_paths:
            raise ChargenError(f"--resume {resume}: the checkpoint does not record its corpus; "
                               f"give it: chargen train CORPUS --resume {resume}")
        gone = [p for p in corpus_paths if not Path(p).exists()]
        if gone:
            others = f" (and {len(gone) - 1} more of its files)" if len(gone) > 1 else ""
            raise ChargenError(
                f"{gone[0]}: this run's corpus is no longer there{others}; if it moved, give its "
                f"new place: chargen train NEW_PATH --resume {resume}; if it is gone, train a new "
                f"run from these weights: chargen train CORPUS --init-from {resumed.path}")
        return corpus_paths

    @staticmethod
    def _config_for_resume(config: TrainConfig, resumed, resume: str) -> TrainConfig:
        saved = resumed.summary.get("train_config")
        if not isinstance(saved, dict):
            raise ChargenError(f"{resume}: checkpoint has no training state to resume (is it a 'last' checkpoint?)")
        known = {f.name for f in fields(TrainConfig)}
        saved = {"skip_connections": False, **saved}  # runs from before the option had none
        try:
            merged = TrainConfig(**{k: v for k, v in saved.items() if k in known}).validate()
        except ChargenError as exc:
            raise ChargenError(f"{resume}: the saved training config is invalid ({exc}); "
                               "the checkpoint metadata was altered") from None
        if "auto" in (merged.hidden, merged.seq_len):  # a run records the numbers it chose
            raise ChargenError(f"{resume}: the saved training config is invalid (hidden and seq_len "
                               "must be numbers); the checkpoint metadata was altered")
        # An option the user set (it differs from the default) overrides the saved one if it may
        # change (train longer, another device); otherwise it must agree with the run.
        for f in fields(TrainConfig):
            given, default = getattr(config, f.name), f.default
            if f.name in ("out", "init_from", "extend_vocab") or given == default:
                continue
            if f.name in RESUME_OVERRIDABLE:
                setattr(merged, f.name, given)
            elif given != getattr(merged, f.name):
                flag = "--" + f.name.replace("_", "-")
                raise ChargenError(f"{flag} {given}: this run was trained with {flag} "
                                   f"{getattr(merged, f.name)} and a resumed run must keep it; only "
                                   f"{', '.join('--' + n.replace('_', '-') for n in RESUME_OVERRIDABLE)} "
                                   "may change. Start a new run (or --init-from) to change it")
        return merged

    def _check_same_corpus(self, resumed, train_tokens: np.ndarray) -> None:
        """A resumed run must see the very tokens it was trained on, or its data position means nothing."""
        summary = resumed.summary
        want = summary.get("corpus_fingerprint")
        same = (summary.get("train_tokens") in (None, len(train_tokens))
                and (want is None or want == self.corpus_fingerprint))
        if not same:
            raise ChargenError(
                f"{', '.join(str(p) for p in self.corpus.files)}: not the text this run was trained on "
                f"(it had {summary.get('train_tokens', '?'):,} training tokens, this has "
                f"{len(train_tokens):,}); resume with the original corpus, or start a new run from "
                f"these weights with --init-from {resumed.path}")

    def _settle_shape(self, config: TrainConfig, train_tokens: np.ndarray, init) -> TrainConfig:
        """The config with ``--hidden`` and ``--seq-len`` as numbers (``plan_shape`` for auto).

        Only a --max-time budget is measured: rank 0 times a few training steps of each width it
        considers (a few seconds on a 2-core CPU), the others take its choice. Where the
        precision is to be timed, it is timed at the first width, and the rest are probed in the
        faster one. A run started from a checkpoint keeps that model's width.
        """
        hidden = init.model.config.hidden if init else config.hidden
        seq_len = config.seq_len
        vocab, rows = self.tokenizer.vocab_size, config.batch_size // self.dist.world_size
        probe_window = SHORT_SEQ_LEN if seq_len == "auto" else seq_len
        if "auto" in (hidden, seq_len) and config.max_time and len(train_tokens) > rows * (probe_window + 1):
            speeds = {}

            def tokens_per_second(width: int, window: int) -> float:
                if self._precision_to_time:
                    speeds[width] = self._time_precision(config, width, window, train_tokens)
                else:
                    speeds[width] = self._measure_speed(config, width, window, train_tokens, self.precision)
                return speeds[width]

            def parameters(width: int) -> int:
                with torch.device("meta"):
                    return CharLM(replace(config, hidden=width).model_config(vocab, 0.0)).num_parameters()

            plan = None
            if self.dist.is_main:
                seconds = config.max_time - (time.perf_counter() - self._created)
                plan = plan_shape(hidden, seq_len, seconds, len(train_tokens), parameters, tokens_per_second)
                self.shape_plan = {"hidden": plan[0], "seq_len": plan[1], "budget_seconds": round(seconds, 1),
                                   "tokens_per_second": {str(w): round(v) for w, v in speeds.items()}}
                plan = *plan, self.precision
            hidden, seq_len, self.precision = self.dist.broadcast_object(plan)
            self.autocast = autocast_for(self.device, self.precision)
            self._precision_to_time = False
            torch.manual_seed(config.seed)  # the probes drew initial weights: start afresh, as without them
        return replace(config, hidden=DEFAULT_HIDDEN if hidden == "auto" else hidden,
                       seq_len=DEFAULT_SEQ_LEN if seq_len == "auto" else seq_len)

    def _settle_precision(self, config: TrainConfig, train_tokens: np.ndarray) -> None:
        """``--precision auto`` on a CPU with native bf16, not timed with the shape: rank 0 times
        both at the run's own shape (known by now to fit the corpus and the memory)."""
        if self.dist.is_main:
            self._time_precision(config, config.hidden, config.seq_len, train_tokens)
        self.precision = self.dist.broadcast_object(self.precision)
        self.autocast = autocast_for(self.device, self.precision)
        self._precision_to_time = False
        torch.manual_seed(config.seed)  # as in _settle_shape

    def _time_precision(self, config: TrainConfig, width: int, window: int, train_tokens: np.ndarray) -> float:
        """Time both precisions at this shape, take the faster (``faster_precision``), return its speed."""
        timed = {precision: self._measure_speed(config, width, window, train_tokens, precision)
                 for precision in PRECISIONS_TO_TIME}
        self.precision, self._precision_to_time = faster_precision(timed), False
        self.precision_plan = {"precision": self.precision, "hidden": width, "seq_len": window,
                               "tokens_per_second": {p: round(v) for p, v in timed.items()}}
        return timed[self.precision]

    def _measure_speed(self, config: TrainConfig, width: int, window: int, train_tokens: np.ndarray,
                       precision: str) -> float:
        """``measure_speed`` for this run (all its processes together)."""
        try:
            return self.dist.world_size * measure_speed(
                config, self.tokenizer.vocab_size, width, window, config.batch_size // self.dist.world_size,
                train_tokens, self.device, autocast_for(self.device, precision))
        except torch.cuda.OutOfMemoryError:
            raise ChargenError(f"out of GPU memory timing a {width}-wide model for --hidden auto; "
                               "lower --batch-size, or give --hidden and --seq-len") from None

    def _init_tokenizer(self, init, corpus_paths) -> Tokenizer | None:
        if init is None:
            return None
        tokenizer = init.tokenizer
        if isinstance(tokenizer, CharTokenizer):
            corpus_chars = CharTokenizer.train(iter_text(find_text_files(corpus_paths), self.config.encoding),
                                               tokenizer.normalize).chars
            missing = set(corpus_chars) - set(tokenizer.chars)
            if missing and not self.config.extend_vocab:
                raise ChargenError(f"the corpus has characters {self.config.init_from} never saw: "
                                   f"{describe_chars(missing)}; pass --extend-vocab to add them")
            if missing:
                tokenizer = tokenizer.extended(missing)
        return tokenizer

    def _restore(self, resumed) -> None:
        summary, tensors, path = resumed.summary, resumed.training_state, resumed.path

        def bad(what: str) -> ChargenError:
            return ChargenError(f"{path}: {what}; the checkpoint was altered, resume is impossible "
                                "(the weights can still be used with --init-from)")

        self.step = summary["step"]
        self.elapsed_before = float(summary.get("elapsed", 0.0))
        if self.config.lr == "auto":  # keep the rate this run chose
            peak_lr = summary.get("peak_lr")
            if not isinstance(peak_lr, (int, float)) or not 0 < peak_lr <= 10:
                raise bad("its peak learning rate is missing or invalid")
            self.peak_lr = float(peak_lr)
        self.skipped_steps = summary.get("skipped_steps", 0)
        self.best_val_loss = summary.get("best_val_loss")
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        groups = summary.get("optimizer_param_groups")
        if not groups or len(groups) != len(self.optimizer.param_groups) or any(
                not isinstance(g.get("params"), list) or len(g["params"]) != len(own["params"])
                for g, own in zip(groups, self.optimizer.param_groups)):
            raise bad("its optimizer settings do not match the model")
        optimizer_state = {"state": {}, "param_groups": groups}
        for name, tensor in tensors.items():
            if not name.startswith("optim."):
                continue
            _, index, key = (name.split(".", 2) + ["", ""])[:3]
            if not index.isdigit() or int(index) >= len(params) or key not in ("step", "exp_avg", "exp_avg_sq"):
                raise bad(f"unexpected optimizer tensor {name}")
            want = () if key == "step" else tuple(params[int(index)].shape)
            if tuple(tensor.shape) != want or not tensor.is_floating_point() or not torch.isfinite(tensor).all():
                raise bad(f"optimizer tensor {name} has the wrong shape, type or non-finite values")
            optimizer_state["state"].setdefault(int(index), {})[key] = tensor
        try:
            self.optimizer.load_state_dict(optimizer_state)
            if "rng.torch" in tensors:
                torch.set_rng_state(tensors["rng.torch"])
            if "rng.cuda" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise bad(f"its optimizer or RNG state does not load ({exc})") from None
        if "rnn_state.h" in tensors:
            c = self.model.config
            want = (c.layers, self.config.batch_size, c.hidden)
            h, cell = tensors["rnn_state.h"], tensors.get("rnn_state.c")
            for t in (h, cell) if cell is not None else (h,):
                if tuple(t.shape) != want or not t.is_floating_point() or not torch.isfinite(t).all():
                    raise bad("its carried recurrent state has the wrong shape or non-finite values")
            if (cell is not None) != c.cell.startswith("lstm"):  # LSTMs carry (h, c), others h
                raise bad("its carried recurrent state does not fit the cell")
            h = h.to(self.device)
            self.state = (h, cell.to(self.device)) if cell is not None else h
            self.state = self.dist.my_state(self.state, self.config.batch_size)
        ranks_rng = tensors.get("rng.torch.ranks")
        if self.dist.enabled and ranks_rng is not None and len(ranks_rng) == self.dist.world_size:
            torch.set_rng_state(ranks_rng[self.dist.rank].clone())

    def _trim_metrics(self) -> None:
        """On resume, drop metric lines past the resumed step so none is duplicated."""
        if not self.dist.is_main or not self.metrics_path.exists():
            return
        try:
            text = self.metrics_path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ChargenError(f"{self.metrics_path}: cannot read the metrics log: {exc.strerror or exc}; "
                               "move it aside to resume") from None
        kept = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
                if isinstance(record, dict) and isinstance(record.get("step", 0), (int, float)) \
                        and record.get("step", 0) <= self.step:
                    kept.append(line)
            except ValueError:
                continue  # a line torn by a crash
        if len(kept) == len(text.splitlines()) and text.endswith("\n"):
            return  # nothing to drop: leave the file alone
        atomic_write_bytes(self.metrics_path, ("\n".join(kept) + "\n" if kept else "").encode(), "metrics log")

    # -- budget --

    def total_steps(self) -> int | None:
        c = self.config
        limits = [c.max_steps] if c.max_steps else []
        if c.epochs:
            limits.append(math.ceil(c.epochs * len(self.batches)))
        if not limits and not c.max_time:
            limits.append(10 * len(self.batches))  # the default budget: 10 epochs
        return min(limits) if limits else None

    def progress(self, elapsed: float) -> float:
        """Fraction of the budget used: drives the lr schedule and the progress bar."""
        fractions = []
        total = self.total_steps()
        if total:
            fractions.append(self.step / total)
        if self.config.max_time:
            fractions.append(elapsed / self.config.max_time)
        return min(max(fractions), 1.0)

    def _initial(self, option: str) -> float:
        """An auto-able option as given; for auto, what a step or epoch budget implies. A time budget
        is turned into epochs after timing a few steps (``_settle_auto``): until then,
        ``AUTO_WHILE_TIMING``."""
        value = getattr(self.config, option)
        if value != "auto":
            return value
        total = self.total_steps()
        if self.config.max_time or not total:
            return AUTO_WHILE_TIMING[option]
        return AUTO_RULES[option](total / len(self.batches))

    def _settle_auto(self, elapsed: float) -> None:
        """Settle the auto options from the epochs the budget allows, at the rate measured so far."""
        c = self.config
        total = self.total_steps()
        budget_steps = [total] if total else []
        if c.max_time:
            # The median step, not the mean: a few seconds of contention for the CPU while the
            # steps are timed (another program starting) would otherwise shrink the plan, and
            # with it every choice of the run. An evaluation in the window is skipped the same way.
            seconds_per_step = max(float(np.median(np.diff(self._timing_marks))), 1e-9)
            # Evaluations share the budget: each costs the forward pass over the scored tokens.
            scored = min(c.eval_tokens or len(self.val_tokens), len(self.val_tokens))
            eval_steps = scored * EVAL_COST_PER_TOKEN / (c.batch_size * c.seq_len)
            seconds_per_step *= 1 + eval_steps / c.eval_every
            budget_steps.append(self.step + max(c.max_time - elapsed, 0.0) / seconds_per_step)
        epochs = min(budget_steps) / len(self.batches)
        chosen = {name: rule(epochs) if getattr(c, name) == "auto" else None for name, rule in AUTO_RULES.items()}
        if chosen["dropout"] is not None:
            self.model.set_dropout(chosen["dropout"])
        if chosen["weight_decay"] is not None:
            self.optimizer.param_groups[0]["weight_decay"] = chosen["weight_decay"]  # group 0: the matrices
        if chosen["lr"] is not None:
            self.peak_lr = chosen["lr"]
        self._auto_step = None
        self._log_metrics(step=self.step, planned_epochs=round(epochs, 2),
                          **{name: value for name, value in chosen.items() if value is not None})
        self.on_event(AutoChosen(self.step, epochs, **chosen))

    def lr_at(self, progress: float) -> float:
        c = self.config
        if self.step < c.warmup_steps:
            return self.peak_lr * (self.step + 1) / c.warmup_steps
        floor = self.peak_lr * c.min_lr_frac
        if c.schedule == "linear":
            return floor + (self.peak_lr - floor) * (1 - progress)
        return floor + (self.peak_lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def finished_reason(self, elapsed: float) -> str | None:
        c = self.config
        if c.max_steps and self.step >= c.max_steps:
            return "max_steps"
        # Leave room for the final evaluation, so the whole run fits in --max-time.
        if c.max_time and elapsed + self._last_eval_seconds >= c.max_time:
            return "max_time"
        total = self.total_steps()
        if total and self.step >= total:
            return "epochs"
        return None

    # -- stopping on request --

    def request_stop(self, signal_number: int | None = None) -> None:
        """Finish the current step, save a checkpoint and stop (what Ctrl-C does)."""
        self._stop_signal = signal_number
        self._stop_requested.set()

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self._stop_requested.is_set():
                # Second Ctrl-C: abort now. A save in progress is abandoned (its temp file is
                # removed), so the last complete checkpoint stays as it was.
                raise TrainingAborted(self.run_dir, signum)
            self.request_stop(signum)

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    # -- the run --

    def run(self) -> RunFinished:
        """Train until the budget is used up or a stop is requested; returns the summary event."""
        c = self.config
        self.on_event(RunStarted(self.run_dir, c, self.model.config, self.model.num_parameters(),
                                 str(self.device), self.precision, len(self.batches.tokens),
                                 len(self.val_tokens), len(self.batches), self.total_steps(), self.step,
                                 self.shape_plan, self.precision_plan))
        previous_handlers = self._install_signal_handlers()
        try:
            return self._loop()
        except torch.cuda.OutOfMemoryError:
            raise ChargenError(f"out of GPU memory at step {self.step + 1}; lower --batch-size, --seq-len "
                               f"or --hidden (checkpoints already in {self.run_dir} are intact)") from None
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            if self._lock is not None:
                self._lock.close()  # releases the run directory for a later --resume
                self._lock = None
            if self.dist.enabled:
                self.step_fn = self.model  # free DDP while the group lives: freed later, it can hang
                self.dist.close()

    def _loop(self) -> RunFinished:
        c = self.config
        vocab = self.model.config.vocab_size
        chars_per_step = c.batch_size * c.seq_len * self.chars_per_token
        started = self._created
        window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
        bad_in_a_row = 0
        reason = None
        while True:
            elapsed = self.elapsed_before + time.perf_counter() - started
            # All ranks stop together and follow one clock, or their collectives stop matching.
            elapsed, stop = self.dist.agree(elapsed, self._stop_requested.is_set())
            reason = self.finished_reason(elapsed)
            if reason or stop:
                break
            if self._auto_step is not None and self.step >= AUTO_TIMING_STEPS[0]:
                self._timing_marks.append(elapsed)
            if self.step == self._auto_step:
                self._settle_auto(elapsed)
            progress = self.progress(elapsed)
            lr = self.lr_at(progress)
            for group in self.optimizer.param_groups:
                group["lr"] = lr

            if self.step % len(self.batches) == 0:
                self.state = None  # a new epoch starts the streams over: nothing to carry
            x, y = self.batches[self.step]
            x, y = self._to_device(x), self._to_device(y)
            with self.autocast():
                logits, state = self.step_fn(x, self.state)
            loss = F.cross_entropy(logits.float().view(-1, vocab), y.reshape(-1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # The norm before clipping is what tells you training is unstable: log that one.
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip).item()
            loss_value = self.dist.mean(loss).item()  # the whole batch's loss, the same on every rank
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                # Skip the update: the weights stay as they were; move on to the next batch.
                self.skipped_steps += 1
                bad_in_a_row += 1
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.state = None
                if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
                    raise ChargenError(self._diverged_message(bad_in_a_row))
                continue
            bad_in_a_row = 0
            self.optimizer.step()
            self.state = detach_state(state)
            self.step += 1

            window_steps += 1
            window_loss += loss_value
            now = time.perf_counter()
            elapsed = self.elapsed_before + now - started
            chars_per_sec = window_steps * chars_per_step / max(now - window_start, 1e-9)
            self.on_event(StepDone(self.step, self.step / len(self.batches), elapsed,
                                   loss_value / self.chars_per_token, lr,
                                   grad_norm, chars_per_sec, self.progress(elapsed), self.skipped_steps))
            if self.step % c.log_every == 0:
                self._log_metrics(step=self.step, time=round(elapsed, 3),
                                  train_loss=window_loss / window_steps / self.chars_per_token,
                                  lr=lr, grad_norm=grad_norm, chars_per_sec=round(chars_per_sec, 1))
                window_start, window_steps, window_loss = now, 0, 0.0
            if self.step % c.eval_every == 0:
                self._evaluate_and_save(elapsed)

        elapsed = self.elapsed_before + time.perf_counter() - started
        if reason is None:  # stopped on request: keep what we have, say how to go on
            self._save(LAST_NAME, elapsed)
            raise TrainingInterrupted(self.run_dir, self.step, self._stop_signal)
        if self.step % c.eval_every != 0 or not self.dist.main_says((self.run_dir / LAST_NAME).exists()):
            self._evaluate_and_save(elapsed)
        finished = RunFinished(self.run_dir, self.step, elapsed, self.best_val_loss, reason)
        self.on_event(finished)
        return finished

    def _diverged_message(self, bad_in_a_row: int) -> str:
        last = self.run_dir / LAST_NAME
        where = (f"the last good checkpoint is {last}; continue from it with a lower rate: "
                 f"chargen train --resume {self.run_dir} --lr {self.peak_lr / 3:.2g}"
                 if last.exists() else "no checkpoint was saved yet")
        return (f"training diverged at step {self.step}: the loss or gradients were NaN/inf for "
                f"{bad_in_a_row} steps in a row (skipped, not applied); lower the learning rate "
                f"(--lr, now {self.peak_lr:g}) or --grad-clip; {where}")

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _evaluate_and_save(self, elapsed: float) -> None:
        started = time.perf_counter()
        self._evaluate_and_save_now(elapsed)
        # What the final one will take too: --max-time keeps room for it (finished_reason).
        self._last_eval_seconds = time.perf_counter() - started

    def _evaluate_and_save_now(self, elapsed: float) -> None:
        if self.config.val_frac > 0:
            result = evaluate(self.model, self.val_tokens, self.tokenizer, autocast=self.autocast,
                              max_tokens=self.config.eval_tokens or None, dist=self.dist)
            val_loss = result.nats_per_char
            is_best = self.best_val_loss is None or val_loss < self.best_val_loss
            if is_best:
                self.best_val_loss = val_loss
            sample = self.preview() if self.dist.is_main else ""
            self._log_metrics(step=self.step, time=round(elapsed, 3), val_loss=val_loss,
                              val_bpc=result.bits_per_char)
            self.on_event(EvalDone(self.step, val_loss, self.best_val_loss, is_best, sample))
        else:
            is_best = True  # without a validation split the newest model is the best we know
        self._save(LAST_NAME, elapsed)
        if is_best:
            self._save(BEST_NAME, elapsed, with_training_state=False)

    def preview(self) -> str:
        """A short sample from the current model, for the dashboard."""
        if not self.config.preview_length:
            return ""
        was_training = self.model.training
        self.model.eval()
        sampler = Sampler(self.model, self.tokenizer)
        text = sampler.generate(SamplingSettings(temp=0.8, length=self.config.preview_length, seed=0))[0]
        self.model.train(was_training)
        return text

    def _log_metrics(self, **record) -> None:
        if not self.dist.is_main:
            return
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise ChargenError(f"{self.metrics_path}: cannot write metrics: {exc.strerror or exc}; free "
                               f"some disk space, then continue with: chargen train --resume {self.run_dir}") from None

    def summary(self, elapsed: float) -> dict:
        return {
            "step": self.step,
            "epoch": self.step / len(self.batches),
            "elapsed": elapsed,
            "skipped_steps": self.skipped_steps,
            "best_val_loss": self.best_val_loss,
            "train_tokens": len(self.batches.tokens),
            "val_tokens": len(self.val_tokens),
            "corpus": [str(p.resolve()) for p in self.corpus.files],
            "corpus_fingerprint": self.corpus_fingerprint,
            "train_config": asdict(self.config),
            "peak_lr": self.peak_lr,  # --lr, or what auto chose
            "precision": self.precision,
            "saved_at": datetime.now().isoformat(timespec="seconds"),
        }

    def training_state(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        for index, values in self.optimizer.state_dict()["state"].items():
            for key, value in values.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
        if self.dist.enabled:  # each rank's own generator, so a resumed run draws the same masks
            tensors["rng.torch.ranks"] = self.dist.gather_rng(torch.get_rng_state())
        state = self.dist.gather_state(self.state)  # all streams, in order, from every rank
        if state is not None:
            h, c = state if isinstance(state, tuple) else (state, None)
            tensors["rnn_state.h"] = h
            if c is not None:
                tensors["rnn_state.c"] = c
        return tensors

    def _save(self, name: str, elapsed: float, with_training_state: bool = True) -> None:
        if any(not torch.isfinite(p).all() for p in self.model.parameters()):
            raise ChargenError(f"step {self.step}: the weights hold NaN/inf; not saving them over "
                               f"good checkpoints. Lower --lr (now {self.peak_lr:g})")
        summary = self.summary(elapsed)
        summary["optimizer_param_groups"] = self.optimizer.state_dict()["param_groups"]
        training_state = self.training_state() if with_training_state else None  # every rank takes part
        if not self.dist.is_main:
            return  # rank 0 alone writes
        try:
            save_checkpoint(self.run_dir / name, self.model, self.tokenizer, summary, training_state)
        except ChargenError as exc:  # disk full, read-only: say how to go on once it is fixed
            then = (f"then continue with: chargen train --resume {self.run_dir}"
                    if (self.run_dir / LAST_NAME).exists() else "then start the run again")
            raise ChargenError(f"{exc}; {then}") from None
        self.on_event(CheckpointSaved(self.run_dir / name, self.step))


def load_resumable(resume: str | os.PathLike) -> Checkpoint:
    """The checkpoint ``--resume`` continues from: a run directory's last one, or a file."""
    path = Path(resume)
    if path.is_dir():
        if not (path / LAST_NAME).is_file():
            raise ChargenError(f"--resume {path}: no {LAST_NAME} in this directory, nothing to resume "
                               "(a run that never saved one starts over; --init-from takes a best checkpoint)")
        path = path / LAST_NAME
    resumed = load_checkpoint(path, training_state=True)
    if not any(name.startswith("optim.") for name in resumed.training_state) or \
            not isinstance(resumed.summary.get("train_config"), dict):
        raise ChargenError(f"--resume {path}: this checkpoint has no optimizer state (only 'last' "
                           f"checkpoints do); resume from the run directory, or fine-tune from it with "
                           f"--init-from {path}")
    return resumed


def check_writable(run_dir: Path, option: str = "--out") -> None:
    """A clear error now if the run directory cannot be created or written, not after encoding."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = "choose another --out" if option == "--out" else "make it writable (or copy the run elsewhere)"
    if not existing.is_dir():
        raise ChargenError(f"{option} {run_dir}: {existing} is a file, not a directory; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ChargenError(f"{option} {run_dir}: {existing} is not writable; {fix}")


def corpus_fingerprint(tokens: np.ndarray) -> str:
    """A cheap identity of the training tokens: their count and 16 evenly spaced runs of 65536.

    Few long runs rather than every n-th token: on a memory-mapped corpus each place touched maps
    up to a 2 MB page-cache folio, so a strided sample would read the whole token file (seconds
    for a big corpus, and all of it counted as resident memory) where 16 runs map about 32 MB.
    """
    runs, run = 16, 1 << 16
    if len(tokens) <= runs * run:
        sample = np.ascontiguousarray(tokens, dtype=np.uint32)
    else:
        starts = np.linspace(0, len(tokens) - run, runs).astype(np.int64)
        sample = np.concatenate([np.asarray(tokens[i:i + run], dtype=np.uint32) for i in starts])
    return f"{len(tokens)}:" + hashlib.sha256(sample.tobytes()).hexdigest()[:16]


def check_model_fits(config: TrainConfig, vocab_size: int, device: torch.device) -> None:
    """Refuse, with a clear message, a model whose training state cannot fit in memory at all."""
    with torch.device("meta"):
        parameters = CharLM(config.model_config(vocab_size, 0.0)).num_parameters()
    # Weights, gradients and AdamW's two moments in fp32, plus the activations BPTT keeps.
    needed = parameters * 16 + config.batch_size * config.seq_len * (
        config.layers * config.hidden * 12 + vocab_size * 3) * 4
    try:
        if device.type == "cuda":
            available = torch.cuda.get_device_properties(device).total_memory
        else:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError, RuntimeError):
        return  # cannot tell here (e.g. Windows): let the allocator decide
    if needed > available:
        raise ChargenError(
            f"--layers {config.layers} --hidden {config.hidden}: a {parameters:,}-parameter model needs "
            f"about {needed / 1e9:,.1f} GB to train, but this {device.type} has {available / 1e9:.1f} GB; "
            "lower --hidden, --layers, --batch-size or --seq-len")


def lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on the run directory so two trainers never write the same run.

    The lock dies with the process (even on kill -9), so a crash never leaves it stuck.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; nothing to hold
        return None
    try:
        handle = open(run_dir / ".lock", "a+")
    except OSError as exc:
        raise ChargenError(f"{run_dir}: cannot write in the run directory: {exc.strerror or exc}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ChargenError(f"{run_dir}: another chargen process is training this run right now; "
                           "wait for it to finish (or stop it) first") from None
    return handle


def make_optimizer(model: CharLM, weight_decay: float, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only, in the first group (biases and the embedding
    table are exempt).

    The fused kernel where torch has one for the device (CUDA; the CPU from torch 2.4 on): on
    this project's CPU a 2x512 model's update took ~2 ms fused against ~16 ms for the default
    multi-tensor one, about 5% of a training step.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.dim() >= 2 and not name.startswith("embed") else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), fused=True)
    except RuntimeError:  # no fused kernel for this device in this torch
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))


def grow_vocab(model: CharLM, vocab_size: int) -> CharLM:
    """A copy of ``model`` whose embedding and head take ``vocab_size`` tokens (new ids last)."""
    old = model.config
    grown = CharLM(ModelConfig(**{**old.to_dict(), "vocab_size": vocab_size}))
    state = grown.state_dict()
    for name, tensor in model.state_dict().items():
        if name in ("embed.weight", "head.weight", "head.bias", "skip_head.weight"):
            state[name][:tensor.size(0)] = tensor
        else:
            state[name] = tensor
    grown.load_state_dict(state)
    return grown


def make_run_dir(out: str | None, corpus_paths: list[str]) -> Path:
    """``--out`` as given (it must not hold a run already), else checkpoints/<corpus>-<time>."""
    if out:
        path = Path(out)
        if (path / LAST_NAME).exists() or (path / BEST_NAME).exists():
            raise ChargenError(f"--out {path}: already holds a training run; continue it with "
                               f"--resume {path} or choose another --out")
        return path
    stem = Path(corpus_paths[0]).stem if corpus_paths else "run"
    base = Path("checkpoints") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def train(corpus: str | list[str] | None = None, *, on_event: Callable[[Event], None] | None = None,
          resume: str | None = None, **options) -> RunFinished:
    """Train a model from Python (a notebook, a script); options are ``TrainConfig`` fields.

        chargen.train("corpus.txt", max_time=120, hidden=256, out="checkpoints/mine")
    """
    paths = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus or [])
    config = TrainConfig(**options)
    return Trainer(config, [str(p) for p in paths], on_event=on_event, resume=resume).run()
