import numpy as np
import pytest

from chargen import data
from chargen.data import StreamBatches, load_corpus, token_dtype
from chargen.errors import ChargenError


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
    assert len({batches.epoch_shift(e) for e in range(1, 6)}) == 5


def test_streams_select_a_subset_for_data_parallel_ranks():
    tokens = np.arange(1000)
    full = StreamBatches(tokens, batch_size=4, seq_len=5)
    odd = StreamBatches(tokens, batch_size=4, seq_len=5, streams=range(1, 4, 2))
    assert torch_equal(odd[3][0], full[3][0][1::2])


def test_too_short_corpus_is_a_clear_error():
    with pytest.raises(ChargenError, match="fewer than one batch"):
        StreamBatches(np.arange(50), batch_size=8, seq_len=16)


def test_split_matches_nanogpt_convention(tmp_path):
    text = "".join(chr(97 + i % 26) for i in range(12_345))
    (tmp_path / "c.txt").write_text(text)
    corpus = load_corpus([tmp_path / "c.txt"])
    train, val = corpus.split(0.1)
    assert len(train) == int(len(text) * 0.9)
    assert corpus.tokenizer.decode(val) == text[int(len(text) * 0.9):]


def test_invalid_utf8_names_file_and_byte_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "READ_BLOCK_BYTES", 16)  # the bad byte lands in a later block
    path = tmp_path / "bad.txt"
    path.write_bytes("héllo wörld, ".encode() * 5 + b"\xff tail")
    offset = len("héllo wörld, ".encode() * 5)
    with pytest.raises(ChargenError, match=rf"bad.txt: invalid utf-8 at byte offset {offset}.*--encoding"):
        load_corpus([path])


def test_other_encodings_with_encoding_option(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("façade naïve ".encode("latin-1") * 100)
    corpus = load_corpus([path], encoding="latin-1")
    assert corpus.tokenizer.decode(corpus.tokens[:13]) == "façade naïve "


def test_binary_file_is_rejected(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ChargenError, match="binary"):
        load_corpus([path])


def test_directory_of_files_joined_with_separator(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("first")
    (tmp_path / "docs" / "sub" / "b.md").write_text("second")
    (tmp_path / "docs" / "blob.bin").write_bytes(b"\x00\x01\x02")  # skipped: not text
    (tmp_path / "docs" / ".hidden").write_text("secret")
    corpus = load_corpus([tmp_path / "docs"])
    assert corpus.tokenizer.decode(corpus.tokens) == "first" + data.DOCUMENT_SEPARATOR + "second"


def test_directory_without_text_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ChargenError, match="directory has no text files"):
        load_corpus([tmp_path / "empty"])


def test_crlf_is_kept(tmp_path):
    path = tmp_path / "dos.txt"
    path.write_bytes(b"one\r\ntwo\r\n")
    corpus = load_corpus([path])
    assert corpus.tokenizer.decode(corpus.tokens) == "one\r\ntwo\r\n"


def test_cache_is_written_once_and_reused(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("some text to cache " * 100)
    first = load_corpus([path], cache_dir=tmp_path / "cache")
    assert isinstance(first.tokens, np.memmap) and first.tokens.dtype == np.uint8
    stamp = first.cache_path.stat().st_mtime_ns
    second = load_corpus([path], cache_dir=tmp_path / "cache")
    assert second.cache_path == first.cache_path and second.cache_path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.tokens, second.tokens)
    # Different tokenizer settings or a changed file give a different cache entry.
    assert load_corpus([path], tokenizer_kind="byte", cache_dir=tmp_path / "cache").cache_path != first.cache_path
    path.write_text("changed text " * 100)
    changed = load_corpus([path], cache_dir=tmp_path / "cache")
    assert changed.tokenizer.decode(changed.tokens[:13]) == "changed text "


def test_smallest_dtype():
    assert token_dtype(256) == np.uint8
    assert token_dtype(257) == np.uint16
    assert token_dtype(70_000) == np.uint32


def torch_equal(a, b) -> bool:
    return bool((a == b).all())
