"""Big corpora: a content-keyed token cache, many files, bounded evaluation shared between ranks."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from chargen import evaluation
from chargen.evaluation import evaluate
from chargen.model import CharLM, ModelConfig
from chargen.text import corpus as corpus_module
from chargen.text.corpus import load_corpus
from chargen.text.files import DOCUMENT_SEPARATOR
from chargen.text.tokenizers import CharTokenizer

MIXED = "Hello, мир! नमस्ते दुनिया — مرحبا بالعالم 你好世界 안녕 😀🚀 naïve café\r\n" * 50


def test_cache_is_keyed_by_content_not_by_path_or_time(tmp_path, monkeypatch):
    corpus, cache = tmp_path / "a.txt", tmp_path / "cache"
    corpus.write_text(MIXED, encoding="utf-8")
    first = load_corpus([corpus], cache_dir=cache)

    # From now on any re-encoding would fail: a hit must not read the text.
    def no_reading(*args, **kwargs):
        raise AssertionError("the corpus was encoded again")

    monkeypatch.setattr(corpus_module, "iter_text", no_reading)
    os.utime(corpus, ns=(1, 1))  # touched: the stat index misses, the content hash still hits
    copy = tmp_path / "elsewhere" / "b.txt"
    copy.parent.mkdir()
    shutil.copy(corpus, copy)  # same bytes at another path hit the same entry
    for path in (corpus, copy):
        hit = load_corpus([path], cache_dir=cache)
        assert hit.cache_path == first.cache_path
        np.testing.assert_array_equal(hit.tokens, first.tokens)

    monkeypatch.undo()
    corpus.write_text(MIXED + "more", encoding="utf-8")  # new content: a new entry
    assert load_corpus([corpus], cache_dir=cache).cache_path != first.cache_path


def test_a_directory_of_many_files_is_joined_with_a_separator(tmp_path):
    texts = []
    for i in range(1500):
        path = tmp_path / "docs" / f"{i % 7}" / f"doc{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        texts.append((str(path), f"document {i}: {MIXED[i % 40:i % 40 + 20]}"))
        path.write_text(texts[-1][1], encoding="utf-8")
    corpus = load_corpus([tmp_path / "docs"], cache_dir=tmp_path / "cache")
    assert len(corpus.files) == 1500
    expected = DOCUMENT_SEPARATOR.join(text for _, text in sorted(texts))
    assert corpus.tokenizer.decode(corpus.tokens) == expected


def _model_and_tokens(n: int = 20_000):
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=50, hidden=16, layers=1)).eval()
    tokens = np.random.RandomState(0).randint(0, 50, size=n).astype(np.uint16)
    return model, tokens


def test_evaluation_in_groups_of_streams_gives_the_same_figure(monkeypatch):
    model, tokens = _model_and_tokens()
    tokenizer = CharTokenizer([chr(65 + i) for i in range(50)])
    whole = evaluate(model, tokens, tokenizer, stream_len=300, burn_in=50)
    # 3 streams at a time
    monkeypatch.setattr(evaluation, "LOGITS_PER_GROUP", 256 * 50 * 3)
    grouped = evaluate(model, tokens, tokenizer, stream_len=300, burn_in=50)
    assert grouped.tokens == whole.tokens == len(tokens) - 1
    assert grouped.nats_per_token == pytest.approx(whole.nats_per_token, rel=1e-6)


def test_evaluation_cap_scores_evenly_spread_streams(tmp_path):
    model, tokens = _model_and_tokens()
    path = tmp_path / "val.tokens"
    tokens.tofile(path)
    val = np.memmap(path, dtype=np.uint16, mode="r")  # as the trainer passes it: never copied whole
    tokenizer = CharTokenizer([chr(65 + i) for i in range(50)])
    capped = evaluate(model, val, tokenizer, stream_len=500, max_tokens=3000)
    assert 2500 < capped.tokens <= 3000  # whole streams (the last one may be short)
    # The windows come from all over the text, so the figure is close to the full one.
    full = evaluate(model, val, tokenizer, stream_len=500)
    assert capped.nats_per_token == pytest.approx(full.nats_per_token, rel=0.02)
    # A cap above the text's length scores all of it.
    assert evaluate(model, val, tokenizer, stream_len=500, max_tokens=10**9).tokens == len(tokens) - 1


def test_evaluation_shares_streams_between_ranks():
    model, tokens = _model_and_tokens()
    tokenizer = CharTokenizer([chr(65 + i) for i in range(50)])
    full = evaluate(model, tokens, tokenizer, stream_len=700)
    # Each rank's share, not yet summed (the real Distributed.sum all-reduces the totals).
    parts = [evaluate(model, tokens, tokenizer, stream_len=700,
                      dist=SimpleNamespace(rank=r, world_size=3, sum=lambda t: t)) for r in range(3)]
    assert sum(p.tokens for p in parts) == full.tokens
    nats = sum(p.nats_per_token * p.tokens for p in parts)
    assert nats == pytest.approx(full.nats_per_token * full.tokens, rel=1e-6)
