"""User errors: one message style for text the model cannot read."""

import pytest

from chargen.errors import ChargenError, check_known_chars, describe_chars
from chargen.text.tokenizers import ByteTokenizer, CharTokenizer

TOKENIZER = CharTokenizer("abc \n")


def test_known_text_passes():
    check_known_chars(TOKENIZER, "a cab\n", "--prime")
    check_known_chars(TOKENIZER, "", "--prime")
    check_known_chars(ByteTokenizer(), "anything 😀", "--prime")


def test_unknown_characters_are_named_with_their_code_points_and_the_advice():
    with pytest.raises(ChargenError) as info:
        check_known_chars(TOKENIZER, "abZ zq", "your text", "; nothing was sent")
    assert str(info.value) == ("your text has characters the model never saw: 'Z' (U+005A), 'q' (U+0071), "
                               "'z' (U+007A); nothing was sent")
    with pytest.raises(ChargenError, match=r"^--prime has characters the model never saw: '\\udcff' \(U\+DCFF\)$"):
        check_known_chars(ByteTokenizer(), "a\udcff", "--prime")  # not even bytes can hold a lone surrogate


def test_a_long_list_of_characters_is_cut_at_ten():
    text = "ABCDEFGHIJKLMNOP"
    assert describe_chars(text) == ", ".join(f"'{c}' (U+{ord(c):04X})" for c in text[:10]) + " and 6 more"
    assert describe_chars("ba") == "'a' (U+0061), 'b' (U+0062)"  # sorted, each once
