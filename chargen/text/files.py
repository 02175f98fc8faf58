"""Finding and reading the user's text: files and directories in, decoded text chunks out.

The corpus is read as a stream of chunks, never as one string, so a corpus of gigabytes is never
in memory at once. Every problem (binary file, wrong encoding, unreadable file) is a ChargenError
naming the file.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Iterator

from ..compat import is_text_encoding
from ..errors import ChargenError

READ_BLOCK_BYTES = 8 << 20
DOCUMENT_SEPARATOR = "\n\n"  # between files, so documents do not run into each other


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


def file_size(path: Path) -> int:
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
    if not is_text_encoding(codec):  # base64, zlib, rot13: not bytes -> text
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
