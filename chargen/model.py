"""The language model: embedding -> stacked recurrent cell -> linear head over the vocabulary."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Union

import torch
from torch import nn

CELLS = ("lstm", "gru", "rnn")

# LSTM state is (h, c); GRU and plain RNN state is h. Each tensor is [layers, batch, hidden].
State = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor], None]


@dataclass
class ModelConfig:
    """Shape of the network. Stored in every checkpoint; enough to rebuild the model."""

    vocab_size: int
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    dropout: float = 0.0
    tie_weights: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class CharLM(nn.Module):
    """A recurrent language model over token ids.

    ``forward(tokens, state)`` takes ``[batch, time]`` ids and the state left by the previous call
    (or None for a fresh start) and returns logits ``[batch, time, vocab]`` for the next token at
    every position, plus the new state. Feeding a sequence in one call or in pieces, carrying the
    state, gives the same logits: that is what sampling and truncated BPTT rely on.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[config.cell]
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.rnn = rnn_class(
            config.hidden, config.hidden, num_layers=config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        self._init_weights()
        if config.tie_weights:
            # Input and output embeddings share one matrix: fewer parameters, better small models.
            self.head.weight = self.embed.weight

    def _init_weights(self) -> None:
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)
        if self.config.cell == "lstm":
            # Forget-gate bias 1 (gate order i, f, g, o): remember by default early in training.
            hidden = self.config.hidden
            for layer in range(self.config.layers):
                getattr(self.rnn, f"bias_ih_l{layer}").data[hidden:2 * hidden].fill_(1.0)
                getattr(self.rnn, f"bias_hh_l{layer}").data[hidden:2 * hidden].fill_(0.0)

    def forward(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        x = self.drop(self.embed(tokens))
        out, state = self.rnn(x, state)
        return self.head(self.drop(out)), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def map_state(state: State, fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
    """Apply ``fn`` to every tensor of a recurrent state (LSTM's (h, c) or a single h)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(fn(t) for t in state)
    return fn(state)


def detach_state(state: State) -> State:
    """Cut the autograd history of a carried state (the "truncated" in truncated BPTT)."""
    return map_state(state, torch.Tensor.detach)
