"""Each private third-party API in chargen.compat still exists and still does what chargen needs.

These fail when a new torch, Python or prompt-toolkit release changes a private name under us,
rather than letting chargen quietly fall back to its slower or plainer path.
"""

from __future__ import annotations

import codecs
import types

import pytest
import torch
from torch import nn

from chargen import compat


def test_fused_rnn_calls_the_kernel_nn_lstm_uses():
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, num_layers=2, batch_first=True)
    x = torch.randn(3, 4, 5)
    state = (torch.randn(2, 3, 7), torch.randn(2, 3, 7))
    want, (want_h, want_c) = lstm(x, state)
    weights = [w for layer in lstm.all_weights for w in layer]
    got, h, c = compat.fused_rnn(torch.lstm, x, state, weights, num_layers=2, training=False)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close((h, c), (want_h, want_c))


def test_fused_rnn_runs_a_gru_too():
    torch.manual_seed(0)
    gru = nn.GRU(4, 6, batch_first=True)
    x, h0 = torch.randn(2, 5, 4), torch.randn(1, 2, 6)
    want, want_h = gru(x, h0)
    got, h = compat.fused_rnn(torch.gru, x, h0, [w for layer in gru.all_weights for w in layer], 1, False)
    torch.testing.assert_close((got, h), (want, want_h))


def test_the_cudnn_flatten_functions_are_still_there():
    assert callable(getattr(torch, "_cudnn_rnn_flatten_weight", None))
    assert callable(getattr(torch, "_use_cudnn_rnn_flatten_weight", None))
    from torch.backends.cudnn import rnn as cudnn_rnn

    assert callable(cudnn_rnn.get_cudnn_mode)


def test_tensor_version_counts_in_place_changes():
    weight = torch.zeros(3)
    before = compat.tensor_version(weight)
    weight.add_(1)
    assert before >= 0 and compat.tensor_version(weight) == before + 1


def test_cpu_bf16_checks_are_still_there():
    assert any(callable(getattr(torch.cpu, name, None))
               for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    assert isinstance(compat.cpu_has_native_bf16(), bool)


def test_bf16_linear_matches_a_plain_product_where_available():
    if not compat.bf16_matmul_available():
        pytest.skip("this CPU has no native bf16 matrix products (the engine stays in fp32 here)")
    torch.manual_seed(0)
    weight, bias, x = torch.randn(16, 8), torch.randn(16), torch.randn(3, 8)
    got = compat.bf16_linear(x, compat.prepack_bf16_linear_weight(weight), bias.to(torch.bfloat16))
    torch.testing.assert_close(got.float(), x @ weight.T + bias, atol=0.1, rtol=0.05)


def test_is_text_encoding_tells_text_codecs_from_byte_codecs():
    assert hasattr(codecs.lookup("base64"), "_is_text_encoding")
    assert compat.is_text_encoding(codecs.lookup("utf-8")) and compat.is_text_encoding(codecs.lookup("latin-1"))
    assert not compat.is_text_encoding(codecs.lookup("base64"))
    assert not compat.is_text_encoding(codecs.lookup("rot13"))


def test_spacing_marks_take_one_column_in_prompt_toolkit(monkeypatch):
    import prompt_toolkit.utils as utils

    assert hasattr(utils, "wcwidth") and hasattr(utils, "_CHAR_SIZES_CACHE")
    monkeypatch.setattr(utils, "wcwidth", utils.wcwidth)  # restored after the test
    compat.count_spacing_marks_as_one_column(utils)
    assert utils.get_cwidth("\u0a3e") == 1  # GURMUKHI VOWEL SIGN AA, as terminals draw it
    assert utils.get_cwidth("\u0a3e\u0a3e") == 2
    assert utils.get_cwidth("a") == 1 and utils.get_cwidth("\u0301") == 0  # others unchanged
    assert not compat.count_spacing_marks_as_one_column(utils)  # once is enough


def test_spacing_mark_fix_changes_nothing_when_the_names_are_gone():
    bare = types.SimpleNamespace(wcwidth=lambda char: 0)  # no cache: another prompt-toolkit
    assert not compat.count_spacing_marks_as_one_column(bare)
    assert bare.wcwidth("\u0a3e") == 0
