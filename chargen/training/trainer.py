"""The training loop: truncated BPTT over parallel streams, AdamW, warm-up then decay, clipping.

Read ``Trainer.run`` and ``Trainer.train_step`` top to bottom: they are the whole algorithm. Building a
``Trainer`` sets a run up (device, run directory, corpus, the auto plan, model, optimizer, or all
of it restored for ``--resume``). Everything the loop wants the outside world to know (progress,
evaluations, checkpoints) goes out as an event to ``on_event``; the dashboard is one consumer,
tests are another.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from datetime import datetime
from typing import Callable

import numpy as np
import torch

from ..checkpoint import BEST_NAME, LAST_NAME, Checkpoint, load_checkpoint, save_checkpoint
from ..devices import autocast_for, keep_freed_memory, pick_device, resolve_precision, to_device
from ..errors import ChargenError
from ..evaluation import evaluate
from ..fileio import remove_stale_temp_files
from ..generation.sampler import Sampler
from ..generation.settings import SamplingSettings
from ..model import CharLM, State, detach_state, grow_vocab, map_state
from ..text.batches import StreamBatches
from ..text.corpus import Corpus, load_corpus
from . import distributed
from .auto import (AUTO_RULES, AUTO_TIMING_STEPS, DEFAULT_HIDDEN, DEFAULT_SEQ_LEN, SHORT_SEQ_LEN,
                   auto_eval_every, eval_cost_in_steps, initial_value, planned_epochs)
from .budget import Budget
from .config import TrainConfig
from .guard import StepGuard, sync_interval
from .events import AutoChosen, CheckpointSaved, EvalDone, Event, RunFinished, RunStarted, StepDone, TrainingInterrupted
from .objective import training_loss
from .optim import check_model_fits, lr_at, make_optimizer
from .probe import Probe
from .resume import (check_same_corpus, config_for_resume, corpus_fingerprint, load_resumable, recorded_corpus,
                     restore_optimizer, restore_rng, saved_peak_lr, saved_penalty, saved_rnn_state, training_state)
from .rundir import MetricsLog, check_writable, create_run_dir, lock_run_dir, make_run_dir
from .saving import save_due
from .stopping import StopRequest
from .vocab import initial_tokenizer

MAX_BAD_STEPS_IN_A_ROW = 5  # non-finite steps are skipped; this many in a row means the run diverged
PREVIEW_SETTINGS = SamplingSettings(temp=0.8, seed=0)  # the dashboard's sample at each evaluation


class Trainer:
    """One training run. Build it with ``Trainer(config, corpus_paths)``, then call ``run()``."""

    def __init__(self, config: TrainConfig, corpus_paths: list[str] | None = None,
                 on_event: Callable[[Event], None] | None = None, resume: str | None = None):
        self.created = time.perf_counter()  # --max-time counts from here: reading the corpus is part of the run
        self.on_event = on_event or (lambda event: None)
        self.stop = StopRequest()
        resumed = load_resumable(resume) if resume else None
        if resumed is not None:
            config = config_for_resume(config, resumed, resume)
            corpus_paths = corpus_paths or recorded_corpus(resumed, resume)
        self.config = config.validate()
        torch.manual_seed(config.seed)
        self._join_devices()
        self.run_dir = self.dist.broadcast_object(  # a generated name is rank 0's
            resumed.path.parent if resumed else make_run_dir(config.out, corpus_paths))
        check_writable(self.run_dir, "--resume" if resumed else "--out")  # fail before reading the corpus
        init = load_checkpoint(config.init_from) if config.init_from and not resumed else None
        train_tokens = self._read_corpus(corpus_paths, resumed, init)
        self._plan(train_tokens, init, resumed)
        self._build_model(init, resumed)
        self.step, self.elapsed_before, self.skipped_steps = 0, 0.0, 0
        self.last_eval_seconds = 0.0
        self.best_val_loss: float | None = None
        self.state: State = None
        if resumed:
            self._restore(resumed)
        self.last_save = self.elapsed_before  # --save-every counts from the start, or from the resume
        self.guard = StepGuard(self.optimizer, self.device, sync_interval(self.device, self.config.log_every),
                               self.skipped_steps)
        self._open_run_dir()

    # -- set-up, in the order __init__ runs it --

    def _join_devices(self) -> None:
        """Pick the device and precision; under torchrun join the job (each rank trains its own streams)."""
        config = self.config
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

    def _read_corpus(self, corpus_paths, resumed: Checkpoint | None, init: Checkpoint | None) -> np.ndarray:
        """Encode (or find in the cache) the corpus and split it; returns the training tokens."""
        config = self.config
        tokenizer = resumed.tokenizer if resumed else initial_tokenizer(init, corpus_paths, config)
        with self.dist.local_main_first():  # one process per machine encodes; the rest hit the cache
            self.corpus: Corpus = load_corpus(
                corpus_paths, tokenizer=tokenizer, tokenizer_kind=config.tokenizer,
                vocab_size=config.vocab_size, normalize=config.normalize, encoding=config.encoding,
                cache_dir=self.run_dir.parent / ".cache")
        self.tokenizer = self.corpus.tokenizer
        train_tokens, self.val_tokens = self.corpus.split(config.val_frac)
        self.corpus_fingerprint = corpus_fingerprint(train_tokens)
        if resumed:
            check_same_corpus(resumed, self.corpus.files, len(train_tokens), self.corpus_fingerprint)
        return train_tokens

    def _plan(self, train_tokens: np.ndarray, init: Checkpoint | None, resumed: Checkpoint | None) -> None:
        """Settle every ``auto`` that can be settled before training: shape, precision, eval interval."""
        # Native bf16 on a CPU is not always the faster: with --precision auto, timed steps decide.
        probe = Probe(self.config, self.tokenizer.vocab_size, train_tokens, self.device, self.dist.world_size,
                      self.precision, self.config.precision == "auto" and self.device.type == "cpu"
                      and self.precision == "bf16")
        config = self.config = self._settle_shape(probe, train_tokens, init)
        if config.eval_every == "auto":
            config = self.config = replace(config, eval_every=auto_eval_every(config.batch_size, config.seq_len))
        self.batches = StreamBatches(train_tokens, config.batch_size, config.seq_len,
                                     streams=self.dist.streams(config.batch_size))
        self.budget = Budget(len(self.batches), config.max_steps, config.epochs, config.max_time)
        if config.val_frac > 0 and len(self.val_tokens) < 2:
            raise ChargenError(f"--val-frac {config.val_frac}: the validation split is empty for this "
                               "small corpus; raise it or use --val-frac 0")
        sample = np.asarray(train_tokens[:1 << 20])
        self.chars_per_token = self.tokenizer.count_chars(sample) / max(len(sample), 1)
        # The auto options are settled at this step (None: nothing to settle; a resumed run keeps its own).
        self.auto_step = None
        if any(getattr(config, name) == "auto" for name in AUTO_RULES) and not resumed:
            self.auto_step = AUTO_TIMING_STEPS[1] if config.max_time else 0
        self.timing_marks: list[float] = []  # when each timed step started (elapsed seconds)
        if not (resumed or init):
            check_model_fits(config, self.tokenizer.vocab_size, self.device)
        if probe.precision_to_time:  # not timed with the shape: time it at the run's own shape
            if self.dist.is_main:
                probe.time_precisions(config.hidden, config.seq_len)
            self._take_precision(self.dist.broadcast_object(probe.precision))
        self.precision_plan = probe.precision_plan

    def _settle_shape(self, probe: Probe, train_tokens: np.ndarray, init: Checkpoint | None) -> TrainConfig:
        """The config with ``--hidden`` and ``--seq-len`` as numbers; a --max-time budget is probed.
        A run started from a checkpoint keeps that model's width."""
        config = self.config
        hidden = init.model.config.hidden if init else config.hidden
        seq_len = config.seq_len
        rows = config.batch_size // self.dist.world_size
        probe_window = SHORT_SEQ_LEN if seq_len == "auto" else seq_len
        self.shape_plan: dict | None = None  # what --hidden / --seq-len auto measured and chose
        if "auto" in (hidden, seq_len) and config.max_time and len(train_tokens) > rows * (probe_window + 1):
            plan = None
            if self.dist.is_main:
                seconds = config.max_time - (time.perf_counter() - self.created)
                width, window, self.shape_plan = probe.plan_shape(hidden, seq_len, seconds)
                plan = width, window, probe.precision
            hidden, seq_len, precision = self.dist.broadcast_object(plan)
            probe.precision_to_time = False
            self._take_precision(precision)
        return replace(config, hidden=DEFAULT_HIDDEN if hidden == "auto" else hidden,
                       seq_len=DEFAULT_SEQ_LEN if seq_len == "auto" else seq_len)

    def _take_precision(self, precision: str) -> None:
        self.precision = precision
        self.autocast = autocast_for(self.device, precision)
        torch.manual_seed(self.config.seed)  # the probes drew initial weights: start afresh, as without them

    def _build_model(self, init: Checkpoint | None, resumed: Checkpoint | None) -> None:
        config = self.config
        if resumed:
            self.model = resumed.model
        elif init:
            self.model = grow_vocab(init.model, self.tokenizer.vocab_size) if config.extend_vocab else init.model
            self.model.regularize(**{**config.regularization(), "dropout": self._initial("dropout")})
        else:
            self.model = CharLM(config.model_config(self.tokenizer.vocab_size, self._initial("dropout")))
        self.model.to(self.device).train()
        self.peak_lr = self._initial("lr")
        self.ar, self.tar = self._initial("ar"), self._initial("tar")
        self.optimizer = make_optimizer(self.model, self._initial("weight_decay"), self.peak_lr)
        train_model = self.dist.wrap_model(self.model, self.device)  # DDP under torchrun
        self.step_fn = torch.compile(train_model) if config.compile else train_model
        if self.dist.enabled:
            torch.manual_seed(config.seed + self.dist.rank)  # own dropout masks for own streams

    def _initial(self, option: str) -> float:
        return initial_value(option, getattr(self.config, option), self.total_steps(), bool(self.config.max_time),
                             len(self.batches))

    def _restore(self, resumed: Checkpoint) -> None:
        """Continue from a ``last`` checkpoint: counters, optimizer, RNGs and the carried state."""
        summary = resumed.summary
        self.step = summary["step"]
        self.elapsed_before = float(summary.get("elapsed", 0.0))
        if self.config.lr == "auto":  # keep the rate this run chose
            self.peak_lr = saved_peak_lr(resumed)
        self.ar, self.tar = (saved_penalty(resumed, name) if getattr(self.config, name) == "auto"
                             else getattr(self, name) for name in ("ar", "tar"))
        self.skipped_steps = summary.get("skipped_steps", 0)
        self.best_val_loss = summary.get("best_val_loss")
        restore_optimizer(self.optimizer, resumed)
        restore_rng(resumed, self.device)
        state = saved_rnn_state(resumed, self.model.config, self.config.batch_size)
        if state is not None:
            self.state = self.dist.my_state(map_state(state, lambda t: t.to(self.device)), self.config.batch_size)
        ranks_rng = resumed.training_state.get("rng.torch.ranks")
        if self.dist.enabled and ranks_rng is not None and len(ranks_rng) == self.dist.world_size:
            torch.set_rng_state(ranks_rng[self.dist.rank].clone())

    def _open_run_dir(self) -> None:
        create_run_dir(self.run_dir)
        self.lock = None
        self.metrics = MetricsLog(self.run_dir)
        if not self.dist.is_main:  # rank 0 is the only writer; other ranks would find the lock taken
            return
        self.lock = lock_run_dir(self.run_dir)
        remove_stale_temp_files(self.run_dir)
        self.metrics.trim_after(self.step)
        if self.shape_plan:
            self._log_metrics(step=0, **self.shape_plan)
        if self.precision_plan:
            self._log_metrics(step=0, precision_plan=self.precision_plan)

    # -- budget --

    def total_steps(self) -> int | None:
        return self.budget.total_steps()

    def progress(self, elapsed: float) -> float:
        """Fraction of the budget used: drives the lr schedule and the progress bar."""
        return self.budget.progress(self.step, elapsed)

    def _settle_auto(self, elapsed: float) -> None:
        """Settle the auto options from the epochs the budget allows, at the rate measured so far."""
        c = self.config
        time_left = c.max_time - elapsed if c.max_time else None
        eval_cost = eval_cost_in_steps(c.eval_tokens, len(self.val_tokens), c.batch_size, c.seq_len, c.eval_every)
        epochs = planned_epochs(self.step, self.total_steps(), len(self.batches), time_left, self.timing_marks,
                                eval_cost)
        chosen = {name: rule(epochs) if getattr(c, name) == "auto" else None for name, rule in AUTO_RULES.items()}
        if chosen["dropout"] is not None:
            self.model.regularize(dropout=chosen["dropout"])
        if chosen["weight_decay"] is not None:
            self.optimizer.param_groups[0]["weight_decay"] = chosen["weight_decay"]  # group 0: the matrices
        if chosen["lr"] is not None:
            self.peak_lr = chosen["lr"]
        self.ar, self.tar = (getattr(self, name) if chosen[name] is None else chosen[name] for name in ("ar", "tar"))
        self.auto_step = None
        self._log_metrics(step=self.step, planned_epochs=round(epochs, 2),
                          **{name: value for name, value in chosen.items() if value is not None})
        self.on_event(AutoChosen(self.step, epochs, **chosen))

    def request_stop(self, signal_number: int | None = None) -> None:
        """Finish the current step, save a checkpoint and stop (what Ctrl-C does)."""
        self.stop.set(signal_number)

    # -- the run --

    def run(self) -> RunFinished:
        """Train until the budget is used up or a stop is requested; returns the summary event."""
        c = self.config
        self.on_event(RunStarted(self.run_dir, c, self.model.config, self.model.num_parameters(),
                                 str(self.device), self.precision, len(self.batches.tokens),
                                 len(self.val_tokens), len(self.batches), self.total_steps(), self.step,
                                 self.shape_plan, self.precision_plan))
        try:
            with self.stop.on_signals(self.run_dir):
                return self._loop()
        except torch.cuda.OutOfMemoryError:
            raise ChargenError(f"out of GPU memory at step {self.step + 1}; lower --batch-size, --seq-len "
                               f"or --hidden (checkpoints already in {self.run_dir} are intact)") from None
        finally:
            if self.lock is not None:
                self.lock.close()  # releases the run directory for a later --resume
                self.lock = None
            if self.dist.enabled:
                self.step_fn = self.model  # free DDP while the group lives: freed later, it can hang
                self.dist.close()

    def _loop(self) -> RunFinished:
        c = self.config
        chars_per_step = c.batch_size * c.seq_len * self.chars_per_token
        window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
        reason = None
        while True:
            elapsed = self.elapsed_before + time.perf_counter() - self.created
            # All ranks stop together and follow one clock, or their collectives stop matching.
            elapsed, stop = self.dist.agree(elapsed, self.stop.is_set())
            clock = elapsed  # rank 0's: saving decisions too must be the same on every rank
            reason = self.budget.finished_reason(self.step, elapsed, self.last_eval_seconds)
            if reason or stop:
                break
            if self.auto_step is not None and self.step >= AUTO_TIMING_STEPS[0]:
                self.timing_marks.append(elapsed)
            if self.step == self.auto_step:
                self._settle_auto(elapsed)
            lr = lr_at(self.step, self.progress(elapsed), self.peak_lr, c.warmup_steps, c.min_lr_frac, c.schedule)
            self.train_step(lr)
            if not self.guard.due(self.step):  # accelerators: the host reads back every few steps
                continue
            seen = self.guard.read()
            self.skipped_steps = seen.skipped_steps
            if seen.worst_bad_run >= MAX_BAD_STEPS_IN_A_ROW:
                raise ChargenError(self._diverged_message(seen.worst_bad_run))
            if not seen.good_steps:  # only skipped steps since the last reading
                continue
            window_steps += seen.good_steps
            window_loss += seen.loss_sum
            now = time.perf_counter()
            elapsed = self.elapsed_before + now - self.created
            chars_per_sec = window_steps * chars_per_step / max(now - window_start, 1e-9)
            self.on_event(StepDone(self.step, self.step / len(self.batches), elapsed,
                                   seen.last_loss / self.chars_per_token, lr, seen.last_grad_norm, chars_per_sec,
                                   self.progress(elapsed), self.skipped_steps))
            if self.step % c.log_every == 0:
                self._log_metrics(step=self.step, time=round(elapsed, 3),
                                  train_loss=window_loss / window_steps / self.chars_per_token,
                                  lr=lr, grad_norm=seen.last_grad_norm, chars_per_sec=round(chars_per_sec, 1))
                window_start, window_steps, window_loss = now, 0, 0.0
            if self.step % c.eval_every == 0:
                self._evaluate_and_save(elapsed)
                self.last_save = clock
            elif save_due(clock, self.last_save, c.save_every):  # between evaluations: last alone
                self.save(LAST_NAME, elapsed)
                self.last_save = clock
        return self._finish(reason)

    def train_step(self, lr: float) -> None:
        """One truncated-BPTT step at learning rate ``lr``. A step whose loss or gradients are not
        finite is skipped (``StepGuard``): weights, optimizer state and step count of AdamW stay,
        and the next window starts from a fresh state."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.step % len(self.batches) == 0:
            self.state = None  # a new epoch starts the streams over: nothing to carry
        x, y = (to_device(t, self.device) for t in self.batches[self.step])
        with self.autocast():
            logits, state, top = self.step_fn(x, self.state, with_top=True)
        loss, objective = training_loss(logits, y, top, self.ar, self.tar)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        # The norm before clipping is what tells you training is unstable: log that one.
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        loss = self.dist.mean(loss.detach())  # the whole batch's loss, the same on every rank
        finite = self.guard.step(loss, grad_norm)
        self.step += 1
        self.state = map_state(detach_state(state), lambda t: torch.where(finite, t, 0.0))

    def _finish(self, reason: str | None) -> RunFinished:
        elapsed = self.elapsed_before + time.perf_counter() - self.created
        if reason is None:  # stopped on request: keep what we have, say how to go on
            self.save(LAST_NAME, elapsed)
            raise TrainingInterrupted(self.run_dir, self.step, self.stop.signal_number)
        if self.step % self.config.eval_every != 0 or not self.dist.main_says((self.run_dir / LAST_NAME).exists()):
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

    # -- evaluation and checkpoints --

    def _evaluate_and_save(self, elapsed: float) -> None:
        started = time.perf_counter()
        is_best = self._evaluate(elapsed) if self.config.val_frac > 0 else True  # no split: the newest is best
        self.save(LAST_NAME, elapsed)
        if is_best:
            self.save(BEST_NAME, elapsed, with_training_state=False)
        # What the final one will take too: --max-time keeps room for it (Budget.finished_reason).
        self.last_eval_seconds = time.perf_counter() - started

    def _evaluate(self, elapsed: float) -> bool:
        """Score the validation split, log it, tell the dashboard; whether it is the best so far."""
        result = evaluate(self.model, self.val_tokens, self.tokenizer, autocast=self.autocast,
                          max_tokens=self.config.eval_tokens or None, dist=self.dist)
        val_loss = result.nats_per_char
        is_best = self.best_val_loss is None or val_loss < self.best_val_loss
        if is_best:
            self.best_val_loss = val_loss
        sample = self.preview() if self.dist.is_main else ""
        self._log_metrics(step=self.step, time=round(elapsed, 3), val_loss=val_loss, val_bpc=result.bits_per_char)
        self.on_event(EvalDone(self.step, val_loss, self.best_val_loss, is_best, sample))
        return is_best

    def preview(self) -> str:
        """A short sample from the current model, for the dashboard."""
        if not self.config.preview_length:
            return ""
        was_training = self.model.training
        self.model.eval()
        sampler = Sampler(self.model, self.tokenizer)
        text = sampler.generate(replace(PREVIEW_SETTINGS, length=self.config.preview_length))[0]
        self.model.train(was_training)
        return text

    def _log_metrics(self, **record) -> None:
        if self.dist.is_main:
            self.metrics.append(**record)

    def summary(self, elapsed: float) -> dict:
        """What a checkpoint records about the run (``chargen info`` shows it; resume reads it)."""
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
            "ar": self.ar, "tar": self.tar,  # likewise
            "precision": self.precision,
            "saved_at": datetime.now().isoformat(timespec="seconds"),
        }

    def save(self, name: str, elapsed: float, with_training_state: bool = True) -> None:
        """Write checkpoint ``name`` in the run directory (rank 0 writes; every rank must call it)."""
        if any(not torch.isfinite(p).all() for p in self.model.parameters()):
            raise ChargenError(f"step {self.step}: the weights hold NaN/inf; not saving them over "
                               f"good checkpoints. Lower --lr (now {self.peak_lr:g})")
        self.skipped_steps = self.guard.skipped_steps()
        summary = self.summary(elapsed)
        summary["optimizer_param_groups"] = self.optimizer.state_dict()["param_groups"]
        tensors = training_state(self.optimizer, self.device, self.dist, self.state) if with_training_state else None
        if not self.dist.is_main:
            return  # rank 0 alone writes
        try:
            save_checkpoint(self.run_dir / name, self.model, self.tokenizer, summary, tensors)
        except ChargenError as exc:  # disk full, read-only: say how to go on once it is fixed
            then = (f"then continue with: chargen train --resume {self.run_dir}"
                    if (self.run_dir / LAST_NAME).exists() else "then start the run again")
            raise ChargenError(f"{exc}; {then}") from None
        self.on_event(CheckpointSaved(self.run_dir / name, self.step))

