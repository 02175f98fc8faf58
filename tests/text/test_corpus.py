"""The encoded corpus: the train/validation split, the content-keyed token cache and its failures."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from chargen.errors import ChargenError
from chargen.text import corpus as corpus_module
from chargen.text.corpus import file_digests, load_corpus, token_dtype
from chargen.text.tokenizers import CharTokenizer


def test_split_matches_nanogpt_convention(tmp_path):
    text = "".join(chr(97 + i % 26) for i in range(12_345))
    (tmp_path / "c.txt").write_text(text)
    corpus = load_corpus([tmp_path / "c.txt"])
    train, val = corpus.split(0.1)
    assert len(train) == int(len(text) * 0.9)
    assert corpus.tokenizer.decode(val) == text[int(len(text) * 0.9):]


def test_a_given_tokenizer_encodes_the_corpus(tmp_path):
    (tmp_path / "c.txt").write_text("cab cab")
    tokenizer = CharTokenizer(" abcz")  # a fine-tuned model's: more than the corpus needs
    corpus = load_corpus([tmp_path / "c.txt"], tokenizer=tokenizer)
    assert corpus.tokenizer is tokenizer and corpus.tokens.tolist() == [3, 1, 2, 0, 3, 1, 2]


def test_an_empty_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ChargenError, match="empty.txt: is empty, nothing to train on"):
        load_corpus([tmp_path / "empty.txt"])


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


def test_file_digests_are_hashed_once_while_the_file_is_unchanged(tmp_path, monkeypatch):
    path, index = tmp_path / "a.txt", tmp_path / "cache" / "files.json"
    path.write_bytes(b"some bytes" * 100)
    assert file_digests([path], index) == [hashlib.sha256(path.read_bytes()).hexdigest()]
    assert index.is_file()
    hashed = []
    real = hashlib.file_digest
    monkeypatch.setattr(corpus_module.hashlib, "file_digest", lambda f, name: hashed.append(f.name) or real(f, name))
    file_digests([path], index)
    assert hashed == []  # same size, mtime and inode: the recorded digest
    path.write_bytes(b"other bytes" * 100)
    assert file_digests([path], index) == [hashlib.sha256(path.read_bytes()).hexdigest()]
    assert hashed == [str(path)]


def test_smallest_dtype():
    assert token_dtype(256) == np.uint8
    assert token_dtype(257) == np.uint16
    assert token_dtype(65_536) == np.uint16
    assert token_dtype(70_000) == np.uint32
    with pytest.raises(ChargenError, match="too large"):
        token_dtype(1 << 33)


def test_a_torn_or_partial_token_cache_is_rebuilt(tiny_corpus, tmp_path):
    cache = tmp_path / "cache"
    first = load_corpus([tiny_corpus], cache_dir=cache)
    tokens = list(first.tokens)
    for f in cache.glob("*.tokens"):
        f.write_bytes(f.read_bytes()[:7])  # a crash mid-write of an older chargen, or disk trouble
    (cache / "deadbeef.tokens.tmp999999999").write_bytes(b"junk")  # left by a killed run
    again = load_corpus([tiny_corpus], cache_dir=cache)
    assert list(again.tokens) == tokens
    assert not list(cache.glob("*.tmp*"))
    for f in cache.glob("*.json"):
        if f.name != "files.json":
            f.write_text('{"format": ')  # torn metadata
    assert list(load_corpus([tiny_corpus], cache_dir=cache).tokens) == tokens


def test_an_unwritable_token_cache_is_a_clear_error(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "mkdir", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(ChargenError, match="cannot write the token cache: Permission denied"):
        load_corpus([tiny_corpus], cache_dir=tmp_path / "cache")


def test_a_failed_cache_write_leaves_no_temp_files(tiny_corpus, tmp_path, monkeypatch):
    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith(".json") and not str(dst).endswith("files.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(corpus_module.os, "replace", full_disk)
    with pytest.raises(ChargenError, match="cannot write the token cache: No space left on device"):
        load_corpus([tiny_corpus], cache_dir=tmp_path / "cache")
    monkeypatch.undo()
    assert not list((tmp_path / "cache").glob("*.tmp*"))
    # The tokens were renamed into place, but without the metadata that vouches for them they are not used.
    again = load_corpus([tiny_corpus], cache_dir=tmp_path / "cache")
    assert list(again.tokens) == list(load_corpus([tiny_corpus]).tokens)
