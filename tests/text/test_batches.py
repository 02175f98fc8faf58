"""Truncated-BPTT batches: parallel streams that continue from batch to batch."""

import numpy as np
import pytest

from chargen.errors import ChargenError
from chargen.text.batches import StreamBatches


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_row_of_next_batch_continues_row_of_previous_batch():
    tokens = np.arange(10_000) % 251
    batches = StreamBatches(tokens, batch_size=4, seq_len=7)
    for k in range(len(batches) - 1):
        x, y = batches[k]
        x_next, _ = batches[k + 1]
        assert x.shape == (4, 7)
        # Targets are the inputs shifted by one, and batch k+1 starts where batch k ended.
        assert torch_equal(x[:, 1:], y[:, :-1])
        assert torch_equal(x_next[:, 0], y[:, -1])


def test_each_row_walks_one_contiguous_stream():
    tokens = np.arange(1000)
    batches = StreamBatches(tokens, batch_size=5, seq_len=9)
    stream_len = 1000 // 5
    for row in range(5):
        seen = np.concatenate([batches[k][0][row].numpy() for k in range(len(batches))])
        start = row * stream_len
        np.testing.assert_array_equal(seen, np.arange(start, start + len(seen)))
    assert len(batches) == (stream_len - 1) // 9


def test_each_epoch_starts_the_streams_elsewhere_and_a_step_always_names_one_batch():
    tokens = np.arange(5000)
    batches = StreamBatches(tokens, batch_size=4, seq_len=10)
    n = len(batches)
    assert not torch_equal(batches[n][0], batches[0][0])  # epoch 1 is not a replay of epoch 0
    for k in range(n, 2 * n - 1):  # within the epoch, rows still continue one another
        x, y = batches[k]
        assert torch_equal(batches[k + 1][0][:, 0], y[:, -1])
        assert torch_equal(x[:, 1:], y[:, :-1])
    again = StreamBatches(tokens, batch_size=4, seq_len=10)
    assert torch_equal(again[3 * n + 7][0], batches[3 * n + 7][0])  # what resuming relies on
    assert len({batches.epoch_shift(e) for e in range(1, 6)}) == 5 and batches.epoch_shift(0) == 0


def test_streams_select_a_subset_for_data_parallel_ranks():
    tokens = np.arange(1000)
    full = StreamBatches(tokens, batch_size=4, seq_len=5)
    odd = StreamBatches(tokens, batch_size=4, seq_len=5, streams=range(1, 4, 2))
    assert torch_equal(odd[3][0], full[3][0][1::2])


def test_too_short_corpus_is_a_clear_error():
    with pytest.raises(ChargenError, match="the training split has 50 tokens, fewer than one batch needs "
                                           r"\(batch size 8 x \(seq len 16 \+ 1\)\)"):
        StreamBatches(np.arange(50), batch_size=8, seq_len=16)
