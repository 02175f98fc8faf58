"""The serve scheduler: batched streams give each request exactly its single-request text."""

from __future__ import annotations

import random
import threading
from dataclasses import replace

import pytest

from chargen.generation.sampler import Sampler
from chargen.generation.settings import SamplingSettings
from chargen.limits import MAX_LENGTH
from chargen.ui.scheduler import Failed, Finished, Job, Piece, QueueFull, Scheduler, ShuttingDown
from tests.conftest import TOKENIZER, random_model

WAIT = 60  # seconds: a bound for a wait that should end at once, not a pause


class Collector:
    """A job's ``emit``: gathers texts and finish reasons; ``done`` is set when all have ended."""

    def __init__(self, n: int = 1):
        self.texts, self.reasons, self.tokens = [""] * n, [None] * n, [0] * n
        self.failed = None
        self.started, self.done = threading.Event(), threading.Event()

    def __call__(self, event) -> None:
        if isinstance(event, Piece):
            self.texts[event.index] += event.text
            self.started.set()
        elif isinstance(event, Finished):
            self.reasons[event.index], self.tokens[event.index] = event.reason, event.tokens
            if all(r is not None for r in self.reasons):
                self.done.set()
        elif isinstance(event, Failed):
            self.failed = event.message
            self.done.set()


def job(prompt="the ", n=1, stops=(), **settings) -> tuple[Job, Collector]:
    collector = Collector(n)
    return Job(prompt, SamplingSettings(**settings), collector, stops=tuple(stops), n=n), collector


def reference(model, prompt, n, stop, **settings) -> list[str]:
    """What ``chargen sample --prime PROMPT --num-samples N --stop STOP`` generates."""
    sampler = Sampler(model, TOKENIZER, batch_size=n)
    sampler.feed(prompt)
    return sampler.generate(SamplingSettings(stop=stop, **settings))


@pytest.fixture
def scheduler_for():
    made = []

    def make(model, **options) -> Scheduler:
        made.append(Scheduler(model, TOKENIZER, **options))
        return made[-1]

    yield make
    for scheduler in made:
        scheduler.close()
        scheduler.join(WAIT)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_32_concurrent_requests_each_get_their_single_request_text(cell, scheduler_for):
    model = random_model(cell=cell)
    rng = random.Random(1)
    cases = []
    for i in range(32):
        settings = dict(seed=i, length=rng.randint(1, 60), temp=rng.choice([0, 0.5, 1.0]),
                        top_k=rng.choice([0, 5]), top_p=rng.choice([1.0, 0.9]))
        prompt = rng.choice(["", "the ", "a quick fox, ", "zz"])
        n = 2 if i % 8 == 3 else 1
        stop = rng.choice([None, "e", " t", ("xq", " t", "o")])
        cases.append((prompt, n, stop, settings))
    scheduler = scheduler_for(model, batch_rows=64)
    jobs = []
    for prompt, n, stop, settings in cases:
        j, c = job(prompt, n, [stop] if isinstance(stop, str) else stop or [], **settings)
        scheduler.submit(j)
        jobs.append(c)
    for (prompt, n, stop, settings), collector in zip(cases, jobs):
        assert collector.done.wait(WAIT)
        assert collector.texts == reference(model, prompt, n, stop, **settings), (prompt, n, stop, settings)
        assert all(r == "length" for r in collector.reasons) or stop is not None
    assert scheduler.steps < sum(c[3]["length"] for c in cases)  # streams were stepped together


def test_a_cancelled_request_frees_its_rows_for_the_next(scheduler_for):
    scheduler = scheduler_for(random_model(), batch_rows=2)
    long_job, long_out = job(n=2, length=MAX_LENGTH)
    scheduler.submit(long_job)
    assert long_out.started.wait(WAIT)
    waiting, waiting_out = job(length=20, seed=1)
    scheduler.submit(waiting)
    assert scheduler.load["queued_requests"] == 1  # no row free while the long job runs
    scheduler.cancel(long_job)
    assert waiting_out.done.wait(WAIT)
    assert waiting_out.texts == reference(random_model(), "the ", 1, None, length=20, seed=1)
    assert not long_out.done.is_set()  # a cancelled job is dropped silently: its client is gone


def test_a_full_queue_refuses_at_once(scheduler_for):
    scheduler = scheduler_for(random_model(), batch_rows=16, queue_size=1)
    running, running_out = job(n=16, length=MAX_LENGTH)
    scheduler.submit(running)
    assert running_out.started.wait(WAIT)
    scheduler.submit(job()[0])
    with pytest.raises(QueueFull):
        scheduler.submit(job()[0])
    scheduler.cancel(running)


def test_a_request_past_its_time_limit_ends_with_length():
    now = [0.0]
    scheduler = Scheduler(random_model(), TOKENIZER, request_seconds=10, clock=lambda: now[0])
    try:
        slow, out = job(length=MAX_LENGTH, stops=["\x00"])
        scheduler.submit(slow)
        assert out.started.wait(WAIT)
        now[0] = 11.0
        assert out.done.wait(WAIT)
        assert out.reasons == ["length"] and out.texts[0]
    finally:
        scheduler.close()
        scheduler.join(WAIT)


def test_zero_tokens_is_an_empty_completion(scheduler_for):
    scheduler = scheduler_for(random_model())
    zero, out = job(length=0)
    scheduler.submit(zero)
    assert out.done.wait(WAIT)
    assert out.texts == [""] and out.reasons == ["length"] and out.tokens == [0]


def test_closing_cuts_running_streams_fails_queued_ones_and_refuses_new_ones():
    scheduler = Scheduler(random_model(), TOKENIZER, batch_rows=16)
    running, running_out = job(n=16, length=MAX_LENGTH)
    scheduler.submit(running)
    assert running_out.started.wait(WAIT)
    queued, queued_out = job()
    scheduler.submit(queued)
    scheduler.close(grace=0)
    assert running_out.done.wait(WAIT) and running_out.reasons == ["length"] * 16
    assert queued_out.done.wait(WAIT) and "shutting down" in queued_out.failed
    with pytest.raises(ShuttingDown):
        scheduler.submit(job()[0])
    scheduler.join(WAIT)
    assert not scheduler.thread.is_alive()


def test_settings_differ_per_request_in_one_batch(scheduler_for):
    model = random_model()
    scheduler = scheduler_for(model)
    base = SamplingSettings(length=50, seed=5)
    variants = [replace(base, temp=0), replace(base, temp=1.5), replace(base, top_k=2), replace(base, top_p=0.5)]
    outs = []
    for settings in variants:
        collector = Collector()
        scheduler.submit(Job("a ", settings, collector))
        outs.append(collector)
    for settings, out in zip(variants, outs):
        assert out.done.wait(WAIT)
        sampler = Sampler(model, TOKENIZER)
        sampler.feed("a ")
        assert out.texts == sampler.generate(settings)


def test_a_failing_step_fails_its_requests_and_the_next_ones_are_served(scheduler_for):
    model = random_model()
    scheduler = scheduler_for(model)
    step = scheduler.engine.step

    def broken(tokens):
        raise RuntimeError("boom")

    scheduler.engine.step = broken
    failing, failing_out = job(length=10)
    scheduler.submit(failing)
    assert failing_out.done.wait(WAIT) and "internal error" in failing_out.failed
    scheduler.engine.step = step
    fine, fine_out = job(length=10, seed=4)
    scheduler.submit(fine)
    assert fine_out.done.wait(WAIT)
    assert fine_out.texts == reference(model, "the ", 1, None, length=10, seed=4)
