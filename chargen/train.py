"""The training loop: truncated BPTT over parallel streams, AdamW, warmup + cosine, clipping.

Read ``Trainer.run`` top to bottom: it is the whole algorithm. Everything the loop wants the
outside world to know (progress, evaluations, checkpoints) goes out as an event to ``on_event``;
the dashboard is one consumer, tests are another.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import BEST_NAME, LAST_NAME, atomic_write_bytes, load_checkpoint, save_checkpoint
from .data import Corpus, StreamBatches, find_text_files, iter_text, load_corpus
from .engine import cpu_has_native_bf16
from .errors import ChargenError, describe_chars
from .model import CELLS, CharLM, ModelConfig, State, detach_state, map_state
from .sampling import Sampler, SamplingSettings
from .tokenizers import CharTokenizer, TOKENIZER_KINDS, Tokenizer

MAX_BAD_STEPS_IN_A_ROW = 5


@dataclass
class TrainConfig:
    """Every training option, with its default. The CLI's flags are generated from this."""

    # model
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    dropout: float = 0.1
    tie_weights: bool = True
    # tokenizer and input
    tokenizer: str = "char"
    vocab_size: int = 2000  # sentencepiece only
    normalize: str | None = None  # char only: NFC or NFKC
    encoding: str = "utf-8"
    # optimization
    seq_len: int = 128
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_frac: float = 0.1  # cosine decays to lr * min_lr_frac
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # budget: training stops at the first limit reached; with none given, after 10 epochs
    max_steps: int | None = None
    max_time: float | None = None  # seconds
    epochs: float | None = None
    # evaluation and output
    val_frac: float = 0.1
    eval_every: int = 200
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
            need(isinstance(value, int) and 1 <= value <= 1_000_000, name, value, "must be a whole number >= 1")
        need(self.layers <= 64, "layers", self.layers, "must be at most 64")
        need(self.hidden <= 16384, "hidden", self.hidden, "must be at most 16384")
        need(self.cell in CELLS, "cell", self.cell, f"choose one of {', '.join(CELLS)}")
        need(self.tokenizer in TOKENIZER_KINDS, "tokenizer", self.tokenizer, f"choose one of {', '.join(TOKENIZER_KINDS)}")
        need(300 <= self.vocab_size <= 1_000_000, "vocab_size", self.vocab_size, "must be between 300 and 1000000")
        need(finite(self.dropout) and 0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")
        need(finite(self.lr) and 0 < self.lr <= 10, "lr", self.lr, "must be a number in (0, 10]")
        need(finite(self.min_lr_frac) and 0 <= self.min_lr_frac <= 1, "min_lr_frac", self.min_lr_frac, "must be in [0, 1]")
        need(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        need(finite(self.weight_decay) and 0 <= self.weight_decay <= 1, "weight_decay", self.weight_decay, "must be in [0, 1]")
        need(finite(self.grad_clip) and self.grad_clip > 0, "grad_clip", self.grad_clip, "must be a number > 0")
        need(self.max_steps is None or (isinstance(self.max_steps, int) and self.max_steps >= 1),
             "max_steps", self.max_steps, "must be a whole number >= 1")
        need(self.max_time is None or (finite(self.max_time) and self.max_time > 0), "max_time", self.max_time, "must be > 0 (e.g. 90s, 5m, 2h)")
        need(self.epochs is None or (finite(self.epochs) and self.epochs > 0), "epochs", self.epochs, "must be a number > 0")
        need(finite(self.val_frac) and 0 <= self.val_frac < 1, "val_frac", self.val_frac, "must be in [0, 1)")
        need(isinstance(self.preview_length, int) and self.preview_length >= 0, "preview_length", self.preview_length, "must be >= 0")
        need(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "choose auto, fp32 or bf16")
        need(self.normalize in (None, "NFC", "NFKC"), "normalize", self.normalize, "choose NFC or NFKC")
        return self

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, cell=self.cell, layers=self.layers, hidden=self.hidden,
                           dropout=self.dropout, tie_weights=self.tie_weights)


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


Event = RunStarted | StepDone | EvalDone | CheckpointSaved | RunFinished


class TrainingInterrupted(Exception):
    """Training stopped early on request (Ctrl-C, SIGTERM); a checkpoint was written."""

    def __init__(self, run_dir: Path, step: int, signal_number: int | None):
        self.run_dir, self.step, self.signal_number = run_dir, step, signal_number
        super().__init__(f"interrupted at step {step}; resume with: chargen train --resume {run_dir}")


# ---- evaluation ------------------------------------------------------------------------------

@dataclass
class EvalResult:
    nats_per_token: float
    nats_per_char: float
    tokens: int
    chars: int

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.nats_per_char, 700.0))

    def to_dict(self) -> dict:
        return {"nats_per_char": self.nats_per_char, "bits_per_char": self.bits_per_char,
                "perplexity": self.perplexity, "tokens": self.tokens, "chars": self.chars}


@torch.inference_mode()
def evaluate(model: CharLM, tokens: np.ndarray, tokenizer: Tokenizer, *, autocast=nullcontext,
             stream_len: int = 2048, burn_in: int = 256, chunk_len: int = 256) -> EvalResult:
    """Loss over every token of ``tokens`` (each predicted from the ones before it).

    The text is cut into streams of ``stream_len`` predictions that run side by side for speed.
    Each stream first reads the ``burn_in`` tokens before its own part without scoring them, so
    every prediction has real context, as if the whole text were read in one pass. The figure is
    then comparable with published per-char losses.
    """
    device = next(model.parameters()).device
    n = len(tokens)
    if n < 2:
        raise ChargenError("the evaluation text is too short (it needs at least 2 tokens)")
    tokens = np.asarray(tokens, dtype=np.int64)
    streams = math.ceil((n - 1) / stream_len)
    # Stream s scores the targets at positions [first, last) and reads from `begin` on.
    firsts = [1 + s * stream_len for s in range(streams)]
    begins = [max(0, first - 1 - burn_in) for first in firsts]
    lasts = [min(first + stream_len, n) for first in firsts]
    width = max(last - begin - 1 for begin, last in zip(begins, lasts))
    inputs = torch.zeros(streams, width, dtype=torch.long)
    targets = torch.zeros(streams, width, dtype=torch.long)
    scored = torch.zeros(streams, width, dtype=torch.bool)
    for s, (begin, first, last) in enumerate(zip(begins, firsts, lasts)):
        size = last - begin - 1
        inputs[s, :size] = torch.from_numpy(tokens[begin:last - 1])
        targets[s, :size] = torch.from_numpy(tokens[begin + 1:last])
        scored[s, first - 1 - begin:size] = True

    was_training = model.training
    model.eval()
    state: State = None
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, width, chunk_len):
        x = inputs[:, start:start + chunk_len].to(device)
        with autocast():
            logits, state = model(x, state)
        losses = F.cross_entropy(logits.float().transpose(1, 2), targets[:, start:start + chunk_len].to(device),
                                 reduction="none")
        total += (losses * scored[:, start:start + chunk_len].to(device)).sum()
    model.train(was_training)
    predicted = n - 1
    nats_per_token = total.item() / predicted
    # Per char: tokens of the scored text per char of it (exact for the char tokenizer).
    tokens_per_char = n / max(tokenizer.count_chars(tokens), 1)
    return EvalResult(nats_per_token, nats_per_token * tokens_per_char, predicted,
                      round(predicted / tokens_per_char))


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

    That is GPUs that support it, and CPUs with AVX512-BF16 or AMX: there a 2x512 LSTM trained
    1.6-1.8x faster under bf16 autocast with no worse validation loss (bench/train_speed.py;
    the README has the figures). Other CPUs only emulate bf16, which is slower than fp32.
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


def autocast_for(device: torch.device, precision: str):
    """A zero-argument context factory: bf16 autocast or nothing."""
    if precision != "bf16":
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


# ---- the loop --------------------------------------------------------------------------------

class Trainer:
    """One training run. Build it with ``Trainer(config, corpus_paths)``, then call ``run()``."""

    def __init__(self, config: TrainConfig, corpus_paths: list[str] | None = None,
                 on_event: Callable[[Event], None] | None = None, resume: str | None = None):
        self.on_event = on_event or (lambda event: None)
        self._stop_signal: int | None = None
        self._stop_requested = threading.Event()
        resumed = load_checkpoint(Path(resume) / LAST_NAME if Path(resume).is_dir() else resume,
                                  training_state=True) if resume else None
        if resumed is not None:
            config = self._config_for_resume(config, resumed, resume)
            corpus_paths = corpus_paths or resumed.summary.get("corpus", [])
        self.config = config.validate()
        torch.manual_seed(config.seed)
        self.device = pick_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.autocast = autocast_for(self.device, self.precision)

        self.run_dir = Path(resume if resume and Path(resume).is_dir() else
                            (resumed.path.parent if resumed else make_run_dir(config.out, corpus_paths)))
        init = load_checkpoint(config.init_from) if config.init_from and not resumed else None
        tokenizer = resumed.tokenizer if resumed else self._init_tokenizer(init, corpus_paths)
        self.corpus: Corpus = load_corpus(
            corpus_paths, tokenizer=tokenizer, tokenizer_kind=config.tokenizer,
            vocab_size=config.vocab_size, normalize=config.normalize, encoding=config.encoding,
            cache_dir=self.run_dir.parent / ".cache")
        self.tokenizer = self.corpus.tokenizer
        train_tokens, self.val_tokens = self.corpus.split(config.val_frac)
        self.batches = StreamBatches(train_tokens, config.batch_size, config.seq_len)
        if config.val_frac > 0 and len(self.val_tokens) < 2:
            raise ChargenError(f"--val-frac {config.val_frac}: the validation split is empty for this "
                               "small corpus; raise it or use --val-frac 0")
        self.chars_per_token = self.corpus.tokenizer.count_chars(np.asarray(train_tokens[:1 << 20])) / \
            max(min(len(train_tokens), 1 << 20), 1)

        if resumed:
            self.model = resumed.model
        elif init:
            self.model = grow_vocab(init.model, self.tokenizer.vocab_size) if config.extend_vocab else init.model
            self.model.drop.p = config.dropout
        else:
            self.model = CharLM(config.model_config(self.tokenizer.vocab_size))
        self.model.to(self.device).train()
        self.optimizer = make_optimizer(self.model, config, self.device)
        self.step_fn = torch.compile(self.model) if config.compile else self.model

        self.step, self.elapsed_before, self.skipped_steps = 0, 0.0, 0
        self._last_eval_seconds = 0.0
        self.best_val_loss: float | None = None
        self.state: State = None
        if resumed:
            self._restore(resumed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._trim_metrics()

    # -- set-up helpers --

    @staticmethod
    def _config_for_resume(config: TrainConfig, resumed, resume: str) -> TrainConfig:
        saved = resumed.summary.get("train_config")
        if not isinstance(saved, dict):
            raise ChargenError(f"{resume}: checkpoint has no training state to resume (is it a 'last' checkpoint?)")
        known = {f.name for f in fields(TrainConfig)}
        merged = TrainConfig(**{k: v for k, v in saved.items() if k in known})
        # The budget may be changed when resuming (train longer); the rest is the run's own.
        for name in ("max_steps", "max_time", "epochs", "eval_every"):
            if getattr(config, name) != getattr(TrainConfig, name, None):
                setattr(merged, name, getattr(config, name))
        return merged

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
        summary, tensors = resumed.summary, resumed.training_state
        self.step = int(summary["step"])
        self.elapsed_before = float(summary.get("elapsed", 0.0))
        self.skipped_steps = int(summary.get("skipped_steps", 0))
        self.best_val_loss = summary.get("best_val_loss")
        optimizer_state = {"state": {}, "param_groups": summary["optimizer_param_groups"]}
        for name, tensor in tensors.items():
            if name.startswith("optim."):
                _, index, key = name.split(".", 2)
                optimizer_state["state"].setdefault(int(index), {})[key] = tensor
        self.optimizer.load_state_dict(optimizer_state)
        if "rng.torch" in tensors:
            torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        if "rnn_state.h" in tensors:
            h = tensors["rnn_state.h"].to(self.device)
            self.state = (h, tensors["rnn_state.c"].to(self.device)) if "rnn_state.c" in tensors else h

    def _trim_metrics(self) -> None:
        """On resume, drop metric lines past the resumed step so none is duplicated."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
        atomic_write_bytes(self.metrics_path, ("\n".join(kept) + "\n" if kept else "").encode())

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
        """Fraction of the budget used: drives the cosine schedule and the progress bar."""
        fractions = []
        total = self.total_steps()
        if total:
            fractions.append(self.step / total)
        if self.config.max_time:
            fractions.append(elapsed / self.config.max_time)
        return min(max(fractions), 1.0)

    def lr_at(self, progress: float) -> float:
        c = self.config
        if self.step < c.warmup_steps:
            return c.lr * (self.step + 1) / c.warmup_steps
        floor = c.lr * c.min_lr_frac
        return floor + (c.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))

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
                raise KeyboardInterrupt  # second Ctrl-C: abort now; the last checkpoint stays
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
                                 len(self.val_tokens), len(self.batches), self.total_steps(), self.step))
        previous_handlers = self._install_signal_handlers()
        try:
            return self._loop()
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)

    def _loop(self) -> RunFinished:
        c = self.config
        vocab = self.model.config.vocab_size
        chars_per_step = c.batch_size * c.seq_len * self.chars_per_token
        started = time.perf_counter()
        window_start, window_steps, window_loss = started, 0, 0.0
        bad_in_a_row = 0
        reason = None
        while True:
            elapsed = self.elapsed_before + time.perf_counter() - started
            reason = self.finished_reason(elapsed)
            if reason or self._stop_requested.is_set():
                break
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
            loss_value = loss.item()
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                self.skipped_steps += 1
                bad_in_a_row += 1
                self.optimizer.zero_grad(set_to_none=True)
                if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
                    raise ChargenError(
                        f"training diverged: loss or gradients were NaN/inf for {bad_in_a_row} steps in a "
                        f"row (last at step {self.step + 1}); lower --lr (now {c.lr:g}) or --grad-clip")
                self.state = None
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
        if self.step % c.eval_every != 0 or not (self.run_dir / LAST_NAME).exists():
            self._evaluate_and_save(elapsed)
        finished = RunFinished(self.run_dir, self.step, elapsed, self.best_val_loss, reason)
        self.on_event(finished)
        return finished

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _evaluate_and_save(self, elapsed: float) -> None:
        if self.config.val_frac > 0:
            eval_started = time.perf_counter()
            result = evaluate(self.model, self.val_tokens, self.tokenizer, autocast=self.autocast)
            self._last_eval_seconds = time.perf_counter() - eval_started
            val_loss = result.nats_per_char
            is_best = self.best_val_loss is None or val_loss < self.best_val_loss
            if is_best:
                self.best_val_loss = val_loss
            sample = self.preview()
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
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

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
            "train_config": asdict(self.config),
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
        if self.state is not None:
            h, c = self.state if isinstance(self.state, tuple) else (self.state, None)
            tensors["rnn_state.h"] = h
            if c is not None:
                tensors["rnn_state.c"] = c
        return tensors

    def _save(self, name: str, elapsed: float, with_training_state: bool = True) -> None:
        if any(not torch.isfinite(p).all() for p in self.model.parameters()):
            raise ChargenError(f"step {self.step}: the weights hold NaN/inf; not saving them over "
                               f"good checkpoints. Lower --lr (now {self.config.lr:g})")
        summary = self.summary(elapsed)
        summary["optimizer_param_groups"] = self.optimizer.state_dict()["param_groups"]
        save_checkpoint(self.run_dir / name, self.model, self.tokenizer, summary,
                        self.training_state() if with_training_state else None)
        self.on_event(CheckpointSaved(self.run_dir / name, self.step))


def make_optimizer(model: CharLM, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (biases and the embedding table are exempt)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.dim() >= 2 and not name.startswith("embed") else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99), fused=device.type == "cuda" or None)


def grow_vocab(model: CharLM, vocab_size: int) -> CharLM:
    """A copy of ``model`` whose embedding and head take ``vocab_size`` tokens (new ids last)."""
    old = model.config
    grown = CharLM(ModelConfig(**{**old.to_dict(), "vocab_size": vocab_size}))
    state = grown.state_dict()
    for name, tensor in model.state_dict().items():
        if name in ("embed.weight", "head.weight", "head.bias"):
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
