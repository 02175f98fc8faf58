"""Property tests (hypothesis, bounded): hostile bytes end in a clean ChargenError or a valid result.

The checkpoint loader gets a real checkpoint's bytes truncated, overwritten, spliced and with its
header length forged, and its JSON metadata rewritten with arbitrary values; the tokenizers get
arbitrary text, arbitrary ids and damaged SentencePiece models. Anything else that escapes (a
TypeError, a UnicodeDecodeError, ...) is a crash and fails the test. A watchdog turns a hang into
a failure with a traceback instead of a stuck CI job. ``CHARGEN_FUZZ_EXAMPLES`` runs more examples.
"""

from __future__ import annotations

import copy
import faulthandler
import json
import os
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from chargen.checkpoint import METADATA_KEY, Checkpoint, load_checkpoint, save_checkpoint
from chargen.errors import ChargenError
from chargen.model import CharLM, ModelConfig
from chargen.text.tokenizers import ByteTokenizer, CharTokenizer, SentencePieceTokenizer, tokenizer_from_dict
from tests.conftest import make_text

EXAMPLES = int(os.environ.get("CHARGEN_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
HANG_SECONDS = 120  # for the whole test; a normal run takes a few seconds


@contextmanager
def watchdog():
    """Abort the test process with every thread's traceback if the body hangs."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    """A real checkpoint with training state (optimizer, RNG, carried state): what users have."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer("abcdefgh \n\u00e9")
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden=8))
    extra = {"optim.0.step": torch.tensor(3.0), "optim.0.exp_avg": torch.zeros(tokenizer.vocab_size, 8),
             "rng.torch": torch.get_rng_state(), "rnn_state.h": torch.zeros(1, 2, 8)}
    path = tmp_path_factory.mktemp("fuzz") / "last.safetensors"
    save_checkpoint(path, model, tokenizer, {"step": 7, "epoch": 0.5, "corpus": ["x.txt"]}, extra)
    return path.read_bytes()


def load_or_clean_error(data: bytes, path: Path) -> Checkpoint | None:
    """Load ``data`` as a checkpoint: a ChargenError is fine, any other exception fails the test."""
    path.write_bytes(data)
    try:
        ckpt = load_checkpoint(path, training_state=True)
    except ChargenError as exc:
        assert str(exc).startswith(str(path)), exc  # the message names the file
        return None
    # Loaded: then it must be a usable model, not a trap for the next command.
    assert ckpt.tokenizer.vocab_size == ckpt.config.vocab_size
    assert all(torch.isfinite(p).all() for p in ckpt.model.parameters())
    with torch.no_grad():
        logits, _ = ckpt.model(torch.zeros(1, 2, dtype=torch.long), None)
    assert logits.shape[-1] == ckpt.config.vocab_size
    return ckpt


# An edit: (kind, where as a fraction of the file, bytes). Several edits make one mutant.
EDIT = st.tuples(st.sampled_from(["truncate", "overwrite", "insert", "delete", "flip_header", "length"]),
                 st.floats(0, 1, allow_nan=False), st.binary(min_size=1, max_size=16))


def mutate(data: bytes, edits) -> bytes:
    data = bytearray(data)
    header_end = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    for kind, where, blob in edits:
        at = int(where * max(len(data) - 1, 0))
        if kind == "truncate":
            del data[at:]
        elif kind == "overwrite":
            data[at:at + len(blob)] = blob
        elif kind == "insert":
            data[at:at] = blob
        elif kind == "delete":
            del data[at:at + len(blob)]
        elif kind == "flip_header" and data:  # inside the JSON header, where a flip changes meaning
            i = int(where * min(header_end, len(data) - 1))
            data[i] ^= blob[0] or 1
        elif kind == "length":  # forge the header length: off by a little, or anything at all
            off_by_a_little = header_end - 8 + blob[0] - 128
            anything = int.from_bytes(blob[:8].ljust(8, b"\0"), "little")
            data[:8] = struct.pack("<Q", max(0, off_by_a_little) if len(blob) % 2 else anything)
    return bytes(data)


@FUZZ
@given(edits=st.lists(EDIT, min_size=1, max_size=4))
def test_loader_mutated_bytes_end_in_a_clean_error_or_a_valid_checkpoint(checkpoint_bytes, tmp_path, edits):
    with watchdog():
        load_or_clean_error(mutate(checkpoint_bytes, edits), tmp_path / "mutant.safetensors")


def test_loader_every_truncation_is_a_clean_error(checkpoint_bytes, tmp_path):
    """Not random: every prefix of the file, the way an interrupted copy leaves it."""
    with watchdog():
        step = max(1, len(checkpoint_bytes) // 400)
        for size in [*range(0, 64), *range(64, len(checkpoint_bytes), step)]:
            assert load_or_clean_error(checkpoint_bytes[:size], tmp_path / "cut.safetensors") is None, size
        assert load_or_clean_error(checkpoint_bytes, tmp_path / "whole.safetensors") is not None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from([0, 1, -1, 8, 11, 1 << 21, 10**9, 2**64, "lstm", "gru", "char", "byte",
                       "sentencepiece", "NFC", "abcdefgh \n\u00e9", "\udcff"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)


def _paths(node, prefix=()):
    """Every key path into the metadata, so a mutation can land anywhere in it."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))


@FUZZ
@given(data=st.data())
def test_loader_tampered_metadata_ends_in_a_clean_error_or_a_valid_checkpoint(checkpoint_bytes, tmp_path, data):
    """Well-formed safetensors whose chargen metadata was rewritten: the schema must catch it."""
    source = tmp_path / "source.safetensors"
    source.write_bytes(checkpoint_bytes)
    with safe_open(str(source), framework="pt") as f:
        meta, tensors = json.loads(f.metadata()[METADATA_KEY]), {k: f.get_tensor(k) for k in f.keys()}
    paths = sorted(_paths(meta), key=repr)
    meta = copy.deepcopy(meta)
    for _ in range(data.draw(st.integers(1, 3))):
        *parents, key = data.draw(st.sampled_from(paths))
        node = meta
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue  # an earlier edit replaced this branch
        if data.draw(st.booleans()):
            node[key] = data.draw(JSON)
        else:
            node.pop(key, None)
    with watchdog():
        load_or_clean_error(safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(meta)}),
                            tmp_path / "tampered.safetensors")


# ---- tokenizers -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizers() -> dict:
    return {
        "char": CharTokenizer("abc \n\u00e9\U0001F600"),
        "char-nfc": CharTokenizer("abc \n\u00e9", "NFC"),
        "char-nfkc": CharTokenizer("abc", "NFKC"),
        "byte": ByteTokenizer(),
        "sentencepiece": SentencePieceTokenizer.train([make_text()], 300),
    }


TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)  # surrogates included
IDS = st.lists(st.one_of(st.integers(-3, 400), st.integers(-2**70, 2**70), st.floats(), st.booleans(),
                         st.text(max_size=2), st.none()), max_size=20)


@FUZZ
@given(kind=st.sampled_from(["char", "char-nfc", "char-nfkc", "byte", "sentencepiece"]), text=TEXT, ids=IDS)
def test_tokenizers_encode_decode_any_input(tokenizers, kind, text, ids):
    tokenizer = tokenizers[kind]
    with watchdog():
        try:
            encoded = tokenizer.encode(text)
        except ChargenError:
            assert kind.startswith("char") or tokenizer.unknown_chars(text)  # only for text it cannot hold
        else:
            assert encoded.dtype.kind == "i" and ((0 <= encoded) & (encoded < tokenizer.vocab_size)).all()
            decoded = tokenizer.decode(encoded)
            if kind in ("char", "byte"):
                assert decoded == text  # lossless for text they can encode
            decoder = tokenizer.decoder()
            streamed = "".join(decoder.feed(int(i)) for i in encoded)
            assert streamed == decoded or kind == "sentencepiece"  # sp decodes pieces in context
        for attempt in (ids, np.array([i for i in ids if type(i) is int and -2**63 <= i < 2**63], dtype=np.int64)):
            try:
                assert isinstance(tokenizer.decode(attempt), str)
            except ChargenError as exc:
                assert "token id" in str(exc)


@pytest.fixture(scope="module")
def sp_proto(tokenizers) -> bytes:
    return tokenizers["sentencepiece"].model_proto


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(["truncate", "overwrite", "insert", "delete"]),
                                st.floats(0, 1, allow_nan=False), st.binary(min_size=1, max_size=8)),
                      min_size=1, max_size=3))
def test_damaged_sentencepiece_model_is_a_clean_error_or_works(sp_proto, edits):
    proto = bytearray(sp_proto)
    for kind, where, blob in edits:
        at = int(where * max(len(proto) - 1, 0))
        if kind == "truncate":
            del proto[at:]
        elif kind == "overwrite":
            proto[at:at + len(blob)] = blob
        elif kind == "insert":
            proto[at:at] = blob
        else:
            del proto[at:at + len(blob)]
    with watchdog():
        try:
            tokenizer = tokenizer_from_dict({"kind": "sentencepiece",
                                             "model": __import__("base64").b64encode(bytes(proto)).decode()})
        except ChargenError:
            return
        ids = tokenizer.encode("the quick brown fox\n\u00e9 \u6f22")
        assert isinstance(tokenizer.decode(ids), str)
        assert isinstance(tokenizer.decode(list(range(min(tokenizer.vocab_size, 300)))), str)


@FUZZ
@given(data=JSON, kind=st.sampled_from(["char", "byte", "sentencepiece", None]))
def test_tokenizer_metadata_any_json_is_a_clean_error_or_a_tokenizer(data, kind):
    if kind is not None and isinstance(data, dict):
        data = dict(data, kind=kind)
    with watchdog():
        try:
            tokenizer = tokenizer_from_dict(data)
        except ChargenError:
            return
        assert tokenizer.vocab_size >= 1
        tokenizer.decode([0])


def test_sentencepiece_model_with_a_non_utf8_piece_is_a_clean_error(sp_proto):
    """Found by the fuzzer: the proto parses, but a piece's text is not UTF-8."""
    assert b"\xe2\x96\x81" in sp_proto  # the word-boundary mark U+2581 inside a piece
    damaged = sp_proto.replace(b"\xe2\x96\x81", b"\xe2\x96\xff", 1)
    with pytest.raises(ChargenError, match="sentencepiece tokenizer data does not parse"):
        SentencePieceTokenizer(damaged)
