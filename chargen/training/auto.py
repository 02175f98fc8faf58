"""The ``auto`` settings of ``chargen train``, as pure functions of the run's budget.

A run given a budget (steps, epochs or --max-time) plans how many times it will read its
training text ("planned epochs"); dropout, weight decay and the learning rate follow from that,
and under --max-time the model's width and window follow from a probed speed. Every rule here
was tuned on Tiny Shakespeare by runs recorded in bench/HISTORY.md; the current figures they give
are in bench/RESULTS.md.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

# With no budget given, a run reads its text this many times.
DEFAULT_EPOCHS = 10

# --dropout auto: none while the text is read at most DROPOUT_FREE_EPOCHS times (short runs do
# better without it, and it costs them steps: the fused multi-layer kernel cannot take it), then
# DROPOUT_AT_10 at 10 epochs, DROPOUT_PER_DOUBLING more per doubling, at most MAX_AUTO_DROPOUT.
DROPOUT_FREE_EPOCHS = 7
DROPOUT_AT_10, DROPOUT_PER_DOUBLING, MAX_AUTO_DROPOUT = 0.2, 0.1, 0.4

# --weight-decay auto: WD_BASE up to WD_FLAT_EPOCHS, WD_PER_DOUBLING more per doubling, at most
# MAX_AUTO_WD. Like dropout, it must grow as the text is read more often.
WD_FLAT_EPOCHS, WD_BASE, WD_PER_DOUBLING, MAX_AUTO_WD = 5, 0.3, 0.15, 1.0

# --lr auto: LR_BASE up to LR_FLAT_EPOCHS, LR_TOP from twice that on, along log2(epochs) between.
# A longer run can afford larger steps before its schedule winds down.
LR_FLAT_EPOCHS, LR_BASE, LR_TOP = 5, 5e-3, 7e-3

# --ar and --tar auto: AWD-LSTM's activation penalties (training/objective.py) at its weights while a
# run is short enough to train without dropout, none beyond. In a 5-minute run they lowered the
# validation loss by ~0.02 at equal time; in a 20-minute run (dropout ~0.33) by nothing, at AR 2 or 6,
# so a long run does not pay their ~6% of a step; a short one gains more than it loses by them
# (bench/RESULTS.md, "Training speed").
AR_SHORT_RUNS, TAR_SHORT_RUNS = 2.0, 1.0

# --hidden and --seq-len auto. Without a time budget: the shape the rules above were tuned on.
# A --max-time budget can be too short to train that model: a narrower one reads more text in the
# same time and ends lower, and while the text is read only a few times, shorter windows (more,
# smaller updates) help.
DEFAULT_HIDDEN, DEFAULT_SEQ_LEN, DEFAULT_BATCH_SIZE = 512, 64, 32
WIDTHS = (512, 448, 384, 320, 256)  # what --hidden auto picks among, widest first
# An accelerator trains far more tokens in the same minutes (a CPU's 5-minute budget reads Tiny
# Shakespeare ~5 times, a GPU's 3 minutes ~60 times), so there --hidden auto also considers wider
# models, by the same tokens-per-parameter rule. These widths are not yet tuned by GPU runs.
ACCELERATOR_WIDTHS = (1536, 1024, 768) + WIDTHS
SHORT_SEQ_LEN = 32
# A real run reads about this share of the tokens the probe's speed implies: the probe leaves out
# the optimizer, the evaluations and the loop.
PROBE_EFFICIENCY = 0.7
# A model must be able to read this many tokens per parameter in its budget.
TOKENS_PER_PARAMETER = 1.5
# Short windows pay while the text is read at most this many times.
SHORT_SEQ_MAX_EPOCHS = 6.5
# The first probe step warms up (kernel selection, allocation); the fastest of the rest counts.
# Fewer timed steps let a slow spell of a shared machine decide the width.
PROBE_STEPS = 12

# --eval-every auto: evaluate after this many training tokens, whatever the window: 800 steps of
# the default batch. Scoring a validation split costs about a third of a training step per token,
# so evaluating far more often takes a visible share of a short run's budget.
EVAL_EVERY_TOKENS = 800 * DEFAULT_BATCH_SIZE * DEFAULT_SEQ_LEN
# An evaluation only runs forward, about a third of the work per token of a training step.
EVAL_COST_PER_TOKEN = 1 / 3

# --save-every auto: ``last`` is also saved after this many seconds without a save, so that a kill
# loses at most this much training even when evaluations are far apart (a big model on a CPU).
AUTO_SAVE_EVERY_SECONDS = 10 * 60

# With --max-time, steps AUTO_TIMING_STEPS[0]..[1] are timed (their median) to learn how many
# epochs the budget allows; the auto options are settled then (the first steps warm up anyway).
AUTO_TIMING_STEPS = (10, 100)


def auto_dropout(planned_epochs: float) -> float:
    """The dropout for a run that will read its training text ``planned_epochs`` times."""
    if planned_epochs <= DROPOUT_FREE_EPOCHS:
        return 0.0
    if planned_epochs < 10:
        return round(DROPOUT_AT_10 * math.log2(planned_epochs / DROPOUT_FREE_EPOCHS)
                     / math.log2(10 / DROPOUT_FREE_EPOCHS), 2)
    return round(min(DROPOUT_AT_10 + DROPOUT_PER_DOUBLING * math.log2(planned_epochs / 10), MAX_AUTO_DROPOUT), 2)


def auto_weight_decay(planned_epochs: float) -> float:
    """The AdamW weight decay for a run that will read its training text ``planned_epochs`` times."""
    if planned_epochs <= WD_FLAT_EPOCHS:
        return WD_BASE
    return round(min(WD_BASE + WD_PER_DOUBLING * math.log2(planned_epochs / WD_FLAT_EPOCHS), MAX_AUTO_WD), 2)


def auto_lr(planned_epochs: float) -> float:
    """The peak learning rate for a run that will read its training text ``planned_epochs`` times."""
    if planned_epochs <= LR_FLAT_EPOCHS:
        return LR_BASE
    return round(LR_BASE + (LR_TOP - LR_BASE) * min(math.log2(planned_epochs / LR_FLAT_EPOCHS), 1.0), 5)


def auto_ar(planned_epochs: float) -> float:
    """The activation penalty (--ar) for a run that will read its training text ``planned_epochs`` times."""
    return AR_SHORT_RUNS if planned_epochs <= DROPOUT_FREE_EPOCHS else 0.0


def auto_tar(planned_epochs: float) -> float:
    """The temporal activation penalty (--tar), likewise."""
    return TAR_SHORT_RUNS if planned_epochs <= DROPOUT_FREE_EPOCHS else 0.0


# Options that may be given as "auto", and the rule that settles each from the planned epochs.
AUTO_RULES = {"dropout": auto_dropout, "weight_decay": auto_weight_decay, "lr": auto_lr, "ar": auto_ar,
              "tar": auto_tar}
# What an auto option is while a time budget's steps are being timed (the lr warms up towards it).
AUTO_WHILE_TIMING = {"dropout": 0.0, "weight_decay": auto_weight_decay(0), "lr": auto_lr(0), "ar": auto_ar(0),
                     "tar": auto_tar(0)}


def initial_value(option: str, value, total_steps: int | None, timed: bool, steps_per_epoch: int) -> float:
    """An auto-able option as the run starts: a number as given; for auto, what a step or epoch
    budget implies, or ``AUTO_WHILE_TIMING`` while a time budget's steps are still to be timed."""
    if value != "auto":
        return value
    if timed or not total_steps:
        return AUTO_WHILE_TIMING[option]
    return AUTO_RULES[option](total_steps / steps_per_epoch)


def planned_epochs(step: int, total_steps: int | None, steps_per_epoch: int, time_left: float | None,
                   timing_marks: list[float], eval_steps_per_step: float) -> float:
    """How many times a run will read its text: the nearest of its step limit and its time budget.

    ``time_left`` seconds at the rate of ``timing_marks`` (when each timed step started): their
    median step, not the mean, so that a few seconds of contention while the steps are timed do
    not shrink the plan. Evaluations share the budget: ``eval_steps_per_step`` is their cost in
    training steps per training step.
    """
    budget_steps = [total_steps] if total_steps else []
    if time_left is not None:
        seconds_per_step = max(float(np.median(np.diff(timing_marks))), 1e-9) * (1 + eval_steps_per_step)
        budget_steps.append(step + max(time_left, 0.0) / seconds_per_step)
    return min(budget_steps) / steps_per_epoch


def eval_cost_in_steps(eval_tokens: int, val_tokens: int, batch_size: int, seq_len: int, eval_every: int) -> float:
    """What evaluating every ``eval_every`` steps costs, in training steps per training step."""
    scored = min(eval_tokens or val_tokens, val_tokens)
    return scored * EVAL_COST_PER_TOKEN / (batch_size * seq_len) / eval_every


def auto_eval_every(batch_size: int, seq_len: int) -> int:
    """--eval-every auto: the steps that read EVAL_EVERY_TOKENS training tokens."""
    return max(1, round(EVAL_EVERY_TOKENS / (batch_size * seq_len)))


def candidate_widths(device_type: str) -> tuple[int, ...]:
    """The widths --hidden auto considers on this kind of device, widest first."""
    return WIDTHS if device_type == "cpu" else ACCELERATOR_WIDTHS


def plan_shape(hidden: int | str, seq_len: int | str, seconds: float, train_tokens: int,
               parameters: Callable[[int], int], tokens_per_second: Callable[[int, int], float],
               widths: tuple[int, ...] = WIDTHS) -> tuple[int, int]:
    """``--hidden`` and ``--seq-len`` for a budget of ``seconds``, settling whichever is ``auto``.

    The width is the widest of ``widths`` that can read TOKENS_PER_PARAMETER tokens per parameter
    in the budget, at PROBE_EFFICIENCY times the speed ``tokens_per_second(width, seq_len)``
    measures (the narrowest if none can). The window is SHORT_SEQ_LEN if that width reads the
    training text at most SHORT_SEQ_MAX_EPOCHS times, else DEFAULT_SEQ_LEN. Numbers given stay.
    """
    window = SHORT_SEQ_LEN if seq_len == "auto" else seq_len
    widths = widths if hidden == "auto" else (hidden,)
    for width in widths:
        tokens = PROBE_EFFICIENCY * tokens_per_second(width, window) * seconds
        if tokens >= TOKENS_PER_PARAMETER * parameters(width):
            break
    if seq_len == "auto" and tokens > SHORT_SEQ_MAX_EPOCHS * train_tokens:
        window = DEFAULT_SEQ_LEN
    return width, window
