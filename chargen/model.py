"""The language model: embedding -> stacked recurrent cell -> linear head over the vocabulary."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import nn

CELLS = ("lstm", "gru", "rnn", "lstm-peephole")

# LSTM state is (h, c); GRU and plain RNN state is h. Each tensor is [layers, batch, hidden].
State = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor], None]


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``, with a mask that is cheap to draw on the CPU.

    On the CPU ``F.dropout`` draws one random number per element (``bernoulli_``), which cost
    ~13 ms per [32, 64, 512] activation on this project's 2-core machine: with a 2-layer
    model's two dropout sites, about a tenth of a training step. Here each 16-bit slice of a
    64-bit random word is one element's draw (a quarter of the generator calls, no float
    conversion): ~2 ms. The rate is rounded to a multiple of 1/65536 and the survivors are scaled
    by the exact inverse of the rate used, so the expected activation is unchanged. On GPUs ``F.dropout``'s fused kernel is
    already fast and is used as it is.
    """
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    dropped = min(round(p * 65536), 65535)  # of every 65536 elements, on average
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)
    draws = words.view(torch.int16)[:x.numel()].view(x.shape)  # uniform over [-32768, 32767]
    mask = (draws >= dropped - 32768).to(x.dtype).mul_(65536 / (65536 - dropped))
    return x * mask


class Dropout(nn.Module):
    """``nn.Dropout`` drawing its masks with :func:`dropout`."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _FusedLayers:
    """For ``nn.LSTM``/``GRU``/``RNN``: calls of the fused per-layer kernels (oneDNN for the LSTM on
    CPUs) made directly, with the parent class's parameters, names and checkpoints.

    - Training on a CPU with dropout between layers runs one layer at a time and applies
      :func:`dropout` in between, instead of the built-in ``bernoulli_`` masks.
    - ``weight_ih_l0`` replaces layer 0's input weight for this call (``CharLM`` feeds one-hot
      ids through the product of its embedding and that weight).
    - ``every_layer`` runs one layer at a time too and returns every layer's output (the lower
      ones after the dropout between layers), lowest first, instead of the top layer's alone:
      ``CharLM``'s skip connections read them.

    Otherwise (no replaced weight, no ``every_layer``, and inference, one layer, rate 0 or a GPU,
    where cuDNN runs all layers from one weight buffer) the parent class's own forward runs.
    """

    _functional: Callable  # torch.lstm, torch.gru or torch.rnn_tanh: one call runs stacked layers
    # Whether every call runs layer by layer (``every_layer``: CharLM's skip connections). Set
    # through ``use_layerwise_buffers``; it decides how cuDNN's weight buffers are laid out.
    layerwise_buffers = False

    def use_layerwise_buffers(self) -> None:
        """Lay the weights out for calls that run one layer at a time (see ``flatten_parameters``)."""
        self.layerwise_buffers = True
        self.flatten_parameters()

    def flatten_parameters(self) -> None:
        """On a GPU, put the weights where cuDNN wants them: one call's weights in one buffer.

        Otherwise cuDNN copies them into a new buffer at every call and warns ("RNN module weights
        are not part of single contiguous chunk of memory"). ``nn.LSTM`` keeps all layers in one
        buffer, right for its stacked call; a model whose calls run one layer at a time needs
        one buffer per layer. On the CPU this does nothing, as in ``nn.LSTM``.
        """
        if not self.layerwise_buffers:
            return super().flatten_parameters()
        weights = self._flat_weights
        if not (len(weights) == len(self._flat_weights_names) and torch._use_cudnn_rnn_flatten_weight()
                and all(isinstance(w, torch.Tensor) and w.is_cuda and w.dtype == weights[0].dtype
                        and torch.backends.cudnn.is_acceptable(w) for w in weights)):
            return
        from torch.backends.cudnn import rnn as cudnn_rnn

        with torch.cuda.device_of(weights[0]), torch.no_grad():
            for layer in range(self.num_layers):  # re-points each layer's parameters into a new buffer
                torch._cudnn_rnn_flatten_weight(
                    weights[4 * layer:4 * layer + 4], 4, self.input_size if layer == 0 else self.hidden_size,
                    cudnn_rnn.get_cudnn_mode(self.mode), self.hidden_size, 0, 1, self.batch_first, False)

    def forward(self, x: torch.Tensor, state: State = None, weight_ih_l0: torch.Tensor | None = None,
                every_layer: bool = False):
        layerwise = every_layer or (self.training and self.dropout > 0 and self.num_layers > 1
                                    and x.device.type == "cpu")
        if not layerwise and weight_ih_l0 is None:
            return super().forward(x, state)
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.size(0), self.hidden_size)
            state = (zeros, zeros) if isinstance(self, nn.LSTM) else zeros
        weights = list(self._flat_weights)
        if weight_ih_l0 is not None:
            weights[0] = weight_ih_l0
        if not layerwise:
            x, *final = self._functional(x, state, weights, True, self.num_layers, 0.0, self.training, False, True)
            return x, tuple(final) if isinstance(self, nn.LSTM) else final[0]
        outputs, finals = [], []
        for layer in range(self.num_layers):
            if layer > 0:
                x = outputs[-1] = dropout(x, self.dropout, self.training)
            layer_state = map_state(state, lambda t: t[layer:layer + 1])
            x, *final = self._functional(x, layer_state, weights[4 * layer:4 * layer + 4], True, 1, 0.0,
                                         self.training, False, True)
            outputs.append(x)
            finals.append(final)
        if isinstance(self, nn.LSTM):
            state = torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals])
        else:
            state = torch.cat([h for h, in finals])
        return (outputs if every_layer else x), state


class StackedLSTM(_FusedLayers, nn.LSTM):
    _functional = staticmethod(torch.lstm)


class StackedGRU(_FusedLayers, nn.GRU):
    _functional = staticmethod(torch.gru)


class StackedRNN(_FusedLayers, nn.RNN):  # tanh, nn.RNN's default
    _functional = staticmethod(torch.rnn_tanh)


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

    def to_dict(self) -> dict:
        return asdict(self)


class PeepholeLSTM(nn.Module):
    """LSTM whose gates also see the cell state (Gers & Schmidhuber, 2000): "peephole" weights.

    The input and forget gates look at ``c_{t-1}``, the output gate at ``c_t``, each through a
    diagonal (per-unit) weight. Same interface and parameter names as ``nn.LSTM`` (batch first,
    gate order i, f, g, o, state ``(h, c)`` of ``[layers, batch, hidden]``) plus ``peephole_l{k}``
    ``[3, hidden]``. It steps through time in Python, so it is several times slower than
    ``nn.LSTM``, which runs fused (cuDNN / oneDNN) kernels that have no peepholes.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 batch_first: bool = True, dropout: float = 0.0):
        super().__init__()
        assert batch_first, "CharLM always feeds [batch, time, features]"
        self.hidden_size, self.num_layers, self.dropout = hidden_size, num_layers, dropout
        for layer in range(num_layers):
            size_in = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, size_in)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))
            self.register_parameter(f"peephole_l{layer}", nn.Parameter(torch.empty(3, hidden_size)))
        bound = 1 / math.sqrt(hidden_size)  # nn.LSTM's init, peepholes included
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, state=None, every_layer: bool = False):
        batch, H = x.size(0), self.hidden_size
        if state is None:
            zeros = x.new_zeros(self.num_layers, batch, H)
            state = (zeros, zeros)
        outputs, h_out, c_out = [], [], []
        for layer in range(self.num_layers):
            w_hh, peep = getattr(self, f"weight_hh_l{layer}"), getattr(self, f"peephole_l{layer}")
            # The input part of every gate, for all steps at once; only the recurrence is stepped.
            x_gates = F.linear(x, getattr(self, f"weight_ih_l{layer}"),
                               getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}"))
            h, c = state[0][layer], state[1][layer]
            steps = []
            for t in range(x.size(1)):
                i, f, g, o = (x_gates[:, t] + h @ w_hh.t()).chunk(4, dim=1)
                i = torch.sigmoid(i + peep[0] * c)
                f = torch.sigmoid(f + peep[1] * c)
                c = f * c + i * torch.tanh(g)
                h = torch.sigmoid(o + peep[2] * c) * torch.tanh(c)
                steps.append(h)
            x = torch.stack(steps, dim=1)
            if layer < self.num_layers - 1:
                x = dropout(x, self.dropout, self.training)
            outputs.append(x)
            h_out.append(h)
            c_out.append(c)
        return (outputs if every_layer else x), (torch.stack(h_out), torch.stack(c_out))


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
        if self.skip_head is not None and isinstance(self.rnn, _FusedLayers):
            self.rnn.use_layerwise_buffers()  # its calls run one layer at a time
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

    def forward(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        # Dropout acts on every layer's output (between layers and before the head), not on the
        # embedding: that leaves embedding then layer 0's input weight one linear map of the
        # token's one-hot vector, W_ih·Eᵀ [4·hidden, vocab]. For a vocabulary narrower than the
        # hidden size (65 characters against 512) its product with the input is that much
        # cheaper, with the same function, parameters and gradients (tests/test_model.py). In 20
        # minutes on Tiny Shakespeare, the embedding's dropout had not helped (bench/HISTORY.md).
        options = {"every_layer": True} if self.skip_head is not None else {}
        if self._one_hot_input(tokens):
            one_hot = F.one_hot(tokens, self.config.vocab_size).to(self.embed.weight.dtype)
            out, state = self.rnn(one_hot, state, weight_ih_l0=self.rnn.weight_ih_l0 @ self.embed.weight.t(),
                                  **options)
        else:
            out, state = self.rnn(self.embed(tokens), state, **options)
        return self.logits(out), state

    def logits(self, out) -> torch.Tensor:
        """Next-token logits from the recurrent output: the top layer's (a tensor), or with skip
        connections every layer's (a list, lowest first, as ``rnn(..., every_layer=True)`` gives)."""
        if self.skip_head is None:
            return self.head(self.drop(out))
        *lower, top = out
        lower = lower[0] if len(lower) == 1 else torch.cat(lower, dim=-1)
        return self.head(self.drop(top)) + self.skip_head(lower)

    def _one_hot_input(self, tokens: torch.Tensor) -> bool:
        """Whether :meth:`forward` takes the one-hot path: on the CPU, for a vocabulary narrower
        than the hidden size, and for enough tokens to repay forming W_ih·Eᵀ (not when sampling
        one token at a time)."""
        vocab, hidden = self.config.vocab_size, self.config.hidden
        return (isinstance(self.rnn, _FusedLayers) and tokens.device.type == "cpu" and vocab < hidden
                and tokens.numel() * (hidden - vocab) > 2 * hidden * vocab)

    def set_dropout(self, p: float) -> None:
        """Change the dropout rate everywhere it applies (fine-tuning, or chosen after a few steps)."""
        self.config.dropout = p
        self.drop.p = p
        self.rnn.dropout = p if self.config.layers > 1 else 0.0

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
