"""Tokenizers: text <-> integer ids, behind one small interface.

Three kinds:
- ``char``: one id per Unicode code point seen in the training corpus (the classic char-rnn
  vocabulary). Optional NFC normalization folds equivalent spellings of accented letters.
- ``byte``: one id per UTF-8 byte, 256 symbols; nothing is ever unknown.
- ``sentencepiece``: subword pieces learned from the corpus, with byte fallback so that any
  text still encodes. The trained model travels inside the checkpoint.

Every tokenizer serializes to a JSON-able dict (``to_dict``) and back (``tokenizer_from_dict``),
which is how checkpoints carry them without pickle.
"""

from __future__ import annotations

import base64
import codecs
import io
import unicodedata
from typing import Iterable, Iterator

import numpy as np

from ..errors import ChargenError, describe_chars
from ..limits import MAX_VOCAB_SIZE

TOKENIZER_KINDS = ("char", "byte", "sentencepiece")


def _normalize(text: str, form: str | None) -> str:
    return unicodedata.normalize(form, text) if form else text


def _codepoints(text: str) -> np.ndarray:
    """The code points of ``text`` as a uint32 array (a view of its UTF-32 encoding: no copy)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _checked_ids(ids: Iterable[int], vocab_size: int) -> list[int]:
    """``ids`` as Python ints, or a ChargenError if any is not an id of this vocabulary."""
    try:
        ids = [int(i) for i in ids]
    except (TypeError, ValueError, OverflowError):
        raise ChargenError("token ids must be whole numbers") from None
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ChargenError(f"token id {bad[0]} is out of range for a vocabulary of {vocab_size}")
    return ids


def _surrogates(text: str) -> set[str]:
    """Lone UTF-16 surrogates (e.g. undecodable bytes in a command-line argument): not text."""
    return {c for c in set(text) if "\ud800" <= c <= "\udfff"}


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ChargenError(f"text has characters that are not valid Unicode text: "
                           f"{describe_chars(_surrogates(text))}") from None


class CharTokenizer:
    """One id per code point. ``chars`` is the vocabulary in id order."""

    kind = "char"

    def __init__(self, chars: Iterable[str], normalize: str | None = None):
        self.chars = list(chars)
        self.normalize = normalize
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ChargenError("char tokenizer: vocabulary must be distinct single characters")
        if normalize not in (None, "NFC", "NFKC"):
            raise ChargenError(f"char tokenizer: unknown normalization {normalize!r} (use NFC or NFKC)")
        codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)
        # Lookup table from code point to id (-1 = unknown): encoding is then one numpy gather.
        self._lookup = np.full(int(codepoints.max(initial=0)) + 1, -1, dtype=np.int32)
        self._lookup[codepoints] = np.arange(len(self.chars), dtype=np.int32)

    @classmethod
    def train(cls, chunks: Iterable[str], normalize: str | None = None) -> "CharTokenizer":
        """Build the vocabulary from text chunks (one streaming pass).

        A bitmap over all code points marks the ones seen: a numpy scatter per chunk, ~10x
        faster than a Python set on big corpora, and 1 MB whatever the corpus size.
        """
        seen = np.zeros(0x110000, dtype=bool)
        for chunk in chunks:
            seen[_codepoints(_normalize(chunk, normalize))] = True
        if not seen.any():
            raise ChargenError("the corpus is empty: no characters to build a vocabulary from")
        return cls(map(chr, np.flatnonzero(seen)), normalize)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown_chars(self, text: str) -> set[str]:
        """Characters of ``text`` (after normalization) that are not in the vocabulary."""
        text = _normalize(text, self.normalize)
        return {c for c in set(text) if ord(c) >= len(self._lookup) or self._lookup[ord(c)] < 0}

    def encode(self, text: str) -> np.ndarray:
        text = _normalize(text, self.normalize)
        codepoints = _codepoints(text)
        if len(codepoints) and codepoints.max() >= len(self._lookup):
            ids = np.full(len(codepoints), -1, dtype=np.int32)  # some code points beyond the table
        else:
            ids = np.take(self._lookup, codepoints)
        if len(ids) and ids.min() < 0:
            raise ChargenError(
                f"text has characters the model's vocabulary lacks: "
                f"{describe_chars(self.unknown_chars(text))}"
            )
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        return "".join(chars[i] for i in _checked_ids(ids, len(chars)))

    def decoder(self) -> "Decoder":
        return _CharDecoder(self.chars)

    def count_chars(self, ids: np.ndarray) -> int:
        return int(len(ids))

    def extended(self, new_chars: Iterable[str]) -> "CharTokenizer":
        """A tokenizer with ``new_chars`` appended; existing ids keep their meaning."""
        extra = sorted(set(new_chars) - set(self.chars))
        return CharTokenizer(self.chars + extra, self.normalize)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": "".join(self.chars), "normalize": self.normalize}


class ByteTokenizer:
    """UTF-8 bytes, ids 0..255. Any text encodes; decoding replaces broken sequences."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(_utf8(text), dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(_checked_ids(ids, 256)).decode("utf-8", errors="replace")

    def decoder(self) -> "Decoder":
        return _BytesDecoder(lambda i: bytes((i,)))

    def unknown_chars(self, text: str) -> set[str]:
        return _surrogates(text)

    def count_chars(self, ids: np.ndarray) -> int:
        # Every UTF-8 character has exactly one byte that is not a continuation byte (10xxxxxx).
        return int(np.count_nonzero((np.asarray(ids) & 0xC0) != 0x80))

    def to_dict(self) -> dict:
        return {"kind": self.kind}


class SentencePieceTokenizer:
    """Subword pieces learned with SentencePiece; byte fallback keeps every text encodable."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
            # A damaged model can parse yet hold pieces that are not UTF-8 (found by fuzzing).
            self._pieces = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        except Exception as exc:  # sentencepiece raises bare RuntimeError/OSError
            raise ChargenError(f"sentencepiece tokenizer data does not parse: {exc}") from None

    @classmethod
    def train(cls, chunks: Iterable[str], vocab_size: int) -> "SentencePieceTokenizer":
        """Learn a unigram model of ``vocab_size`` pieces from text chunks."""
        import sentencepiece as spm

        def lines() -> Iterator[str]:
            for chunk in chunks:
                yield from chunk.split("\n")

        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=lines(),
                model_writer=buffer,
                vocab_size=vocab_size,
                model_type="unigram",
                character_coverage=1.0,
                byte_fallback=True,
                # Exact round trips: no normalization, no invented or collapsed spaces.
                normalization_rule_name="identity",
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True,
                user_defined_symbols=["\n", "\r"],
                unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
                max_sentence_length=1 << 16,
                # A random sample of lines is plenty for 2000-ish pieces; the trainer's time and
                # memory grow with it (~20 MB of text: about a minute and 0.5 GB; more is a big
                # corpus's undoing).
                input_sentence_size=200_000,
                shuffle_input_sentence=True,
                hard_vocab_limit=False,  # a small corpus gets fewer pieces, not an error
                minloglevel=2,
            )
        except RuntimeError as exc:
            message = str(exc).split("]")[-1].strip()
            raise ChargenError(f"--vocab-size {vocab_size}: sentencepiece could not train: {message}") from None
        return cls(buffer.getvalue())

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.asarray(self._sp.encode(text), dtype=np.int32)
        except RuntimeError:
            _utf8(text)  # lone surrogates are what sentencepiece chokes on: say so clearly
            raise

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode(_checked_ids(ids, len(self._pieces)))

    def decoder(self) -> "Decoder":
        return _BytesDecoder(self._piece_bytes)

    def _piece_bytes(self, i: int) -> bytes:
        piece = self._pieces[i]
        if self._sp.is_byte(i):
            return bytes((int(piece[3:5], 16),))
        if self._sp.is_unknown(i) or self._sp.is_control(i):
            return b""
        return piece.replace("\u2581", " ").encode("utf-8")

    def unknown_chars(self, text: str) -> set[str]:
        return _surrogates(text)

    def count_chars(self, ids: np.ndarray) -> int:
        return len(self.decode(ids))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model": base64.b64encode(self.model_proto).decode("ascii")}


class Decoder:
    """Incremental decoder: ``feed(id)`` returns the text that id completes (maybe '')."""

    def feed(self, token_id: int) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class _CharDecoder(Decoder):
    def __init__(self, chars: list[str]):
        self.chars = chars

    def feed(self, token_id: int) -> str:
        return self.chars[token_id]


class _BytesDecoder(Decoder):
    """Byte-level output may split a character across tokens; hold bytes until it completes."""

    def __init__(self, to_bytes):
        self.to_bytes = to_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._utf8.decode(self.to_bytes(token_id))


Tokenizer = CharTokenizer | ByteTokenizer | SentencePieceTokenizer


def train_tokenizer(kind: str, chunks: Iterable[str], vocab_size: int | None = None,
                    normalize: str | None = None) -> Tokenizer:
    """Build a tokenizer of ``kind`` from the corpus text chunks."""
    if kind == "char":
        return CharTokenizer.train(chunks, normalize)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(chunks, vocab_size or 2000)
    raise ChargenError(f"--tokenizer {kind!r}: choose one of {', '.join(TOKENIZER_KINDS)}")


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """Rebuild a tokenizer from ``to_dict`` output, validating it (it may come from a file)."""
    if not isinstance(data, dict) or data.get("kind") not in TOKENIZER_KINDS:
        raise ChargenError(f"tokenizer metadata is invalid: unknown kind {data.get('kind') if isinstance(data, dict) else data!r}")
    kind = data["kind"]
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        chars, normalize = data.get("chars"), data.get("normalize")
        if not isinstance(chars, str) or not chars or len(chars) > MAX_VOCAB_SIZE:
            raise ChargenError("tokenizer metadata is invalid: 'chars' must be a non-empty string")
        if normalize is not None and not isinstance(normalize, str):
            raise ChargenError("tokenizer metadata is invalid: 'normalize' must be a string or null")
        return CharTokenizer(chars, normalize)
    blob = data.get("model")
    if not isinstance(blob, str):
        raise ChargenError("tokenizer metadata is invalid: sentencepiece 'model' must be base64 text")
    try:
        proto = base64.b64decode(blob, validate=True)
    except ValueError:
        raise ChargenError("tokenizer metadata is invalid: sentencepiece 'model' is not base64") from None
    return SentencePieceTokenizer(proto)
