"""The Python API: ``chargen.load`` a trained model, then generate, stream or evaluate.

    model = chargen.load("checkpoints/shakespeare")        # run directory or checkpoint file
    print(model.generate("ROMEO:", length=300, temp=0.8, seed=1))
    for piece in model.stream("JULIET:", length=200):
        print(piece, end="", flush=True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .checkpoint import Checkpoint, load_checkpoint
from .devices import pick_device
from .dynamic import Adapter
from .errors import check_known_chars
from .evaluation import EvalResult, evaluate
from .generation.beam import beam_search
from .generation.defaults import read_defaults
from .generation.sampler import Sampler, make_seed
from .generation.settings import SamplingSettings
from .generation.streams import StreamOutcome
from .text.unknown import clean_text


@dataclass
class Sample:
    """One generated text and how it came about (what ``chargen sample --jsonl`` prints)."""

    text: str
    prompt: str
    settings: SamplingSettings  # the seed actually used included
    outcome: StreamOutcome
    index: int = 0  # which of the samples generated together


class TrainedModel:
    """A loaded checkpoint, ready to generate text."""

    def __init__(self, checkpoint: Checkpoint, defaults: SamplingSettings | None = None):
        self.checkpoint = checkpoint
        self.model, self.tokenizer = checkpoint.model, checkpoint.tokenizer
        # Where every call's settings start: the run's generation.toml, if it has one.
        self.defaults = defaults or SamplingSettings()
        self._adapter: Adapter | None = None  # made on the first ``learn``: it keeps the trained weights

    def settings(self, **settings) -> SamplingSettings:
        """Validated settings: ``self.defaults`` with ``settings`` (our names or Hugging Face's) on top."""
        return SamplingSettings.from_kwargs(self.defaults, **settings).validate()

    def clean(self, prompt: str, unknown: str = "error") -> str:
        """``prompt`` with characters the model never saw refused (``error``), dropped (``skip``) or
        mapped to the closest known ones (``replace``)."""
        return clean_text(prompt, self.tokenizer, unknown, "the text")[0]

    @property
    def config(self):
        return self.checkpoint.config

    @property
    def summary(self) -> dict:
        return self.checkpoint.summary

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    @property
    def device(self):
        """The torch device the weights are on."""
        return next(self.model.parameters()).device

    def describe(self) -> str:
        """One line: shape, vocabulary and size, e.g. ``2x512 lstm, char vocab 65, 3,325,505 parameters``."""
        return (f"{self.config.shape()}, {self.tokenizer.kind} vocab {self.tokenizer.vocab_size}, "
                f"{self.model.num_parameters():,} parameters")

    def sampler(self, num_streams: int = 1) -> Sampler:
        """A stateful generator: ``feed`` text, ``stream`` replies; state carries across calls."""
        return Sampler(self.model, self.tokenizer, batch_size=num_streams)

    def learn(self, text: str, carry: bool = False) -> None:
        """Adapt the weights to ``text`` (dynamic evaluation's update: docs/evaluation.md), so what
        it says becomes likelier in what follows. In memory only: the checkpoint file never changes,
        and ``restore_weights`` undoes it. ``carry`` continues from the context of the last call."""
        if self._adapter is None:
            self._adapter = Adapter(self.model)
        self._adapter.learn_text(self.tokenizer.encode(self.clean(text)), carry)

    def restore_weights(self) -> None:
        """Put back the trained weights exactly, undoing every ``learn`` and ``adapt=True``."""
        if self._adapter is not None:
            self._adapter.restore()

    @property
    def adapted(self) -> bool:
        """Whether the weights differ from the trained ones (``learn`` or ``adapt=True``)."""
        return self._adapter is not None and self._adapter.steps > 0

    def stream(self, prompt: str = "", unknown: str = "error", adapt: bool = False, **settings) -> Iterator[str]:
        """Yield the continuation of ``prompt`` piece by piece as it is generated.

        Settings are ``SamplingSettings`` fields (temp, top_k, top_p, length, stop, seed,
        repetition_penalty, no_repeat_ngram, repeat_window, min_length, max_time) or their Hugging
        Face names (temperature, max_new_tokens, stop_strings, ...: ``settings.HF_NAMES``).
        ``unknown`` says what to do with characters the model never saw: error, skip or replace.
        """
        options = self.settings(**settings)
        sampler = self.sampler()
        prompt = self.clean(prompt, unknown)
        sampler.feed(prompt)
        written = []
        for piece in sampler.stream(options):
            written.append(piece)
            yield piece
        if adapt:
            self.learn(prompt + "".join(written))

    def generate(self, prompt: str = "", num_samples: int = 1, beam: int = 0, unknown: str = "error",
                 adapt: bool = False, **settings) -> str | list[str]:
        """The continuation of ``prompt`` (without the prompt itself).

        ``num_samples > 1`` returns a list, generated together in one batch. ``beam > 0`` runs
        beam search of that width instead of sampling (temp/top-k/top-p/seed do not apply).
        ``adapt=True`` (here and in ``stream``) then ``learn``s the prompt and what was generated:
        the model adapts to the conversation as it goes; ``restore_weights`` undoes it.
        """
        options = self.settings(**settings)
        prompt = self.clean(prompt, unknown)
        if beam:
            texts = [beam_search(self.model, self.tokenizer, prompt, beam, options.length, options.stops)]
        else:
            sampler = self.sampler(num_samples)
            sampler.feed(prompt)
            texts = sampler.generate(options)
        for text in texts if adapt else ():
            self.learn(prompt + text)
        return texts if num_samples > 1 and not beam else texts[0]

    def samples(self, prompt: str = "", num_samples: int = 1, unknown: str = "error", **settings) -> Iterator[Sample]:
        """Generate ``num_samples`` texts together and yield each as it finishes, with its outcome:
        tokens, mean nats/char under the model, stop reason, and the seed actually used."""
        options = self.settings(**settings)
        if options.seed is None:  # a seed of our own, reported, so any sample can be made again
            options = SamplingSettings.from_kwargs(options, seed=make_seed())
        prompt = self.clean(prompt, unknown)
        sampler = self.sampler(num_samples)
        sampler.feed(prompt)
        texts, done = [""] * num_samples, set()
        for pieces in sampler.stream_batch(options, score=True):
            texts = [t + p for t, p in zip(texts, pieces)]
            for i, outcome in enumerate(sampler.outcomes):
                if outcome.stop_reason is not None and i not in done:
                    done.add(i)
                    yield Sample(texts[i], prompt, options, outcome, i)

    def evaluate(self, text: str, what: str = "the text") -> EvalResult:
        """Loss of the model on ``text``: nats and bits per character, perplexity."""
        check_known_chars(self.tokenizer, text, what)
        return evaluate(self.model, self.tokenizer.encode(text), self.tokenizer)

    def to(self, device: str) -> "TrainedModel":
        self.restore_weights()  # the adapter's copies stay where they were: start again from trained
        self._adapter = None
        self.model.to(pick_device(device))
        return self

    def __repr__(self) -> str:
        return (f"TrainedModel({str(self.path)!r}, {self.config.shape()}, "
                f"{self.tokenizer.kind} vocab {self.tokenizer.vocab_size})")


def load(path: str | os.PathLike, device: str = "cpu") -> TrainedModel:
    """Load a checkpoint file or run directory (its best checkpoint) for generation; its run's
    ``generation.toml``, if any, gives the default settings."""
    checkpoint = load_checkpoint(path, device=pick_device(device))
    return TrainedModel(checkpoint, SamplingSettings(**read_defaults(checkpoint.path)))


def train(corpus=None, **options):
    """Train a model from Python (a notebook, a script); options are ``TrainConfig`` fields, plus
    ``on_event`` (a callback for training events) and ``resume`` (a run directory).

        chargen.train("corpus.txt", max_time=120, hidden=256, out="checkpoints/mine")
    """
    from .training import train as run_training  # imported here: chargen.load alone needs no trainer

    return run_training(corpus, **options)


__all__ = ["TrainedModel", "Sample", "load", "train", "SamplingSettings"]
