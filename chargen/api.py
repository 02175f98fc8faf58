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
from .sampling import Sampler, SamplingSettings, beam_search
from .evaluate import EvalResult, evaluate
from .train import pick_device, train  # noqa: F401  (train is re-exported)


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

    def evaluate(self, text: str) -> EvalResult:
        """Loss of the model on ``text``: nats and bits per character, perplexity."""
        Sampler(self.model, self.tokenizer).check_text(text)
        return evaluate(self.model, self.tokenizer.encode(text), self.tokenizer)

    def to(self, device: str) -> "TrainedModel":
        self.model.to(pick_device(device))
        return self

    def __repr__(self) -> str:
        c = self.config
        return (f"TrainedModel({str(self.path)!r}, {c.layers}x{c.hidden} {c.cell}, "
                f"{self.tokenizer.kind} vocab {self.tokenizer.vocab_size})")


def load(path: str | os.PathLike, device: str = "cpu") -> TrainedModel:
    """Load a checkpoint file or run directory (its best checkpoint) for generation."""
    return TrainedModel(load_checkpoint(path, device=pick_device(device)))


__all__ = ["TrainedModel", "load", "train", "SamplingSettings"]
