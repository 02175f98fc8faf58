"""Finding and reading the user's text files: directories, encodings, binary files, line endings."""

import os

import pytest

from chargen.errors import ChargenError
from chargen.text import files
from chargen.text.files import DOCUMENT_SEPARATOR, file_size, find_text_files, iter_text


def read(paths, encoding="utf-8") -> str:
    return "".join(iter_text(find_text_files(paths), encoding))


def test_invalid_utf8_names_file_and_byte_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "READ_BLOCK_BYTES", 16)  # the bad byte lands in a later block
    path = tmp_path / "bad.txt"
    path.write_bytes("héllo wörld, ".encode() * 5 + b"\xff tail")
    offset = len("héllo wörld, ".encode() * 5)
    with pytest.raises(ChargenError, match=rf"bad.txt: invalid utf-8 at byte offset {offset}.*--encoding"):
        read([path])


def test_a_character_split_between_read_blocks_is_decoded_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "READ_BLOCK_BYTES", 5)  # cuts 2-, 3- and 4-byte characters apart
    text = "héllo wörld नमस्ते 😀\n" * 20
    (tmp_path / "mixed.txt").write_text(text, encoding="utf-8")
    assert read([tmp_path / "mixed.txt"]) == text


def test_other_encodings_with_encoding_option(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("façade naïve ".encode("latin-1") * 100)
    assert read([path], encoding="latin-1") == "façade naïve " * 100
    utf16 = tmp_path / "utf16.txt"
    utf16.write_text("hello wörld\n" * 10, encoding="utf-16")
    assert read([utf16], encoding="utf-16") == "hello wörld\n" * 10


def test_binary_file_is_rejected(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ChargenError, match=r"image.png: looks like a binary file \(NUL byte at offset 8\)"):
        read([path])


@pytest.mark.parametrize("encoding, message", [("klingon", "unknown text encoding"),
                                               ("base64", "not a text encoding")])
def test_an_encoding_that_cannot_read_text_is_named(tmp_path, encoding, message):
    (tmp_path / "a.txt").write_text("abc")
    with pytest.raises(ChargenError, match=f"--encoding '{encoding}': {message}"):
        read([tmp_path / "a.txt"], encoding=encoding)


def test_directory_of_files_joined_with_separator(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("first")
    (tmp_path / "docs" / "sub" / "b.md").write_text("second")
    (tmp_path / "docs" / "blob.bin").write_bytes(b"\x00\x01\x02")  # skipped: not text
    (tmp_path / "docs" / ".hidden").write_text("secret")  # skipped: hidden
    found = find_text_files([tmp_path / "docs"])
    assert found == [tmp_path / "docs" / "a.txt", tmp_path / "docs" / "sub" / "b.md"]
    assert "".join(iter_text(found)) == "first" + DOCUMENT_SEPARATOR + "second"


def test_directory_without_text_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ChargenError, match="empty: directory has no text files"):
        find_text_files([tmp_path / "empty"])


def test_missing_paths_and_no_paths_are_clear_errors(tmp_path):
    with pytest.raises(ChargenError, match="no corpus given"):
        find_text_files([])
    with pytest.raises(ChargenError, match="nope.txt: no such file or directory"):
        find_text_files([tmp_path / "nope.txt"])
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ChargenError, match="fifo: not a regular file or directory"):
        find_text_files([tmp_path / "fifo"])


def test_crlf_is_kept(tmp_path):
    path = tmp_path / "dos.txt"
    path.write_bytes(b"one\r\ntwo\r\n")
    assert read([path]) == "one\r\ntwo\r\n"


def test_file_size_of_an_unreadable_path_lets_the_reader_report_it(tmp_path):
    (tmp_path / "a.txt").write_text("12345")
    assert file_size(tmp_path / "a.txt") == 5
    assert file_size(tmp_path / "gone.txt") == 1  # not "empty": reading it will say what is wrong
