"""The Python API: ``chargen.load`` a trained model, then generate, stream or evaluate.

    model = chargen.load("checkpoints/shakespeare")        # run directory or checkpoint file
    print(model.generate("ROMEO:", length=300, temp=0.8, seed=1))
    for piece in model.stream("JULIET:", length=200):
        print(piece, end="", flush=True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from .checkpoint import Checkpoint, load_checkpoint
from .devices import pick_device
from .errors import check_known_chars
from .evaluation import EvalResult, evaluate
from .generation.beam import beam_search
from .generation.sampler import Sampler
from .generation.settings import SamplingSettings


class TrainedModel:
    """A loaded checkpoint, ready to generate text."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.model, self.tokenizer = checkpoint.model, checkpoint.tokenizer

    @property
    def config(self):
        return self.checkpoint.config

    @property
    def summary(self) -> dict:
        return self.checkpoint.summary

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    def describe(self) -> str:
        """One line: shape, vocabulary and size, e.g. ``2x512 lstm, char vocab 65, 3,325,505 parameters``."""
        return (f"{self.config.shape()}, {self.tokenizer.kind} vocab {self.tokenizer.vocab_size}, "
                f"{self.model.num_parameters():,} parameters")

    def sampler(self, num_streams: int = 1) -> Sampler:
        """A stateful generator: ``feed`` text, ``stream`` replies; state carries across calls."""
        return Sampler(self.model, self.tokenizer, batch_size=num_streams)

    def stream(self, prompt: str = "", **settings) -> Iterator[str]:
        """Yield the continuation of ``prompt`` piece by piece as it is generated.

        Settings are ``SamplingSettings`` fields: temp, top_k, top_p, length, stop, seed.
        """
        sampler = self.sampler()
        sampler.feed(prompt)
        yield from sampler.stream(SamplingSettings(**settings))

    def generate(self, prompt: str = "", num_samples: int = 1, beam: int = 0, **settings) -> str | list[str]:
        """The continuation of ``prompt`` (without the prompt itself).

        ``num_samples > 1`` returns a list, generated together in one batch. ``beam > 0`` runs
        beam search of that width instead of sampling (temp/top-k/top-p/seed do not apply).
        """
        options = SamplingSettings(**settings).validate()
        if beam:
            return beam_search(self.model, self.tokenizer, prompt, beam, options.length, options.stop)
        sampler = self.sampler(num_samples)
        sampler.feed(prompt)
        texts = sampler.generate(options)
        return texts if num_samples > 1 else texts[0]

    def evaluate(self, text: str, what: str = "the text") -> EvalResult:
        """Loss of the model on ``text``: nats and bits per character, perplexity."""
        check_known_chars(self.tokenizer, text, what)
        return evaluate(self.model, self.tokenizer.encode(text), self.tokenizer)

    def to(self, device: str) -> "TrainedModel":
        self.model.to(pick_device(device))
        return self

    def __repr__(self) -> str:
        return (f"TrainedModel({str(self.path)!r}, {self.config.shape()}, "
                f"{self.tokenizer.kind} vocab {self.tokenizer.vocab_size})")


def load(path: str | os.PathLike, device: str = "cpu") -> TrainedModel:
    """Load a checkpoint file or run directory (its best checkpoint) for generation."""
    return TrainedModel(load_checkpoint(path, device=pick_device(device)))


def train(corpus=None, **options):
    """Train a model from Python (a notebook, a script); options are ``TrainConfig`` fields, plus
    ``on_event`` (a callback for training events) and ``resume`` (a run directory).

        chargen.train("corpus.txt", max_time=120, hidden=256, out="checkpoints/mine")
    """
    from .training import train as run_training  # imported here: chargen.load alone needs no trainer

    return run_training(corpus, **options)


__all__ = ["TrainedModel", "load", "train", "SamplingSettings"]
