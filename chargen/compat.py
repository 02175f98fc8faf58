"""Every private third-party API chargen relies on, in one place.

Each function says why the private name is worth it, checks that it is still there (falling back
to a slower or plainer path when it is not), and has a test in ``tests/test_compat.py`` that
fails if a new release of the library changes it under us.
"""

from __future__ import annotations

import codecs
import unicodedata
from typing import Callable

import torch


# ---- torch: fused recurrent kernels ----------------------------------------------------------

def fused_rnn(kernel: Callable, x: torch.Tensor, state, weights: list[torch.Tensor], num_layers: int,
              training: bool):
    """One call of ``torch.lstm`` / ``torch.gru`` / ``torch.rnn_tanh`` (batch first, with biases).

    Why: these are the kernels ``nn.LSTM`` itself calls (cuDNN, oneDNN); calling them directly
    lets chargen swap layer 0's input weight and run layers one at a time with its own dropout,
    which ``nn.LSTM.forward`` cannot. Their positional signature is undocumented, so the booleans
    are named here once. Returns ``(output, h)`` or ``(output, h, c)`` as the kernel does.
    """
    has_biases, dropout, bidirectional, batch_first = True, 0.0, False, True
    return kernel(x, state, weights, has_biases, num_layers, dropout, training, bidirectional, batch_first)


def cudnn_flatten_weights(weights: list[torch.Tensor], input_size: int, hidden_size: int, mode: str,
                          batch_first: bool) -> bool:
    """Re-point one layer's four RNN weights into a single cuDNN buffer; False if not possible.

    Why: with skip connections every call runs one layer, and cuDNN wants that layer's weights in
    one buffer; otherwise it copies them at every call and warns. ``nn.LSTM.flatten_parameters``
    only knows the all-layers buffer. Guard: without these private functions nothing is done and
    cuDNN keeps copying (slower, still correct).
    """
    flatten = getattr(torch, "_cudnn_rnn_flatten_weight", None)
    use = getattr(torch, "_use_cudnn_rnn_flatten_weight", None)
    if flatten is None or use is None or not use():
        return False
    from torch.backends.cudnn import rnn as cudnn_rnn

    with torch.cuda.device_of(weights[0]), torch.no_grad():
        flatten(weights, 4, input_size, cudnn_rnn.get_cudnn_mode(mode), hidden_size, 0, 1, batch_first, False)
    return True


def tensor_version(tensor: torch.Tensor) -> int:
    """The in-place modification counter of ``tensor`` (``Tensor._version``).

    Why: the sampling engine copies a model's weights and must notice when training or an
    optimizer step changed them in place; the storage pointer alone does not change then.
    Guard: without it, -1 (the engine then relies on the storage pointer and device alone).
    """
    return getattr(tensor, "_version", -1)


# ---- torch: CPU bf16 ---------------------------------------------------------------------------

def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX), not by emulation.

    Why: torch answers this only through private ``torch.cpu._is_*_supported`` checks; emulated
    bf16 is slower than fp32, so chargen must know. Guard: a missing check counts as "no".
    """
    for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        supported = getattr(torch.cpu, check, None)
        if supported is not None and supported():
            return True
    return False


def bf16_matmul_available() -> bool:
    """True where oneDNN runs bf16 matrix products natively and its linear ops are there.

    Why: the sampling engine's bf16 path reads half the bytes per token through oneDNN's
    prepacked weights, which only ``torch.ops.mkldnn``'s private ops expose. Guard: False when
    any of them is missing, and the engine stays in fp32.
    """
    try:
        ops = torch.ops.mkldnn
        return (torch.backends.mkldnn.is_available() and bool(ops._is_mkldnn_bf16_supported())
                and hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight"))
    except (AttributeError, RuntimeError):
        return False


def prepack_bf16_linear_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` [out, in] in bf16, laid out once in oneDNN's own format for :func:`bf16_linear`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.to(torch.bfloat16), 1)


def bf16_linear(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ W.T + b`` in bf16 with a weight from :func:`prepack_bf16_linear_weight`."""
    return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), packed_weight, bias, "none", [], "")


# ---- the standard library ----------------------------------------------------------------------

def is_text_encoding(codec: codecs.CodecInfo) -> bool:
    """Whether a codec turns bytes into text (utf-8, latin-1) rather than bytes into bytes (base64).

    Why: ``codecs.lookup`` accepts "base64" or "rot13" too; the private flag ``_is_text_encoding``
    is how ``bytes.decode`` itself refuses them. Guard: a codec without it counts as text.
    """
    return getattr(codec, "_is_text_encoding", True)


# ---- prompt-toolkit ----------------------------------------------------------------------------

def count_spacing_marks_as_one_column(utils_module) -> bool:
    """Make prompt-toolkit count a spacing combining mark (Unicode category Mc) as one column.

    Why: spacing marks are the vowel signs of Punjabi, Hindi, Kannada and other Indic scripts.
    glibc's wcwidth, tmux, xterm and VTE give each one a cell; recent releases of the wcwidth
    package give it 0, and prompt-toolkit adds up per-character widths, so on a line of Punjabi
    its idea of the cursor fell behind the terminal's and the redrawn prompt landed mid-line.
    prompt-toolkit measures through the ``wcwidth`` name in its ``utils`` module, behind a cache
    (``_CHAR_SIZES_CACHE``): wrap the first, empty the second. The caller passes
    ``prompt_toolkit.utils`` (this module imports no UI library). Guard: nothing is changed
    when either name is missing; returns whether a change was made.
    """
    measure, cache = getattr(utils_module, "wcwidth", None), getattr(utils_module, "_CHAR_SIZES_CACHE", None)
    if measure is None or cache is None or getattr(measure, "counts_spacing_marks", False):
        return False
    if measure("\u0a3e") == 1:  # GURMUKHI VOWEL SIGN AA: this wcwidth already agrees
        return False

    def width(char: str) -> int:
        return 1 if len(char) == 1 and unicodedata.category(char) == "Mc" else measure(char)

    width.counts_spacing_marks = True
    utils_module.wcwidth = width
    cache.clear()  # widths measured before the change
    return True


# ---- torch: the optimizer's found-inf input ------------------------------------------------

def optimizer_skips_on_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` honours :func:`set_found_inf`: torch's fused Adam/AdamW.

    Why: ``GradScaler`` skips a step with an inf gradient by handing the fused kernel a found-inf
    flag through the optimizer's ``found_inf`` attribute, all on the device, so the host never
    waits to learn whether to step. That protocol is torch's internal one. Guard: any other
    optimizer (or one not fused) answers False, and the caller checks on the host instead.
    """
    return (isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
            and bool(optimizer.defaults.get("fused")))


def set_found_inf(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> None:
    """The next ``optimizer.step()`` leaves weights and moments as they are where ``found_inf``
    is 1 (a float tensor of one element on the parameters' device), and applies where it is 0."""
    optimizer.found_inf = found_inf
