"""The long-lag corpus: episodes whose only predictable symbol is the cue recalled after '='."""

import pytest

from chargen.errors import ChargenError
from chargen.text.long_lag import CUES, RECALL_MARK, check_long_lag, long_lag_text, long_lag_tokenizer

TOKENIZER = long_lag_tokenizer()


def test_long_lag_text_is_a_corpus_of_episodes():
    text = long_lag_text(7, 500, seed=3)
    assert text == long_lag_text(7, 500, seed=3)
    assert text != long_lag_text(7, 500, seed=4)
    lines = text.splitlines()
    assert len(text) >= 500 and all(len(line) == 7 + 3 for line in lines)
    assert all(line[0] == line[-1] and line[-2] == RECALL_MARK for line in lines)
    assert set(text) <= set(TOKENIZER.chars)


def test_the_tokenizer_is_the_vocabulary_training_builds():
    text = long_lag_text(5, 5000, symbols=3, distractors=2)
    assert long_lag_tokenizer(3, 2).chars == sorted(set(text))
    assert {line[0] for line in text.splitlines()} == set(CUES[:3])  # every cue is drawn


@pytest.mark.parametrize("lag, symbols, distractors, message", [
    (-1, 4, 8, "--lag -1"), (3, 1, 8, "symbols 1: must be between 2 and 8"),
    (3, 9, 8, "symbols 9"), (3, 4, 0, "distractors 0: must be between 1 and 26"), (3, 4, 27, "distractors 27"),
])
def test_bad_settings_are_refused(lag, symbols, distractors, message):
    with pytest.raises(ChargenError, match=message):
        check_long_lag(lag, symbols, distractors)
