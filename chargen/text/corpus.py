"""Encoding a corpus once and caching its tokens.

The text is encoded into a flat token file (the smallest unsigned dtype that holds the
vocabulary) and memory-mapped from then on, so even a corpus of gigabytes never lives in memory
as Python objects. The cache is keyed by a hash of the files' contents and the tokenizer settings
and shared by every run in the same checkpoints folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ChargenError
from ..fileio import remove_stale_temp_files
from .files import file_size, find_text_files, iter_text
from .tokenizers import Tokenizer, tokenizer_from_dict, train_tokenizer

CACHE_FORMAT = 2  # 2: keyed by file contents
FILE_INDEX_NAME = "files.json"  # path -> (size, mtime, inode, sha256), in the cache folder


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
        tmp = index_path.with_suffix(f".tmp{os.getpid()}")
        try:  # best effort: without the index the next start hashes again, nothing worse
            index_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(index))
            os.replace(tmp, index_path)
        except OSError:
            try:  # a full disk: no half-written temp file left behind
                tmp.unlink(missing_ok=True)
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
    if all(file_size(p) == 0 for p in files):
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
        write_cache(cache_path, meta_path, iter_text(files, encoding), tokenizer, dtype)
        tokens, tokenizer = _read_cache(cache_path, meta_path)
    if len(tokens) == 0:
        raise ChargenError(f"{files[0] if len(files) == 1 else 'the corpus'}: is empty, nothing to train on")
    return Corpus(tokens, tokenizer, files, cache_path)


def write_cache(cache_path: Path, meta_path: Path, chunks, tokenizer: Tokenizer, dtype: np.dtype) -> None:
    """Encode ``chunks`` into the cache: the tokens first, then the metadata that vouches for them,
    each renamed into place whole, so a crash at any point leaves no cache entry or a complete one."""
    tmp = cache_path.with_name(f"{cache_path.name}.tmp{os.getpid()}")
    tmp_meta = meta_path.with_name(f"{meta_path.name}.tmp{os.getpid()}")
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(cache_path.parent, "*.tmp*")  # left by killed runs
        with open(tmp, "wb") as out:
            for chunk in chunks:
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
