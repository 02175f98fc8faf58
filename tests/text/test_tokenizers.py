"""Tokenizers: round trips in many scripts, streaming decoders, serialization, unknown characters."""

import numpy as np
import pytest

from chargen.errors import ChargenError
from chargen.limits import MAX_VOCAB_SIZE
from chargen.text.tokenizers import (ByteTokenizer, CharTokenizer, SentencePieceTokenizer,
                                     tokenizer_from_dict, train_tokenizer)

SCRIPTS = {
    "arabic": "مرحبا بالعالم، كيف حالك؟",
    "urdu": "اردو ایک خوبصورت زبان ہے۔",
    "persian": "زبان فارسی بسیار زیباست.",
    "kannada": "ಕನ್ನಡ ಒಂದು ಸುಂದರ ಭಾಷೆ",
    "gurmukhi": "ਪੰਜਾਬੀ ਬਹੁਤ ਸੋਹਣੀ ਭਾਸ਼ਾ ਹੈ",
    "devanagari": "हिन्दी एक सुंदर भाषा है।",
    "cjk": "漢字かな交じり文と한국어 텍스트",
    "emoji": "family 👨‍👩‍👧‍👦, flags 🇮🇳🇯🇵, skin 👋🏽",
    "combining": "e\u0301 a\u0308 n\u0303 (decomposed) vs é ä ñ",
    "crlf": "line one\r\nline two\r\n\r\nlast\rcr",
    "tabs": "\tindent\t\ttabs  double  spaces ",
}
ALL_TEXT = "\n".join(SCRIPTS.values())


@pytest.fixture(scope="module")
def sentencepiece() -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train([ALL_TEXT * 20], vocab_size=400)


@pytest.mark.parametrize("name", SCRIPTS)
def test_char_round_trip(name):
    text = SCRIPTS[name]
    tok = CharTokenizer.train([text])
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) == len(text)


@pytest.mark.parametrize("name", SCRIPTS)
def test_byte_round_trip(name):
    tok = ByteTokenizer()
    ids = tok.encode(SCRIPTS[name])
    assert ids.max() < 256
    assert tok.decode(ids) == SCRIPTS[name]
    assert tok.count_chars(ids) == len(SCRIPTS[name])


@pytest.mark.parametrize("name", SCRIPTS)
def test_sentencepiece_round_trip(sentencepiece, name):
    text = SCRIPTS[name]
    assert sentencepiece.decode(sentencepiece.encode(text)) == text


def test_sentencepiece_encodes_text_it_never_saw(sentencepiece):
    unseen = "Ωμέγα ∑ 🦜 ქართული"
    assert sentencepiece.decode(sentencepiece.encode(unseen)) == unseen


@pytest.mark.parametrize("make", [lambda: CharTokenizer.train([ALL_TEXT]), ByteTokenizer,
                                  lambda: SentencePieceTokenizer.train([ALL_TEXT * 20], vocab_size=400)])
def test_incremental_decoder_matches_decode(make):
    tok = make()
    ids = tok.encode(ALL_TEXT)
    decoder = tok.decoder()
    assert "".join(decoder.feed(int(i)) for i in ids) == tok.decode(ids) == ALL_TEXT


@pytest.mark.parametrize("make", [lambda: CharTokenizer.train([ALL_TEXT], "NFC"), ByteTokenizer,
                                  lambda: SentencePieceTokenizer.train([ALL_TEXT * 20], vocab_size=400)])
def test_serialized_tokenizer_encodes_the_same(make):
    tok = make()
    again = tokenizer_from_dict(tok.to_dict())
    assert again.vocab_size == tok.vocab_size
    np.testing.assert_array_equal(again.encode(ALL_TEXT), tok.encode(ALL_TEXT))


def test_char_unknown_characters_are_named():
    tok = CharTokenizer.train(["abc"])
    with pytest.raises(ChargenError, match=r"'z' \(U\+007A\)"):
        tok.encode("abz")
    assert tok.unknown_chars("a😀z") == {"😀", "z"}


def test_nfc_normalization_folds_decomposed_accents():
    tok = CharTokenizer.train(["caf\u00e9"], normalize="NFC")
    assert tok.decode(tok.encode("cafe\u0301")) == "caf\u00e9"
    plain = CharTokenizer.train(["cafe\u0301"])
    assert plain.vocab_size == 5  # c a f e + combining acute, kept apart without normalization


def test_byte_tokenizer_never_has_unknowns():
    tok = ByteTokenizer()
    assert tok.vocab_size == 256
    assert tok.unknown_chars("\x00\uffff😀") == set()


def test_char_vocabulary_is_sorted_and_deterministic():
    assert CharTokenizer.train(["cab", "ba"]).chars == ["a", "b", "c"]


def test_sentencepiece_vocab_too_small_is_a_clear_error():
    with pytest.raises(ChargenError, match="--vocab-size"):
        train_tokenizer("sentencepiece", [ALL_TEXT], vocab_size=10)


MIXED = "Hello, мир! नमस्ते दुनिया — مرحبا بالعالم 你好世界 안녕 😀🚀 naïve café\r\n" * 50


def test_streaming_vocabulary_is_the_set_of_characters_in_code_point_order():
    chunks = [MIXED[i:i + 37] for i in range(0, len(MIXED), 37)]
    tokenizer = CharTokenizer.train(chunks)
    assert tokenizer.chars == sorted(set(MIXED))
    ids = tokenizer.encode(MIXED)
    assert tokenizer.decode(ids) == MIXED
    assert ids.max() == len(tokenizer.chars) - 1 == ids[MIXED.index("🚀")]  # the highest code point


def test_extended_vocabulary_keeps_every_old_id():
    tok = CharTokenizer.train(["cab"])
    grown = tok.extended("zab\u00e9")
    assert grown.chars == ["a", "b", "c", "z", "\u00e9"]  # new characters last, sorted
    np.testing.assert_array_equal(grown.encode("abc"), tok.encode("abc"))


def test_decoding_an_id_outside_the_vocabulary_is_a_clear_error():
    for tok in (CharTokenizer.train(["abc"]), ByteTokenizer()):
        with pytest.raises(ChargenError, match=f"token id {tok.vocab_size} is out of range for a vocabulary of "
                                               f"{tok.vocab_size}"):
            tok.decode([0, tok.vocab_size])


def test_a_char_vocabulary_larger_than_unicode_is_refused():
    with pytest.raises(ChargenError, match="'chars' must be a non-empty string"):
        tokenizer_from_dict({"kind": "char", "chars": "a" * (MAX_VOCAB_SIZE + 1)})
