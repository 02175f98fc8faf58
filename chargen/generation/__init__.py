"""Text out: sampling settings, the stateful sampler, stop strings and beam search."""

from .settings import SamplingSettings

__all__ = ["SamplingSettings"]
