"""A fast engine for generating one token at a time from an LSTM ``CharLM``.

At batch 1 a sampling step is a chain of small matrix-vector products, and two costs dominate:
reading every weight once per token (memory bandwidth) and the fixed cost of each torch call
(Python + dispatcher, a few microseconds). ``nn.LSTM`` called once per token pays both badly: on
CPU it goes through oneDNN, which re-lays out the weights on every call. This engine:

* lays the weights out once, transposed for ``addmm`` and with each layer's input and hidden
  weights stacked (``[W_ih | W_hh]``), so a layer is one matrix product per token;
* folds the embedding into layer 0: ``embed.weight @ W_ih0.T + biases`` is a ``[vocab, 4H]``
  table, so layer 0 costs a row lookup plus the hidden product;
* keeps every layer's ``h`` side by side in one buffer ``[batch, layers * H]``, so the input of
  layer ``l`` (``h`` of layer ``l-1`` next to its own ``h``) is a view, not a concatenation;
* reorders the gates to (i, f, o, g) so one ``sigmoid_`` covers three of them, and works in
  preallocated buffers with in-place ops and ``out=`` (no allocation per token but the logits);
* optionally (``precision="bf16"``, CPU with oneDNN bf16 support) keeps the big matrices in
  bf16, prepacked for oneDNN: half the bytes to read per token. The cell state, the embedding
  table and the output layer stay in fp32.

In fp32 it computes the same function as the model's own forward (to float rounding), which
``tests/model/test_engine.py`` checks against ``nn.LSTM``. Other cells (GRU, RNN) and models in
training mode (dropout) use the plain forward instead: see ``StepEngine.supports``.
"""

from __future__ import annotations

import time

import torch

from ..compat import bf16_linear, bf16_matmul_available, cpu_has_native_bf16, prepack_bf16_linear_weight, tensor_version
from ..devices import faster_precision
from ..errors import ChargenError
from .lm import CharLM
from .state import State


# Below this size of the LSTM's fp32 matrices, bf16 steps have not paid anywhere.
SMALL_MATRIX_BYTES = 8 * 2**20


def auto_sampling_precision(model: CharLM, batch_size: int = 1) -> str:
    """The precision ``Sampler(precision="auto")`` steps ``model`` in: bf16 where it is faster.

    bf16 steps are slower than fp32 while the LSTM's matrices fit the cache, and once they outgrow
    it they are faster on some CPUs with native bf16 and not on others (bench/RESULTS.md). So
    fp32 for small models (under SMALL_MATRIX_BYTES), and otherwise, where the CPU has native
    bf16, a few steps of ``batch_size`` streams are timed in each precision.
    """
    if model.head.weight.device.type != "cpu" or not bf16_matmul_available() or not cpu_has_native_bf16():
        return "fp32"
    matrix_bytes = sum(4 * getattr(model.rnn, f"weight_hh_l{l}").numel() * (1 if l == 0 else 2)
                       for l in range(model.config.layers))
    if matrix_bytes < SMALL_MATRIX_BYTES:
        return "fp32"
    return faster_precision({precision: engine_steps_per_second(StepEngine(model, precision), batch_size)
                             for precision in ("fp32", "bf16")})


def engine_steps_per_second(engine: "StepEngine", batch_size: int, steps: int = 8, rounds: int = 4) -> float:
    """Steps a second of ``engine`` from a zero state, in the fastest of ``rounds`` runs of ``steps``."""
    engine.load_state(None, batch_size)
    tokens = torch.zeros(batch_size, dtype=torch.long, device=engine.device)
    fastest = float("inf")
    for _ in range(rounds):  # the first warms up (caches, the allocator); the fastest counts
        started = time.perf_counter()
        for _ in range(steps):
            engine.step(tokens)
        fastest = min(fastest, time.perf_counter() - started)
    return steps / max(fastest, 1e-9)


class _Linear:
    """``x @ W.T + b`` for a fixed weight, laid out once for the fastest call at small batch."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, precision: str):
        weight, bias = weight.detach(), None if bias is None else bias.detach()
        self.bf16 = precision == "bf16"
        if self.bf16:
            # oneDNN's prepacked bf16 weight: half the bytes of fp32, read in its native layout.
            self.weight = prepack_bf16_linear_weight(weight)
            self.bias = None if bias is None else bias.to(torch.bfloat16)
        else:
            self.weight = weight.t().contiguous()  # [in, out]: addmm's fast layout
            self.bias = bias

    def add_to(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """``out += x @ W.T`` (bias not included)."""
        if self.bf16:
            out.add_(bf16_linear(x, self.weight, None))
        else:
            out.addmm_(x, self.weight)

    def into(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """``out = x @ W.T + b``."""
        if self.bf16:
            out.copy_(bf16_linear(x, self.weight, self.bias))
        else:
            torch.addmm(self.bias, x, self.weight, out=out)


class StepEngine:
    """Advance an LSTM ``CharLM`` one token at a time for a batch of streams.

    ``load_state(state, batch)`` takes a state in ``nn.LSTM``'s format (or None for zeros);
    ``step(tokens)`` feeds one token per stream and returns the next-token logits ``[batch,
    vocab]`` in fp32; ``export_state()`` gives the state back in ``nn.LSTM``'s format. The weights
    are copied when the engine is built: build a new one after the model changes
    (``matches(model)`` tells).
    """

    @staticmethod
    def supports(model: CharLM) -> bool:
        """Whether this engine computes exactly what ``model`` does (LSTM, fp32, eval mode)."""
        rnn = model.rnn
        return (model.config.cell == "lstm" and not model.training and isinstance(rnn, torch.nn.LSTM)
                and rnn.proj_size == 0 and not rnn.bidirectional and rnn.bias
                and model.head.weight.dtype == torch.float32)

    def __init__(self, model: CharLM, precision: str = "fp32"):
        if precision == "bf16" and not (model.head.weight.device.type == "cpu" and bf16_matmul_available()):
            raise ChargenError("bf16 sampling needs a CPU with native bf16 matrix products; use fp32")
        self.precision = precision
        self.fingerprint = self._fingerprint(model)
        rnn, hidden, layers = model.rnn, model.config.hidden, model.config.layers
        self.hidden, self.layers = hidden, layers
        self.device = model.head.weight.device
        # Gate rows i, f, g, o -> i, f, o, g: the three sigmoid gates become one contiguous block.
        H = hidden
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
        order = order.to(self.device)
        with torch.no_grad():
            w_ih0 = rnn.weight_ih_l0[order].float()
            bias0 = (rnn.bias_ih_l0 + rnn.bias_hh_l0)[order].float()
            # Layer 0's input projection of every token, biases included: a lookup per step.
            self.table = torch.addmm(bias0, model.embed.weight.float(), w_ih0.t()).contiguous()
            self.layer_mats = [_Linear(rnn.weight_hh_l0[order].float(), None, precision)]
            self.layer_biases = [None]
            for l in range(1, layers):
                w = torch.cat([getattr(rnn, f"weight_ih_l{l}"), getattr(rnn, f"weight_hh_l{l}")], dim=1)
                b = getattr(rnn, f"bias_ih_l{l}") + getattr(rnn, f"bias_hh_l{l}")
                self.layer_mats.append(_Linear(w[order].float(), b[order].float(), precision))
            # With skip connections the head reads every layer's h: [skip weights | top weights]
            # over the side-by-side buffer of all of them.
            self.head_reads_all = model.skip_head is not None
            head_weight = (torch.cat([model.skip_head.weight, model.head.weight], dim=1) if self.head_reads_all
                           else model.head.weight)
            self.head = _Linear(head_weight.float(), model.head.bias.float(), "fp32")
        self.vocab_size = self.table.size(0)
        self.batch = 0
        # Called as observer(layer, {"i", "f", "o", "g", "c", "h": [batch, hidden] views}) after each
        # layer's step: chargen.model.inspect reads the gates here instead of recomputing them. The
        # views are overwritten by the next layer and step, so an observer copies what it keeps.
        self.observer = None

    @staticmethod
    def _fingerprint(model: CharLM) -> tuple:
        # Storage and in-place version of every parameter: changes when training or .to() did.
        return tuple((p.data_ptr(), tensor_version(p), p.device) for p in model.parameters())

    def matches(self, model: CharLM) -> bool:
        """Whether the engine still holds ``model``'s current weights."""
        return self._fingerprint(model) == self.fingerprint

    def _allocate(self, batch: int) -> None:
        H, L, dev = self.hidden, self.layers, self.device
        with torch.no_grad():
            self.hs = torch.zeros(batch, L * H, device=dev)      # h of every layer, side by side
            self.cs = torch.zeros(L, batch, H, device=dev)
            self.gates = torch.empty(batch, 4 * H, device=dev)
            self.tmp = torch.empty(batch, H, device=dev)
        # Views made once: slicing costs a call too.
        g = self.gates
        self.sig, self.i, self.f, self.o, self.g = g[:, :3 * H], g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        self.h = [self.hs[:, l * H:(l + 1) * H] for l in range(L)]
        self.xh = [None] + [self.hs[:, (l - 1) * H:(l + 1) * H] for l in range(1, L)]
        self.batch = batch

    def load_state(self, state: State, batch: int) -> None:
        """Start from ``state`` (``(h, c)``, each ``[layers, batch, hidden]``), or zeros if None."""
        if batch != self.batch:
            self._allocate(batch)
        with torch.no_grad():
            if state is None:
                self.hs.zero_()
                self.cs.zero_()
            else:
                h, c = state
                self.hs.view(batch, self.layers, self.hidden).copy_(h.transpose(0, 1))
                self.cs.copy_(c)

    def export_state(self) -> State:
        """The current state in ``nn.LSTM``'s format (fresh tensors)."""
        h = self.hs.view(self.batch, self.layers, self.hidden).transpose(0, 1).contiguous()
        return h, self.cs.clone()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per stream (``[batch]`` ids); return next-token logits ``[batch, vocab]``."""
        gates, tmp = self.gates, self.tmp
        torch.index_select(self.table, 0, tokens, out=gates)
        for l in range(self.layers):
            h, c = self.h[l], self.cs[l]
            if l == 0:
                self.layer_mats[0].add_to(gates, h)
            else:
                self.layer_mats[l].into(gates, self.xh[l])
            self.sig.sigmoid_()
            self.g.tanh_()
            c.mul_(self.f).addcmul_(self.i, self.g)
            torch.tanh(c, out=tmp)
            torch.mul(self.o, tmp, out=h)  # overwrites the old h, which the product above consumed
            if self.observer is not None:
                self.observer(l, {"i": self.i, "f": self.f, "o": self.o, "g": self.g, "c": c, "h": h})
        logits = torch.empty(self.batch, self.vocab_size, device=self.device)
        self.head.into(logits, self.hs if self.head_reads_all else self.h[-1])
        return logits
