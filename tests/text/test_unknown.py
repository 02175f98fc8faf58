"""Characters a model never saw: refused, dropped or replaced by the closest known ones."""

import pytest

from chargen.errors import ChargenError
from chargen.text.tokenizers import ByteTokenizer, CharTokenizer
from chargen.text.unknown import clean_text, closest_known

TOK = CharTokenizer("abcdefiABCDEF .")


def test_error_names_the_characters():
    with pytest.raises(ChargenError, match=r"^--prime has characters the model never saw: 'z' \(U\+007A\)"):
        clean_text("abz", TOK, "error", "--prime")


def test_skip_drops_them():
    assert clean_text("abzx éc", TOK, "skip") == ("ab c", {"z", "x", "é"})


def test_replace_folds_to_the_closest_known_character_else_drops():
    # NFKC: the ligature and the full-width letter; accents dropped: é; nothing close: z
    assert clean_text("ﬁ Ａé z", TOK, "replace") == ("fi Ae ", {"ﬁ", "Ａ", "é", "z"})
    assert closest_known("ß", TOK) == ""


def test_known_text_and_byte_tokenizers_pass_untouched():
    assert clean_text("abc", TOK, "skip") == ("abc", set())
    assert clean_text("日本 z", ByteTokenizer(), "error") == ("日本 z", set())


def test_a_bad_policy_is_named():
    with pytest.raises(ChargenError, match="--unknown 'drop': choose error, skip, replace"):
        clean_text("a", TOK, "drop")
