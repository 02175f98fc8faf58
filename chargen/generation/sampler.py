"""Sampling: turn next-token logits into text, one token at a time, carrying the model's state.

``Sampler`` holds the recurrent state between calls, which is what makes a chat remember: each
``feed`` and ``stream`` continues from where the last one stopped. Everything here works on a
batch of independent streams so that ``--num-samples N`` runs them together.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator

import torch

from ..errors import ChargenError, check_known_chars
from ..model import CharLM, State, map_state
from ..model.engine import StepEngine, auto_sampling_precision
from ..text.tokenizers import Tokenizer
from .controls import RepeatHistory
from .settings import SamplingSettings
from .streams import StreamOutcome, StreamTracker

# Feeding text: at most this many of its last tokens are run (see Sampler.feed_ids), in chunks
# of FEED_CHUNK tokens.
PRIME_WINDOW = 2048
FEED_CHUNK = 1024


def pick_tokens(logits: torch.Tensor, settings: SamplingSettings,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose one token per row of ``logits`` [batch, vocab] under temp / top-k / top-p."""
    if settings.temp == 0:
        return logits.argmax(dim=-1)
    probs = sampling_probs(logits, settings)
    # What torch.multinomial(probs, 1) does inside (argmax of probs over Exp(1) noise: the
    # Gumbel-max trick), same draws and same picks, without its per-call validity checks: those
    # are most of the cost of picking a token at batch 1.
    noise = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / noise).argmax(dim=-1)


def sampling_probs(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """The distribution ``pick_tokens`` draws each row's token from (temp > 0), row by row: so
    rows of many requests with the same settings can share one call (chargen serve)."""
    logits = logits.float() / settings.temp
    if 0 < settings.top_k < logits.size(-1):
        kth_best = torch.topk(logits, settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if settings.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens before it already hold top_p of the mass; the best stays.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= settings.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.softmax(logits, dim=-1)


class Sampler:
    """Generates text from a model, keeping the recurrent state between calls.

    ``feed(text)`` runs text through the model in one batched forward pass (a prompt, a user's
    chat turn); ``stream(settings)`` then yields the continuation as text pieces. Both continue
    from the state the previous call left, until ``reset()``.
    """

    def __init__(self, model: CharLM, tokenizer: Tokenizer, batch_size: int = 1,
                 precision: str = "auto", fast: bool = True):
        """``precision`` of the per-token steps: "fp32" (the model's own arithmetic), "bf16"
        (bf16 weight matrices; CPUs with native bf16 only) or "auto" (bf16 where a few timed
        steps show it faster, for big models on AVX512-BF16 CPUs: ``engine.auto_sampling_precision``). Feeding text
        is always fp32. ``fast=False`` uses plain ``model(...)`` calls per token: the reference
        the fast engine is tested against."""
        if precision not in ("fp32", "bf16", "auto"):
            raise ChargenError(f"precision {precision!r}: choose fp32, bf16 or auto")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = next(model.parameters()).device
        self.precision, self.fast = precision, fast
        self._engine: StepEngine | None = None
        self._live: StepEngine | None = None  # the engine holding the current state, if any
        self.outcomes: list[StreamOutcome] = []  # how each stream of the last stream_batch ended
        self.reset()

    def reset(self) -> None:
        """Forget everything fed or generated so far."""
        self.state = None
        self.next_logits: torch.Tensor | None = None  # [batch, vocab], for the token to come

    # The recurrent state, in the model's own format. While tokens are being generated it lives
    # in the fast engine's buffers; reading it copies it out, assigning it takes it back.
    @property
    def state(self) -> State:
        if self._live is not None:
            self._state, self._live = self._live.export_state(), None
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        self._state, self._live = value, None

    def _fast_engine(self) -> StepEngine | None:
        """The per-token engine for the model's current weights, or None to use plain forwards."""
        if not (self.fast and StepEngine.supports(self.model)):
            return None
        if self._engine is None or not self._engine.matches(self.model):
            self._engine = None
            self.state = self.state  # take the state out of an outdated engine first
            precision = auto_sampling_precision(self.model, self.batch_size) if self.precision == "auto" else self.precision
            self._engine = StepEngine(self.model, precision)
        return self._engine

    def _step(self, tokens: torch.Tensor, engine: StepEngine | None) -> torch.Tensor:
        """Feed one token per stream; return the next-token logits [batch, vocab] in fp32."""
        if engine is None:
            with torch.inference_mode():
                logits, self.state = self.model(tokens[:, None], self.state)
            return logits[:, -1].float()
        if self._live is not engine:
            engine.load_state(self._state, len(tokens))
            self._live = engine
        return engine.step(tokens)

    def check_text(self, text: str, what: str = "the text") -> None:
        """Raise a clear error if ``text`` has characters the model's vocabulary lacks."""
        check_known_chars(self.tokenizer, text, what)

    @torch.inference_mode()
    def feed(self, text: str) -> None:
        """Run ``text`` through the model (all streams alike) in one forward pass."""
        if not text:
            return
        self.check_text(text)
        ids = torch.as_tensor(self.tokenizer.encode(text), dtype=torch.long, device=self.device)
        self.feed_ids(ids)

    @torch.inference_mode()
    def feed_ids(self, ids: torch.Tensor) -> None:
        """Run token ids through the model: ``[time]`` for all streams alike, or ``[batch, time]``.

        Only the last ``PRIME_WINDOW`` tokens are run: the state an LSTM reaches no longer
        depends measurably on text that far back, and feeding 100,000 chars exactly would take
        many seconds (each token waits for the one before).
        """
        if ids.size(-1) == 0:
            return
        ids = ids[..., -PRIME_WINDOW:]
        state = self.state
        start = self._start_token()
        if state is None and start is not None and ids.dim() == 1 and ids[0] != start:
            # A model has only ever seen text start after a line break (the corpus's own), not
            # from an empty state mid-line: without it, "def " alone reads like a line's middle.
            ids = torch.cat([ids.new_tensor([start]), ids])
        # Streams that start fresh share one pass over the text; the state is copied out after.
        shared = ids.dim() == 1 and state is None and self.batch_size > 1
        batch = ids if ids.dim() == 2 else ids.expand(1 if shared else self.batch_size, -1)
        next_logits = None
        for start in range(0, batch.size(1), FEED_CHUNK):  # chunks bound the logits' memory
            logits, state = self.model(batch[:, start:start + FEED_CHUNK], state)
            next_logits = logits[:, -1].float()
        if shared:
            state = map_state(state, lambda t: t.expand(-1, self.batch_size, -1).contiguous())
            next_logits = next_logits.expand(self.batch_size, -1).contiguous()
        self.state, self.next_logits = state, next_logits

    def _start_token(self) -> int | None:
        """The line-break token, where the vocabulary has one: where text naturally starts."""
        if self.tokenizer.unknown_chars("\n"):
            return None
        ids = self.tokenizer.encode("\n")
        return int(ids[0]) if len(ids) == 1 else None

    def start_if_empty(self, generator: torch.Generator) -> None:
        if self.next_logits is not None:
            return
        # Nothing fed yet: begin at a line break when the vocabulary has one, else at a random
        # symbol, as char-rnn does.
        start = self._start_token()
        if start is None:
            start = int(torch.randint(self.tokenizer.vocab_size, (1,), generator=generator))
        self.feed_ids(torch.tensor([start], device=self.device))

    def stream_batch(self, settings: SamplingSettings, score: bool = False,
                     clock: Callable[[], float] = time.monotonic) -> Iterator[list[str]]:
        """Yield, per generated token, the new text of every stream ('' once a stream stopped).

        ``self.outcomes`` says, per stream, how many tokens it took and why it ended; with
        ``score`` also the nats of each chosen token under the model, from the logits at hand.
        """
        # No @torch.inference_mode() here: on a generator it is re-entered at every token, which
        # costs more than a fast step. Feeding and plain steps enter it themselves; the engine
        # works on its own tensors, none of which requires grad.
        settings.validate()
        generator = make_generator(settings.seed)
        self.start_if_empty(generator)
        tracker = StreamTracker(self.tokenizer, self.batch_size, settings, clock)
        self.outcomes = tracker.outcomes
        # The controls run only when asked for: the plain path stays as fast as it was.
        history = RepeatHistory(settings, self.batch_size, self.tokenizer.vocab_size) if settings.controls_on else None
        engine = self._fast_engine()
        timed = settings.max_time is not None
        for _ in range(settings.length):
            if not tracker.live:
                return
            if timed and tracker.out_of_time():
                yield tracker.finish("time")
                return
            logits = self.next_logits.cpu()
            token = pick_tokens(history.adjust(logits) if history else logits, settings, generator)
            if score:
                tracker.score(logits, token)
            self.next_logits = self._step(token.to(self.device), engine)
            chosen = token.tolist()
            if history:
                history.push(chosen)
            yield tracker.push(chosen)
        yield tracker.finish("length")

    def stream(self, settings: SamplingSettings) -> Iterator[str]:
        """Yield the continuation of a single stream as text pieces, as they are generated."""
        for pieces in self.stream_batch(settings):
            if pieces[0]:
                yield pieces[0]

    def generate(self, settings: SamplingSettings) -> list[str]:
        """The full continuation of every stream."""
        texts = [""] * self.batch_size
        for pieces in self.stream_batch(settings):
            texts = [t + p for t, p in zip(texts, pieces)]
        return texts


def make_seed() -> int:
    """A fresh random seed from the OS (63 bits: it fits every seed option)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU RNG for sampling: seeded for reproducible text, else from the OS."""
    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else make_seed())
    return generator
