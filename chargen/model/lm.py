"""The language model: embedding -> stacked recurrent cell -> linear head over the vocabulary."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Dropout, FusedLayers, PeepholeLSTM, StackedGRU, StackedLSTM, StackedRNN, drop_token_rows
from .state import State

CELLS = ("lstm", "gru", "rnn", "lstm-peephole")
# The ModelConfig fields that act only while training, and may change between runs of one model.
REGULARIZATION = ("dropout", "weight_drop", "locked_dropout", "embed_dropout")
# What a checkpoint or run written before each of these options existed was trained with.
BEFORE_OPTION = {"skip_connections": False, "weight_drop": 0.0, "locked_dropout": False, "embed_dropout": 0.0}


class TopOutput(NamedTuple):
    """The top layer's output ``[batch, time, hidden]``, as it leaves the layer and as the head
    reads it (after dropout)."""

    raw: torch.Tensor
    dropped: torch.Tensor


@dataclass
class ModelConfig:
    """Shape of the network. Stored in every checkpoint; enough to rebuild the model."""

    vocab_size: int
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    dropout: float = 0.0
    tie_weights: bool = True
    # Every layer's output feeds the head, each through its own weights ("skip connections",
    # Graves 2013), not the top layer's alone. Checkpoints from before this option have none.
    skip_connections: bool = True
    # Regularization while training, none of it at inference: DropConnect on the hidden-to-hidden
    # weights (AWD-LSTM's weight drop), one dropout mask per sequence instead of per time step
    # (variational, "locked"), and whole tokens dropped from the input embedding.
    weight_drop: float = 0.0
    locked_dropout: bool = False
    embed_dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def shape(self) -> str:
        """The model in a few characters, as every listing shows it: ``2x512 lstm``."""
        return f"{self.layers}x{self.hidden} {self.cell}"


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
        rnn_class = {"lstm": StackedLSTM, "gru": StackedGRU, "rnn": StackedRNN,
                     "lstm-peephole": PeepholeLSTM}[config.cell]
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.rnn = rnn_class(
            config.hidden, config.hidden, num_layers=config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.drop = Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        # The lower layers' outputs, side by side, into the logits too (ModelConfig.skip_connections).
        self.skip_head = (nn.Linear((config.layers - 1) * config.hidden, config.vocab_size, bias=False)
                          if config.skip_connections and config.layers > 1 else None)
        if self.skip_head is not None and isinstance(self.rnn, FusedLayers):
            self.rnn.use_layerwise_buffers()  # its calls run one layer at a time
        self.regularize()
        self._init_weights()
        if config.tie_weights:
            # Input and output embeddings share one matrix: fewer parameters, better small models.
            self.head.weight = self.embed.weight

    def _init_weights(self) -> None:
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)
        if self.skip_head is not None:
            nn.init.zeros_(self.skip_head.weight)  # starts as the model without skip connections
        if self.config.cell in ("lstm", "lstm-peephole"):
            # Forget-gate bias 1 (gate order i, f, g, o): remember by default early in training.
            hidden = self.config.hidden
            for layer in range(self.config.layers):
                getattr(self.rnn, f"bias_ih_l{layer}").data[hidden:2 * hidden].fill_(1.0)
                getattr(self.rnn, f"bias_hh_l{layer}").data[hidden:2 * hidden].fill_(0.0)

    def forward(self, tokens: torch.Tensor, state: State = None, with_top: bool = False):
        """``(logits, state)``; with ``with_top`` also the top layer's output as ``TopOutput``
        (what training's activation penalties act on)."""
        # Dropout acts on every layer's output (between layers and before the head), not on the
        # embedding: that leaves embedding then layer 0's input weight one linear map of the
        # token's one-hot vector, W_ih·Eᵀ [4·hidden, vocab]. For a vocabulary narrower than the
        # hidden size (65 characters against 512) its product with the input is that much
        # cheaper, with the same function, parameters and gradients (tests/model/test_lm.py). In 20
        # minutes on Tiny Shakespeare, the embedding's dropout had not helped (bench/HISTORY.md).
        # Embedding dropout drops whole tokens, so it is a column mask on that product.
        options = {"every_layer": True} if self.skip_head is not None else {}
        embedding = drop_token_rows(self.embed.weight, self.config.embed_dropout, self.training)
        if self.uses_one_hot_input(tokens):
            one_hot = F.one_hot(tokens, self.config.vocab_size).to(self.embed.weight.dtype)
            out, state = self.rnn(one_hot, state, weight_ih_l0=self.rnn.weight_ih_l0 @ embedding.t(), **options)
        else:
            out, state = self.rnn(F.embedding(tokens, embedding), state, **options)
        logits, top = self._head(out)
        return (logits, state, top) if with_top else (logits, state)

    def logits(self, out) -> torch.Tensor:
        """Next-token logits from the recurrent output: the top layer's (a tensor), or with skip
        connections every layer's (a list, lowest first, as ``rnn(..., every_layer=True)`` gives)."""
        return self._head(out)[0]

    def _head(self, out) -> tuple[torch.Tensor, TopOutput]:
        top, lower = (out, None) if self.skip_head is None else (out[-1], out[:-1])
        dropped = self.drop(top)
        logits = self.head(dropped)
        if lower is not None:
            logits = logits + self.skip_head(lower[0] if len(lower) == 1 else torch.cat(lower, dim=-1))
        return logits, TopOutput(top, dropped)

    def uses_one_hot_input(self, tokens: torch.Tensor) -> bool:
        """Whether :meth:`forward` takes the one-hot path: on the CPU, for a vocabulary narrower
        than the hidden size, and for enough tokens to repay forming W_ih·Eᵀ (not when sampling
        one token at a time)."""
        vocab, hidden = self.config.vocab_size, self.config.hidden
        return (isinstance(self.rnn, FusedLayers) and tokens.device.type == "cpu" and vocab < hidden
                and tokens.numel() * (hidden - vocab) > 2 * hidden * vocab)

    def regularize(self, **settings) -> None:
        """Change any of ``dropout``, ``weight_drop``, ``locked_dropout`` and ``embed_dropout`` (fine-tuning,
        or chosen after a few timed steps) in the config and everywhere each applies."""
        for name, value in settings.items():
            assert name in REGULARIZATION, name
            setattr(self.config, name, value)
        c = self.config
        self.drop.p, self.drop.locked = c.dropout, c.locked_dropout
        self.rnn.dropout = c.dropout if c.layers > 1 else 0.0
        self.rnn.weight_drop, self.rnn.locked = c.weight_drop, c.locked_dropout

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def grow_vocab(model: CharLM, vocab_size: int) -> CharLM:
    """A copy of ``model`` whose embedding and head take ``vocab_size`` tokens (new ids last)."""
    grown = CharLM(ModelConfig(**{**model.config.to_dict(), "vocab_size": vocab_size}))
    state = grown.state_dict()
    for name, tensor in model.state_dict().items():
        if name in ("embed.weight", "head.weight", "head.bias", "skip_head.weight"):
            state[name][:tensor.size(0)] = tensor
        else:
            state[name] = tensor
    grown.load_state_dict(state)
    return grown
