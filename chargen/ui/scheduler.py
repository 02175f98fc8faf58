"""Serving many completions at once: one worker thread steps every active stream together.

``chargen serve`` takes requests from many HTTP clients; stepping each alone would leave most of
every matrix product unused. A ``Scheduler`` owns the model and one batch of streams: requests
(``Job``) join the batch between steps, each token step advances all of them in one engine call,
and a finished, expired or abandoned request leaves at once, freeing its rows.

Batching must not change a request's text: each job has its own RNG, seeded as ``chargen sample``
seeds it, draws its own noise for its own rows with the same ``pick_tokens``, and its prompt is
fed exactly as the ``Sampler`` feeds a prime. So a request's text equals ``chargen sample`` with
the same seed and settings, whatever else is running.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..generation.sampler import Sampler, make_generator, sampling_probs
from ..generation.settings import SamplingSettings
from ..generation.stops import StopFilter
from ..limits import SERVE_BATCH_ROWS, SERVE_QUEUE_SIZE, SERVE_REQUEST_SECONDS
from ..model import map_state
from ..model.engine import StepEngine, auto_sampling_precision


# What a job reports, from the worker thread, through its ``emit`` callback.
@dataclass(frozen=True)
class Piece:
    index: int   # which of the job's n completions
    text: str


@dataclass(frozen=True)
class Finished:
    index: int
    reason: str  # "stop" (a stop string) or "length" (max_tokens, the time limit, or shutdown)
    tokens: int  # tokens generated for this completion


@dataclass(frozen=True)
class Failed:
    message: str  # the whole job failed; nothing more comes


class QueueFull(Exception):
    """Every row is busy and the queue holds as many requests as it may: try again shortly."""


class ShuttingDown(Exception):
    """The server stops: no new requests."""


@dataclass
class Job:
    """One request: ``n`` completions of ``prompt`` under ``settings`` (whose ``stop`` is unused;
    ``stops`` holds the stop strings)."""

    prompt: str
    settings: SamplingSettings
    emit: Callable[[object], None]
    stops: tuple[str, ...] = ()
    n: int = 1
    prompt_tokens: int = 0
    cancelled: bool = False  # set by the client's side: the worker drops the job at its next step
    # The worker's bookkeeping.
    offset: int = 0
    steps: int = 0
    deadline: float = 0.0
    logits: torch.Tensor | None = None
    state: object = None
    generator: torch.Generator | None = None
    decoders: list = field(default_factory=list)
    filters: list = field(default_factory=list)
    tokens: list = field(default_factory=list)
    done: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """Owns the model; steps every active job's streams together in one worker thread."""

    def __init__(self, model, tokenizer, batch_rows: int = SERVE_BATCH_ROWS, queue_size: int = SERVE_QUEUE_SIZE,
                 request_seconds: float = SERVE_REQUEST_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.model, self.tokenizer = model, tokenizer
        self.batch_rows, self.queue_size = batch_rows, queue_size
        self.request_seconds, self.clock = request_seconds, clock
        self.device = next(model.parameters()).device
        self.engine = None
        if StepEngine.supports(model):
            self.engine = StepEngine(model, auto_sampling_precision(model, 1))
        self.state = None  # the batch's state when stepping with the plain forward (no engine)
        self.active: list[Job] = []
        self.pending: collections.deque[Job] = collections.deque()
        self.cond = threading.Condition()
        self.closing_at: float | None = None  # when shutting down: the moment streams are cut
        self.steps = 0
        self.thread = threading.Thread(target=self._run, name="chargen-scheduler", daemon=True)
        self.thread.start()

    # -- the client side (any thread)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises QueueFull or ShuttingDown instead of waiting."""
        with self.cond:
            if self.closing_at is not None:
                raise ShuttingDown()
            rows = sum(j.n for j in self.active) + sum(j.n for j in self.pending) + job.n
            if rows > self.batch_rows and len(self.pending) >= self.queue_size:
                raise QueueFull()  # no row free now and no room to wait for one
            self.pending.append(job)
            self.cond.notify()

    def cancel(self, job: Job) -> None:
        """Free ``job``'s rows at the next step (its client went away)."""
        job.cancel()
        with self.cond:
            self.cond.notify()

    def close(self, grace: float = 0.0) -> None:
        """Stop taking requests; let running streams go on for ``grace`` seconds, then cut them."""
        with self.cond:
            if self.closing_at is None:
                self.closing_at = self.clock() + grace
            for job in self.pending:
                job.emit(Failed("the server is shutting down; try again later"))
            self.pending.clear()
            self.cond.notify()

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request runs or waits (for tests and tools); False on timeout."""
        with self.cond:
            return self.cond.wait_for(lambda: not self.active and not self.pending, timeout)

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    @property
    def load(self) -> dict:
        return {"active_requests": len(self.active), "active_streams": sum(j.n for j in self.active),
                "queued_requests": len(self.pending)}

    # -- the worker thread

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.active and self.closing_at is None:
                    self.cond.wait()
                if self.closing_at is not None and not self.active:
                    return
                joining = []
                rows = sum(j.n for j in self.active)
                while self.pending and rows + self.pending[0].n <= self.batch_rows:
                    job = self.pending.popleft()
                    if not job.cancelled:
                        joining.append(job)
                        rows += job.n
            try:
                self._tick(joining)
            except Exception as exc:  # a bug: fail the requests, keep serving the next ones
                for job in {id(j): j for j in self.active + joining}.values():
                    if not job.done:
                        job.emit(Failed(f"internal error while generating: {type(exc).__name__}"))
                with self.cond:
                    self.active, self.state = [], None
                    self.cond.notify_all()

    def _tick(self, joining: list[Job]) -> None:
        """Admit ``joining``, drop finished jobs, then advance every active stream by one token."""
        started = []
        for job in joining:
            try:
                self._prefill(job)
            except Exception as exc:  # validated before it was queued: this is a bug, not the user's
                job.emit(Failed(f"internal error while reading the prompt: {type(exc).__name__}"))
                continue
            if job.settings.length == 0:
                self._finish(job, "length")
            else:
                started.append(job)
        joining = started
        cut = self.closing_at is not None and self.clock() >= self.closing_at
        for job in self.active:
            if not job.cancelled and (cut or self.clock() >= job.deadline):
                self._finish(job, "length")
        staying = [j for j in self.active if not (j.done or j.cancelled)]
        if joining or len(staying) != len(self.active):
            self._regroup(staying, joining)
        if self.active:
            self._step()

    @torch.inference_mode()
    def _prefill(self, job: Job) -> None:
        """Feed the prompt as ``Sampler.feed`` does (a fresh sampler of ``n`` streams)."""
        job.generator = make_generator(job.settings.seed)
        sampler = Sampler(self.model, self.tokenizer, batch_size=job.n, fast=False)
        sampler.feed(job.prompt)
        sampler.start_if_empty(job.generator)
        job.state, job.logits = sampler.state, sampler.next_logits.cpu()
        job.decoders = [self.tokenizer.decoder() for _ in range(job.n)]
        job.filters = [StopFilter(job.stops) for _ in range(job.n)]
        job.tokens = [0] * job.n
        job.deadline = self.clock() + self.request_seconds

    def _regroup(self, staying: list[Job], joining: list[Job]) -> None:
        """Rebuild the batch's state from the rows of ``staying`` jobs plus the ``joining`` ones."""
        current = self.engine.export_state() if self.engine and self.active else self.state
        parts = [map_state(current, lambda t, j=j: t[:, j.offset:j.offset + j.n]) for j in staying]
        parts += [job.state for job in joining]
        with self.cond:
            self.active = staying + joining
            self.cond.notify_all()  # for wait_until_idle
        offset = 0
        for job in self.active:
            job.offset, job.state = offset, None
            offset += job.n
        if not self.active:
            self.state = None
            return
        first = parts[0]
        if isinstance(first, tuple):
            state = tuple(torch.cat([p[i] for p in parts], dim=1) for i in range(len(first)))
        else:
            state = torch.cat(parts, dim=1)
        if self.engine:
            self.engine.load_state(state, offset)
        else:
            self.state = state

    def _pick(self) -> torch.Tensor:
        """``pick_tokens`` for every job's rows with the job's own generator; the distributions of
        jobs with the same settings are computed in one call, which row by row is the same."""
        groups: dict[tuple, list[Job]] = {}
        for job in self.active:
            s = job.settings
            groups.setdefault((s.temp, s.top_k, s.top_p), []).append(job)
        tokens = torch.empty(sum(job.n for job in self.active), dtype=torch.long)
        for jobs in groups.values():
            rows = torch.cat([torch.arange(job.offset, job.offset + job.n) for job in jobs])
            logits = torch.cat([job.logits for job in jobs]) if len(jobs) > 1 else jobs[0].logits
            if jobs[0].settings.temp == 0:
                tokens[rows] = logits.argmax(dim=-1)
                continue
            probs = sampling_probs(logits, jobs[0].settings)
            # Each job's noise from its own generator, drawn exactly as pick_tokens draws it.
            noise = [torch.empty(job.n, probs.size(-1)).exponential_(1, generator=job.generator) for job in jobs]
            tokens[rows] = (probs / torch.cat(noise)).argmax(dim=-1)
        return tokens

    def _step(self) -> None:
        tokens = self._pick()
        if self.engine:
            logits = self.engine.step(tokens.to(self.device))
        else:
            with torch.inference_mode():
                out, self.state = self.model(tokens.to(self.device)[:, None], self.state)
            logits = out[:, -1].float()
        logits = logits.cpu()
        self.steps += 1
        picked = tokens.tolist()
        for job in self.active:
            job.logits = logits[job.offset:job.offset + job.n]
            self._emit_tokens(job, picked[job.offset:job.offset + job.n])

    def _emit_tokens(self, job: Job, tokens: list[int]) -> None:
        """Decode one token per stream of ``job``, pass the text on, end streams that stopped."""
        if job.cancelled:
            return
        for i, token in enumerate(tokens):
            f = job.filters[i]
            if f.stopped:
                continue
            job.tokens[i] += 1
            text = f.push(job.decoders[i].feed(token))
            if text:
                job.emit(Piece(i, text))
            if f.stopped:
                job.emit(Finished(i, "stop", job.tokens[i]))
        job.steps += 1
        if all(f.stopped for f in job.filters):
            job.done = True
        elif job.steps >= job.settings.length:
            self._finish(job, "length")

    def _finish(self, job: Job, reason: str) -> None:
        """End every stream of ``job`` still going, passing on the text held back."""
        for i, f in enumerate(job.filters):
            if not f.stopped:
                rest = f.flush()
                if rest:
                    job.emit(Piece(i, rest))
                f.stopped = True
                job.emit(Finished(i, reason, job.tokens[i]))
        job.done = True
