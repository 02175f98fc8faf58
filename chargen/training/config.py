"""Every training option: its default, its help text and its validation, in one place.

The CLI generates ``chargen train``'s flags from ``TrainConfig``'s fields: the help lives in each
field's metadata (``help``, and ``kind`` for how a command line spells the value), built from the
same constants the rules use, so ``--help`` cannot drift from what the code does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..devices import PRECISIONS
from ..errors import ChargenError
from ..limits import (MAX_ACTIVATION_PENALTY, MAX_DROPOUT, MAX_EPOCHS, MAX_HIDDEN, MAX_LAYERS, MAX_LR,
                      MAX_PREVIEW_LENGTH, MAX_SECONDS, MAX_STEPS, MAX_WHOLE, MIN_SENTENCEPIECE_VOCAB, check_seed)
from ..model import BEFORE_OPTION as MODEL_BEFORE_OPTION
from ..model import CELLS, REGULARIZATION, ModelConfig
from ..text.tokenizers import TOKENIZER_KINDS
from .auto import (ACCELERATOR_WIDTHS, AUTO_SAVE_EVERY_SECONDS, DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS,
                   DEFAULT_HIDDEN, DEFAULT_SEQ_LEN, DROPOUT_FREE_EPOCHS, EVAL_EVERY_TOKENS, LR_FLAT_EPOCHS,
                   SHORT_SEQ_LEN, SHORT_SEQ_MAX_EPOCHS, WD_FLAT_EPOCHS, WIDTHS, auto_ar, auto_dropout, auto_lr,
                   auto_tar, auto_weight_decay)
from .saving import valid_save_every

SCHEDULES = ("cosine", "linear")
# What a run saved before each of these options existed trained with (resume keeps it so).
BEFORE_OPTION = {**MODEL_BEFORE_OPTION, "ar": 0.0, "tar": 0.0}
NORMALIZE_FORMS = ("NFC", "NFKC")
# Options that may differ when resuming: the budget and how the run is watched or executed.
# Everything else (model, data, optimizer settings) is the run's own and must stay as saved.
RESUME_OVERRIDABLE = ("max_steps", "max_time", "epochs", "eval_every", "eval_tokens", "log_every", "preview_length",
                      "save_every", "device", "precision", "compile", "lr")


def option(default, help: str, kind: str):
    """A ``TrainConfig`` field. ``kind`` says how the command line reads it: int, float, str, flag,
    duration, auto-int or auto-float (``auto`` or a number), auto-duration (``auto``, ``off`` or a duration)."""
    return field(default=default, metadata={"help": help, "kind": kind})


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


_EVAL_STEPS = EVAL_EVERY_TOKENS // (DEFAULT_BATCH_SIZE * DEFAULT_SEQ_LEN)


@dataclass
class TrainConfig:
    """Every training option, with its default. The CLI's flags are generated from this."""

    # model
    cell: str = option("lstm", "recurrent cell: lstm, gru, rnn (plain tanh RNN) or lstm-peephole (gates see the "
                       "cell state; several times slower: no fused kernel)", "str")
    layers: int = option(2, "number of stacked recurrent layers", "int")
    hidden: int | str = option(
        "auto", f"hidden size of each layer (also the embedding size): a number, or auto for {DEFAULT_HIDDEN}, or "
        f"narrower (down to {min(WIDTHS)}) when --max-time is too short to train {DEFAULT_HIDDEN} well, as a few "
        f"timed steps show; on a GPU, up to {max(ACCELERATOR_WIDTHS)} when the budget can train it", "auto-int")
    dropout: float | str = option(
        "auto", "dropout between layers and on the output: a rate, 0 to disable, or auto to grow it with the number "
        f"of epochs the budget allows (none up to {DROPOUT_FREE_EPOCHS}, {auto_dropout(10):g} at 10, "
        f"{auto_dropout(20):g} at 20)", "auto-float")
    weight_drop: float = option(
        0.0, "DropConnect on the hidden-to-hidden weights while training (AWD-LSTM's weight drop): each "
        "recurrent weight is dropped at this rate, a fresh mask every step; 0 to disable", "float")
    # On by default: at fixed steps it ended as low as per-step masks or lower (on average, over three
    # seeds), and its smaller masks are cheaper to draw (bench/regularization.py, bench/RESULTS.md).
    locked_dropout: bool = option(True, "variational dropout: --dropout draws one mask per sequence and holds it "
                                  "for all its time steps, instead of a new one per step", "flag")
    embed_dropout: float = option(0.0, "embedding dropout: drop whole characters (tokens) from the input "
                                  "embedding while training, at this rate; 0 to disable", "float")
    ar: float | str = option(
        "auto", "activation regularization (Merity et al. 2017): add this times the mean square of the top "
        f"layer's output (after dropout) to the loss; 0 to disable, or auto: {auto_ar(0):g} while the budget "
        f"reads the text at most {DROPOUT_FREE_EPOCHS} times (where it trains without dropout), else 0", "auto-float")
    tar: float | str = option(
        "auto", "temporal activation regularization: add this times the mean square of the change in the top "
        f"layer's output from one step to the next; 0 to disable, or auto: {auto_tar(0):g} as --ar, else 0",
        "auto-float")
    tie_weights: bool = option(True, "share the input embedding with the output layer", "flag")
    skip_connections: bool = option(True, "feed every layer's output to the output layer, not only the top one's "
                                    "(Graves 2013: lower layers' features reach the prediction directly)", "flag")
    # tokenizer and input
    tokenizer: str = option("char", "char (code points), byte (UTF-8 bytes) or sentencepiece (subwords)", "str")
    vocab_size: int = option(2000, "vocabulary size, for --tokenizer sentencepiece", "int")
    normalize: str | None = option(None, "Unicode normalization for the char tokenizer: NFC or NFKC", "str")
    encoding: str = option("utf-8", "text encoding of the corpus files", "str")
    # optimization
    seq_len: int | str = option(
        "auto", f"tokens per truncated-BPTT window (state is carried across windows): a number, or auto for "
        f"{DEFAULT_SEQ_LEN}, or {SHORT_SEQ_LEN} when --max-time lets the model read the text at most "
        f"{SHORT_SEQ_MAX_EPOCHS:g} times (shorter windows, more updates)", "auto-int")
    batch_size: int = option(DEFAULT_BATCH_SIZE, "parallel streams per step", "int")
    lr: float | str = option(
        "auto", "peak learning rate (AdamW): a number, or auto to raise it with the number of epochs the budget "
        f"allows ({auto_lr(0):g} up to {LR_FLAT_EPOCHS}, {auto_lr(2 * LR_FLAT_EPOCHS):g} from "
        f"{2 * LR_FLAT_EPOCHS})", "auto-float")
    schedule: str = option("cosine", "how the learning rate falls after the warm-up, over the whole budget: cosine "
                           "or linear, down to lr times --min-lr-frac", "str")
    min_lr_frac: float = option(0.0, "the schedule ends at lr times this", "float")
    warmup_steps: int = option(100, "linear warm-up steps", "int")
    weight_decay: float | str = option(
        "auto", "AdamW weight decay on weight matrices: a number, or auto to grow it with the number of epochs the "
        f"budget allows ({auto_weight_decay(0):g} up to {WD_FLAT_EPOCHS}, {auto_weight_decay(20):g} at 20)",
        "auto-float")
    grad_clip: float = option(1.0, "clip the global gradient norm to this", "float")
    # budget: training stops at the first limit reached; with none given, after DEFAULT_EPOCHS
    max_steps: int | None = option(None, "stop after this many steps", "int")
    max_time: float | None = option(None, "wall-time budget from reading the corpus to the final evaluation and "
                                    "checkpoint, e.g. 90s, 5m, 2h", "duration")
    epochs: float | None = option(None, f"stop after this many passes over the corpus ({DEFAULT_EPOCHS} if no "
                                  "limit is given)", "float")
    # evaluation and output
    val_frac: float = option(0.1, "fraction of the corpus (its end) held out for validation", "float")
    eval_every: int | str = option(
        "auto", f"evaluate on the validation split and checkpoint every N steps, or auto: every "
        f"{EVAL_EVERY_TOKENS:,} training tokens ({_EVAL_STEPS:,} steps of batch {DEFAULT_BATCH_SIZE} x seq "
        f"{DEFAULT_SEQ_LEN}, {2 * _EVAL_STEPS:,} of {DEFAULT_BATCH_SIZE} x {DEFAULT_SEQ_LEN // 2})", "auto-int")
    save_every: float | str = option(
        "auto", "also save the last checkpoint (not best) when this much time has passed since the newest save, "
        f"so that a kill loses at most that much training: a duration such as 5m, auto for "
        f"{AUTO_SAVE_EVERY_SECONDS // 60} minutes, or off to save at evaluations only", "auto-duration")
    # At the defaults this costs about a tenth of the compute of the steps between two evaluations.
    eval_tokens: int = option(250_000, "validation tokens scored per evaluation, spread over the split "
                              "(0 = all of it)", "int")
    log_every: int = option(10, "write a metrics.jsonl line every N steps", "int")
    preview_length: int = option(160, "tokens of sample shown at each evaluation (0 disables)", "int")
    out: str | None = option(None, "run directory (default: checkpoints/<corpus>-<date>-<time>)", "str")
    seed: int = option(1337, "random seed: same seed, same run", "int")
    device: str = option("auto", "auto, cpu, cuda or mps (auto picks the best present)", "str")
    precision: str = option("auto", "auto (bf16 autocast on GPUs, and on CPUs with native bf16 where a few timed "
                            "steps show it faster; else fp32), fp32 or bf16", "str")
    compile: bool = option(False, "torch.compile the model (helps on GPUs; slow start)", "flag")
    init_from: str | None = option(None, "start from this checkpoint's weights (fine-tuning; fresh optimizer)", "str")
    extend_vocab: bool = option(False, "with --init-from: grow the vocabulary to take the corpus's new characters",
                                "flag")

    def validate(self) -> "TrainConfig":
        _check_whole_numbers(self)
        _check_model(self)
        _check_optimizer(self)
        _check_budget_and_output(self)
        return self

    def model_config(self, vocab_size: int, dropout: float) -> ModelConfig:
        assert self.hidden != "auto", "settle --hidden auto first (plan_shape)"
        return ModelConfig(vocab_size=vocab_size, cell=self.cell, layers=self.layers, hidden=self.hidden,
                           tie_weights=self.tie_weights, skip_connections=self.skip_connections,
                           **{**self.regularization(), "dropout": dropout})

    def regularization(self) -> dict:
        """The model's training-only settings as given here (``dropout`` may still be auto)."""
        return {name: getattr(self, name) for name in REGULARIZATION}


def need(ok: bool, option: str, value, rule: str) -> None:
    if not ok:
        raise ChargenError(f"{flag_name(option)} {value}: {rule}")


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _check_whole_numbers(c: TrainConfig) -> None:
    for name in ("layers", "hidden", "seq_len", "batch_size", "eval_every", "log_every"):
        value = getattr(c, name)
        may_be_auto = name in ("hidden", "seq_len", "eval_every")
        if may_be_auto and value == "auto":
            continue
        need(isinstance(value, int) and 1 <= value <= MAX_WHOLE, name, value,
             f"must be {'auto or ' if may_be_auto else ''}a whole number from 1 to {MAX_WHOLE}")


def _check_model(c: TrainConfig) -> None:
    need(c.layers <= MAX_LAYERS, "layers", c.layers, f"must be at most {MAX_LAYERS}")
    need(c.hidden == "auto" or c.hidden <= MAX_HIDDEN, "hidden", c.hidden, f"must be auto or at most {MAX_HIDDEN}")
    need(c.cell in CELLS, "cell", c.cell, f"choose one of {', '.join(CELLS)}")
    need(c.tokenizer in TOKENIZER_KINDS, "tokenizer", c.tokenizer, f"choose one of {', '.join(TOKENIZER_KINDS)}")
    need(isinstance(c.vocab_size, int) and MIN_SENTENCEPIECE_VOCAB <= c.vocab_size <= MAX_WHOLE, "vocab_size",
         c.vocab_size, f"must be between {MIN_SENTENCEPIECE_VOCAB} and {MAX_WHOLE}")
    need(c.dropout == "auto" or (finite(c.dropout) and 0 <= c.dropout < MAX_DROPOUT), "dropout", c.dropout,
         f"must be auto or a number in [0, {MAX_DROPOUT:g})")
    for name in ("weight_drop", "embed_dropout"):
        value = getattr(c, name)
        need(finite(value) and 0 <= value < MAX_DROPOUT, name, value, f"must be a number in [0, {MAX_DROPOUT:g})")
    need(c.ar == "auto" or (finite(c.ar) and 0 <= c.ar <= MAX_ACTIVATION_PENALTY), "ar", c.ar,
         f"must be auto or a number from 0 to {MAX_ACTIVATION_PENALTY:g}")
    need(c.tar == "auto" or (finite(c.tar) and 0 <= c.tar <= MAX_ACTIVATION_PENALTY), "tar", c.tar,
         f"must be auto or a number from 0 to {MAX_ACTIVATION_PENALTY:g}")
    need(c.normalize is None or c.normalize in NORMALIZE_FORMS, "normalize", c.normalize,
         f"choose {' or '.join(NORMALIZE_FORMS)}")


def _check_optimizer(c: TrainConfig) -> None:
    need(c.lr == "auto" or (finite(c.lr) and 0 < c.lr <= MAX_LR), "lr", c.lr,
         f"must be auto or a number in (0, {MAX_LR:g}]")
    need(c.schedule in SCHEDULES, "schedule", c.schedule, f"choose {' or '.join(SCHEDULES)}")
    need(finite(c.min_lr_frac) and 0 <= c.min_lr_frac <= 1, "min_lr_frac", c.min_lr_frac, "must be in [0, 1]")
    need(isinstance(c.warmup_steps, int) and 0 <= c.warmup_steps <= MAX_STEPS, "warmup_steps",
         c.warmup_steps, f"must be >= 0 and at most {MAX_STEPS:.0e}")
    need(c.weight_decay == "auto" or (finite(c.weight_decay) and 0 <= c.weight_decay <= 1), "weight_decay",
         c.weight_decay, "must be auto or a number in [0, 1]")
    need(finite(c.grad_clip) and c.grad_clip > 0, "grad_clip", c.grad_clip, "must be a number > 0")


def _check_budget_and_output(c: TrainConfig) -> None:
    need(c.max_steps is None or (isinstance(c.max_steps, int) and 1 <= c.max_steps <= MAX_STEPS),
         "max_steps", c.max_steps, f"must be a whole number >= 1 and at most {MAX_STEPS:.0e}")
    need(c.max_time is None or (finite(c.max_time) and 0 < c.max_time <= MAX_SECONDS), "max_time",
         c.max_time, "must be > 0 and at most a year (e.g. 90s, 5m, 2h)")
    need(c.epochs is None or (finite(c.epochs) and 0 < c.epochs <= MAX_EPOCHS), "epochs", c.epochs,
         f"must be a number > 0 and at most {MAX_EPOCHS:.0e}")
    need(finite(c.val_frac) and 0 <= c.val_frac < 1, "val_frac", c.val_frac, "must be in [0, 1)")
    need(isinstance(c.eval_tokens, int) and c.eval_tokens >= 0, "eval_tokens", c.eval_tokens,
         "must be a whole number >= 0 (0 scores the whole validation split)")
    need(isinstance(c.preview_length, int) and 0 <= c.preview_length <= MAX_PREVIEW_LENGTH,
         "preview_length", c.preview_length, f"must be between 0 and {MAX_PREVIEW_LENGTH}")
    need(valid_save_every(c.save_every), "save_every", c.save_every,
         "must be auto, off or a duration > 0 and at most a year (e.g. 90s, 5m, 2h)")
    check_seed(c.seed)
    need(c.precision in PRECISIONS, "precision", c.precision, "choose auto, fp32 or bf16")
