"""Corpus reading, token caching and truncated-BPTT batches.

The corpus is read as a stream of text chunks, encoded once into a flat token file (the smallest
unsigned dtype that holds the vocabulary) and memory-mapped from then on, so even a corpus of
gigabytes never lives in memory as Python objects. The cache is keyed by a hash of the files'
contents and the tokenizer settings and shared by every run in the same checkpoints folder.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .checkpoint import remove_stale_temp_files
from .errors import ChargenError
from .tokenizers import Tokenizer, tokenizer_from_dict, train_tokenizer

READ_BLOCK_BYTES = 8 << 20
DOCUMENT_SEPARATOR = "\n\n"  # between files, so documents do not run into each other
CACHE_FORMAT = 2  # 2: keyed by file contents
FILE_INDEX_NAME = "files.json"  # path -> (size, mtime, inode, sha256), in the cache folder


def find_text_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand the user's corpus arguments (files and directories) into a sorted file list."""
    if not paths:
        raise ChargenError("no corpus given: pass one or more text files or directories")
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and _looks_like_text(p)
            )
            if not found:
                raise ChargenError(f"{path}: directory has no text files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise ChargenError(f"{path}: not a regular file or directory")
        else:
            raise ChargenError(f"{path}: no such file or directory")
    for path in files:
        if not os.access(path, os.R_OK):
            raise ChargenError(f"{path}: permission denied (cannot read the file)")
    return files


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 1  # unknown: let the reader report the real error


def _looks_like_text(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return b"\x00" not in f.read(8192)
    except OSError:
        return True  # let the reader report the real error


def iter_text(files: list[Path], encoding: str = "utf-8") -> Iterator[str]:
    """Yield the corpus as text chunks, files joined by a blank line.

    Invalid bytes raise a ChargenError naming the file and the byte offset. Line endings are kept
    exactly as they are (CRLF stays CRLF) so the model learns the text as written.
    """
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise ChargenError(f"--encoding {encoding!r}: unknown text encoding (try utf-8, latin-1, cp1252, utf-16)") from None
    if not getattr(codec, "_is_text_encoding", True):  # base64, zlib, rot13: not bytes -> text
        raise ChargenError(f"--encoding {encoding!r}: not a text encoding (try utf-8, latin-1, cp1252, utf-16)")
    for index, path in enumerate(files):
        if index:
            yield DOCUMENT_SEPARATOR
        decoder = codecs.getincrementaldecoder(encoding)("strict")
        offset = 0
        try:
            with open(path, "rb") as f:
                while True:
                    block = f.read(READ_BLOCK_BYTES)
                    nul = block.find(b"\x00") if offset == 0 and _is_utf8(encoding) else -1
                    if nul >= 0:
                        raise ChargenError(
                            f"{path}: looks like a binary file (NUL byte at offset {nul}); "
                            "pass text files, or --encoding if it is UTF-16/32 text")
                    pending = len(decoder.getstate()[0])  # bytes held from the previous block
                    try:
                        text = decoder.decode(block, final=not block)
                    except UnicodeDecodeError as exc:
                        raise ChargenError(
                            f"{path}: invalid {encoding} at byte offset {offset - pending + exc.start}; "
                            f"pass --encoding (e.g. --encoding latin-1) if the file uses another encoding"
                        ) from None
                    except UnicodeError as exc:  # e.g. utf-16 without a byte-order mark
                        raise ChargenError(f"{path}: cannot decode as {encoding} ({exc}); pass the "
                                           "file's real --encoding (e.g. utf-8, latin-1)") from None
                    if text:
                        yield text
                    if not block:
                        break
                    offset += len(block)
        except OSError as exc:
            raise ChargenError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ChargenError(f"vocabulary of {vocab_size} ids is too large")


@dataclass
class Corpus:
    """An encoded corpus: memory-mapped tokens plus the tokenizer that made them."""

    tokens: np.ndarray
    tokenizer: Tokenizer
    files: list[Path]
    cache_path: Path | None = None

    def split(self, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
        """Contiguous train/val split: the last ``val_frac`` of tokens is validation.

        ``int(n * (1 - val_frac))`` reproduces nanoGPT's shakespeare_char split for the char
        tokenizer, so validation losses compare with published figures.
        """
        cut = int(len(self.tokens) * (1 - val_frac))
        return self.tokens[:cut], self.tokens[cut:]


def _cache_key(files: list[Path], settings: dict, cache_dir: Path) -> str:
    """Hash of the files' contents (in order) and the tokenizer settings.

    Keyed by content, not by path or modification time, so a copied, moved or touched corpus
    still hits the cache and an edited one never does.
    """
    digests = file_digests(files, cache_dir / FILE_INDEX_NAME)
    blob = json.dumps({"files": digests, "settings": settings, "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def file_digests(files: list[Path], index_path: Path) -> list[str]:
    """SHA-256 of each file's bytes.

    Hashing 500 MB takes about a second, too long for every start. So, like git's index, the
    digest is recorded in ``index_path`` with the file's size, mtime and inode, and reused while
    those are unchanged: a warm start reads one small JSON file and calls ``stat``.
    """
    try:
        index = json.loads(index_path.read_text())
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}
    digests, changed = [], False
    for path in files:
        name, st = str(path.resolve()), path.stat()
        identity = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = index.get(name)
        if isinstance(entry, list) and len(entry) == 4 and entry[:3] == identity:
            digests.append(entry[3])
            continue
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as exc:
            raise ChargenError(f"{path}: cannot read: {exc.strerror or exc}") from None
        index[name], changed = identity + [digest], True
        digests.append(digest)
    if changed:
        try:  # best effort: without the index the next start hashes again, nothing worse
            index_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = index_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(index))
            os.replace(tmp, index_path)
        except OSError:
            pass
    return digests


def load_corpus(paths: list[str | os.PathLike], *, tokenizer: Tokenizer | None = None,
                tokenizer_kind: str = "char", vocab_size: int | None = None,
                normalize: str | None = None, encoding: str = "utf-8",
                cache_dir: str | os.PathLike | None = None) -> Corpus:
    """Read, tokenize and cache a corpus.

    With ``tokenizer`` given (fine-tuning, resuming) the text is encoded with it; otherwise a
    tokenizer of ``tokenizer_kind`` is trained on the corpus. With ``cache_dir`` the encoded tokens
    are stored there and reused on the next call with the same files and settings.
    """
    files = find_text_files(paths)
    if all(_size(p) == 0 for p in files):
        raise ChargenError(f"{files[0] if len(files) == 1 else ', '.join(map(str, files[:3]))}: "
                           "is empty, nothing to train on")
    if tokenizer is not None:
        settings = {"tokenizer": tokenizer.to_dict()}
    else:
        settings = {"kind": tokenizer_kind, "normalize": normalize}
        if tokenizer_kind == "sentencepiece":  # the only kind a vocabulary size changes
            settings["vocab_size"] = vocab_size
    settings["encoding"] = encoding.lower()

    cache_path = meta_path = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        key = _cache_key(files, settings, cache_dir)
        cache_path, meta_path = cache_dir / f"{key}.tokens", cache_dir / f"{key}.json"
        cached = _read_cache(cache_path, meta_path)
        if cached is not None:
            tokens, tok = cached
            return Corpus(tokens, tok, files, cache_path)

    if tokenizer is None:
        tokenizer = train_tokenizer(tokenizer_kind, iter_text(files, encoding), vocab_size, normalize)
    dtype = token_dtype(tokenizer.vocab_size)

    if cache_path is None:
        parts = [tokenizer.encode(chunk).astype(dtype) for chunk in iter_text(files, encoding)]
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype)
    else:
        # Tokens first, then the metadata that vouches for them, each renamed into place whole:
        # a crash at any point leaves no cache entry or a complete one, never a torn one.
        tmp = cache_path.with_name(f"{cache_path.name}.tmp{os.getpid()}")
        tmp_meta = meta_path.with_name(f"{meta_path.name}.tmp{os.getpid()}")
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(cache_path.parent, "*.tmp*")  # left by killed runs
            with open(tmp, "wb") as out:
                for chunk in iter_text(files, encoding):
                    out.write(tokenizer.encode(chunk).astype(dtype).tobytes())
            meta = {"format": CACHE_FORMAT, "dtype": dtype.name, "tokenizer": tokenizer.to_dict(),
                    "count": tmp.stat().st_size // dtype.itemsize}
            tmp_meta.write_text(json.dumps(meta))
            os.replace(tmp, cache_path)
            os.replace(tmp_meta, meta_path)
        except OSError as exc:
            raise ChargenError(f"{cache_path.parent}: cannot write the token cache: {exc.strerror or exc}; "
                               "free some disk space or choose a writable --out") from None
        finally:
            for leftover in (tmp, tmp_meta):
                try:
                    leftover.unlink(missing_ok=True)
                except OSError:
                    pass
        tokens, tokenizer = _read_cache(cache_path, meta_path)
    if len(tokens) == 0:
        raise ChargenError(f"{files[0] if len(files) == 1 else 'the corpus'}: is empty, nothing to train on")
    return Corpus(tokens, tokenizer, files, cache_path)


def _read_cache(cache_path: Path, meta_path: Path):
    """The cached tokens and tokenizer, or None when the cache is missing or unusable."""
    try:
        meta = json.loads(meta_path.read_text())
        dtype = np.dtype(meta["dtype"])
        if meta["format"] != CACHE_FORMAT or cache_path.stat().st_size != meta["count"] * dtype.itemsize:
            return None
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
        if meta["count"] == 0:
            return np.zeros(0, dtype), tokenizer
        return np.memmap(cache_path, dtype=dtype, mode="r"), tokenizer
    except (OSError, ValueError, KeyError, TypeError, ChargenError):
        return None


class StreamBatches:
    """Truncated-BPTT batches over ``batch_size`` parallel, contiguous streams.

    The tokens are cut into ``batch_size`` equal streams; batch ``k`` holds tokens
    ``[k*seq_len, (k+1)*seq_len)`` of every stream (targets shifted by one). So row ``r`` of batch
    ``k+1`` continues row ``r`` of batch ``k``, and a model that carries its recurrent state from
    one batch to the next sees context far longer than ``seq_len``. Batch index 0 starts an epoch:
    that is the only place the carried state must be reset.

    Each later epoch starts the streams at a different offset (wrapping around the end of the
    corpus), so the model does not see the very same windows, cut at the same places, every epoch:
    on a small corpus, that repetition is what it learns to memorise. The offset depends only on
    the epoch number, so a batch index always names the same batch (resuming relies on it).

    ``streams`` selects which of the streams this process sees (for data-parallel training).
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int,
                 streams: range | None = None, what: str = "the training split"):
        self.tokens, self.seq_len = tokens, seq_len
        self.stream_len = len(tokens) // batch_size
        if self.stream_len < seq_len + 1:
            raise ChargenError(
                f"{what} has {len(tokens):,} tokens, fewer than one batch needs "
                f"(batch size {batch_size} x (seq len {seq_len} + 1)); use a bigger corpus or "
                f"lower --batch-size / --seq-len")
        self.steps_per_epoch = (self.stream_len - 1) // seq_len
        streams = streams if streams is not None else range(batch_size)
        self._offsets = (np.asarray(streams, dtype=np.int64)[:, None] * self.stream_len
                         + np.arange(seq_len + 1, dtype=np.int64)[None, :])

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch_shift(self, epoch: int) -> int:
        """Where the streams start in ``epoch``, relative to epoch 0 (tokens)."""
        if epoch == 0:
            return 0
        return int(np.random.default_rng([epoch, 0x5EED]).integers(self.stream_len))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of batch ``index`` (any step number), each ``[B, seq_len]``."""
        epoch, index = divmod(index, self.steps_per_epoch)
        positions = self._offsets + (index * self.seq_len + self.epoch_shift(epoch))
        window = torch.from_numpy(self.tokens[positions % len(self.tokens)].astype(np.int64))
        return window[:, :-1], window[:, 1:]
