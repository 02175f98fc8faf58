"""The recurrent layers under ``CharLM``: fused per-layer kernel calls, cheap dropout, peephole LSTM."""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..compat import cudnn_flatten_weights, fused_rnn
from .state import State, map_state


def dropout(x: torch.Tensor, p: float, training: bool, locked: bool = False) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``, with a mask that is cheap to draw on the CPU.

    ``locked`` (variational dropout, Gal & Ghahramani 2016) draws one mask per sequence for a
    ``[batch, time, features]`` input and applies it at every time step, instead of one per element.

    On the CPU ``F.dropout`` draws one random number per element (``bernoulli_``), a noticeable
    share of a training step (bench/HISTORY.md). Here each 16-bit slice of a 64-bit random word is
    one element's draw (a quarter of the generator calls, no float conversion), several times
    cheaper. The rate is rounded to a multiple of 1/65536 and the survivors are scaled by the
    exact inverse of the rate used, so the expected activation is unchanged. On GPUs
    ``F.dropout``'s fused kernel is already fast and is used as it is.
    """
    if not training or p == 0:
        return x
    shape = (x.size(0), 1, *x.shape[2:]) if locked else x.shape
    if x.device.type != "cpu":
        return F.dropout(x, p, True) if not locked else x * F.dropout(x.new_ones(shape), p, True)
    numel = math.prod(shape)
    dropped = min(round(p * 65536), 65535)  # of every 65536 elements, on average
    words = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)
    draws = words.view(torch.int16)[:numel].view(shape)  # uniform over [-32768, 32767]
    mask = (draws >= dropped - 32768).to(x.dtype).mul_(65536 / (65536 - dropped))
    return x * mask


def drop_token_rows(weight: torch.Tensor, p: float, training: bool, dim: int = 0) -> torch.Tensor:
    """Embedding dropout (Gal & Ghahramani 2016; AWD-LSTM's ``dropoute``): whole tokens' vectors of
    an embedding ``weight`` (its slices along ``dim``) are zeroed for a call, the rest scaled up."""
    if not training or p == 0:
        return weight
    shape = [1] * weight.dim()
    shape[dim] = weight.size(dim)
    keep = torch.rand(shape, device=weight.device) >= p
    return weight * keep.to(weight.dtype).div_(1 - p)


class Dropout(nn.Module):
    """``nn.Dropout`` drawing its masks with :func:`dropout`."""

    def __init__(self, p: float, locked: bool = False):
        super().__init__()
        self.p, self.locked = p, locked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.locked)

    def extra_repr(self) -> str:
        return f"p={self.p}, locked={self.locked}"


@contextlib.contextmanager
def weight_copies_expected(expected: bool):
    """Silence cuDNN's "weights are not part of single contiguous chunk of memory" warning where the
    copy it warns of is the price of weight drop: every step makes new recurrent weights."""
    if not expected:  # catch_warnings swaps process-wide state: only where needed
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
        yield


class FusedLayers:
    """For ``nn.LSTM``/``GRU``/``RNN``: calls of the fused per-layer kernels (oneDNN for the LSTM on
    CPUs) made directly, with the parent class's parameters, names and checkpoints.

    - Training on a CPU with dropout between layers runs one layer at a time and applies
      :func:`dropout` in between, instead of the built-in ``bernoulli_`` masks.
    - ``weight_ih_l0`` replaces layer 0's input weight for this call (``CharLM`` feeds one-hot
      ids through the product of its embedding and that weight).
    - ``every_layer`` runs one layer at a time too and returns every layer's output (the lower
      ones after the dropout between layers), lowest first, instead of the top layer's alone:
      ``CharLM``'s skip connections read them.

    - ``weight_drop`` (DropConnect on the hidden-to-hidden matrices, Merity et al. 2017's AWD-LSTM):
      while training, each call multiplies every ``weight_hh`` by a fresh dropout mask, once for all
      its time steps, and hands the result to the same fused kernel.
    - ``locked`` makes the dropout between layers variational: one mask per sequence, all steps.

    Otherwise (no replaced weight, no ``every_layer``, and inference, one layer, rate 0 or a GPU,
    where cuDNN runs all layers from one weight buffer) the parent class's own forward runs.
    """

    _functional: Callable  # torch.lstm, torch.gru or torch.rnn_tanh: one call runs stacked layers
    # Whether every call runs layer by layer (``every_layer``: CharLM's skip connections). Set
    # through ``use_layerwise_buffers``; it decides how cuDNN's weight buffers are laid out.
    layerwise_buffers = False
    weight_drop = 0.0  # CharLM sets these two from its ModelConfig
    locked = False

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
        weights = self.flat_weights()
        if not all(w.is_cuda and w.dtype == weights[0].dtype and torch.backends.cudnn.is_acceptable(w)
                   for w in weights):
            return
        for layer in range(self.num_layers):  # re-points each layer's parameters into a new buffer
            cudnn_flatten_weights(weights[4 * layer:4 * layer + 4],
                                  self.input_size if layer == 0 else self.hidden_size,
                                  self.hidden_size, self.mode, self.batch_first)

    def flat_weights(self) -> list[torch.Tensor]:
        """Every layer's (w_ih, w_hh, b_ih, b_hh), in the order the fused kernels take them."""
        return [weight for layer in self.all_weights for weight in layer]

    def call_weights(self, weight_ih_l0: torch.Tensor | None) -> list[torch.Tensor]:
        """The weights for one call: layer 0's input weight replaced if given, and while training
        with ``weight_drop`` every ``weight_hh`` times its own mask, drawn layer by layer."""
        weights = self.flat_weights()
        if weight_ih_l0 is not None:
            weights[0] = weight_ih_l0
        if self.training and self.weight_drop > 0:
            for layer in range(self.num_layers):
                weights[4 * layer + 1] = dropout(weights[4 * layer + 1], self.weight_drop, True)
        return weights

    def forward(self, x: torch.Tensor, state: State = None, weight_ih_l0: torch.Tensor | None = None,
                every_layer: bool = False):
        layerwise = every_layer or (self.training and self.dropout > 0 and self.num_layers > 1
                                    and (x.device.type == "cpu" or self.locked))
        drop_weights = self.training and self.weight_drop > 0
        if not layerwise and weight_ih_l0 is None and not drop_weights:
            return super().forward(x, state)
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.size(0), self.hidden_size)
            state = (zeros, zeros) if isinstance(self, nn.LSTM) else zeros
        weights = self.call_weights(weight_ih_l0)
        with weight_copies_expected(drop_weights and x.is_cuda):
            if layerwise:
                return self.run_layers(x, state, weights, every_layer)
            x, *final = fused_rnn(self._functional, x, state, weights, self.num_layers, self.training)
            return x, tuple(final) if isinstance(self, nn.LSTM) else final[0]

    def run_layers(self, x: torch.Tensor, state: State, weights: list[torch.Tensor], every_layer: bool):
        """One fused call per layer, with chargen's dropout between them."""
        outputs, finals = [], []
        for layer in range(self.num_layers):
            if layer > 0:
                x = outputs[-1] = dropout(x, self.dropout, self.training, self.locked)
            layer_state = map_state(state, lambda t: t[layer:layer + 1])
            x, *final = fused_rnn(self._functional, x, layer_state, weights[4 * layer:4 * layer + 4], 1,
                                  self.training)
            outputs.append(x)
            finals.append(final)
        if isinstance(self, nn.LSTM):
            state = torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals])
        else:
            state = torch.cat([h for h, in finals])
        return (outputs if every_layer else x), state


class StackedLSTM(FusedLayers, nn.LSTM):
    _functional = staticmethod(torch.lstm)


class StackedGRU(FusedLayers, nn.GRU):
    _functional = staticmethod(torch.gru)


class StackedRNN(FusedLayers, nn.RNN):  # tanh, nn.RNN's default
    _functional = staticmethod(torch.rnn_tanh)


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
        self.weight_drop, self.locked = 0.0, False  # as in FusedLayers
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
        w_hh_all = [dropout(getattr(self, f"weight_hh_l{layer}"), self.weight_drop, self.training)
                    for layer in range(self.num_layers)]  # drawn first, in FusedLayers' order
        for layer in range(self.num_layers):
            w_hh, peep = w_hh_all[layer], getattr(self, f"peephole_l{layer}")
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
                x = dropout(x, self.dropout, self.training, self.locked)
            outputs.append(x)
            h_out.append(h)
            c_out.append(c)
        return (outputs if every_layer else x), (torch.stack(h_out), torch.stack(c_out))
