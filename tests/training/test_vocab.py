"""The vocabulary of a fine-tuned run: the checkpoint's, grown only when asked to."""

import pytest

import chargen
from chargen.checkpoint import load_checkpoint
from chargen.errors import ChargenError
from chargen.text.tokenizers import ByteTokenizer
from chargen.training import TrainConfig
from chargen.training.vocab import initial_tokenizer
from tests.conftest import TINY_OPTIONS, make_text


def test_fine_tuning_rejects_new_characters_unless_extended(tiny_run, tmp_path):
    new = tmp_path / "new.txt"
    new.write_text(make_text(300, seed=5) + "ÆØÅ\n")
    with pytest.raises(ChargenError, match=rf"the corpus has characters {tiny_run} never saw: .*'Æ'.*--extend-vocab"):
        chargen.train(str(new), init_from=str(tiny_run), out=str(tmp_path / "ft"), **TINY_OPTIONS)
    old = load_checkpoint(tiny_run)
    result = chargen.train(str(new), init_from=str(tiny_run), extend_vocab=True, out=str(tmp_path / "ft"),
                           **{**TINY_OPTIONS, "max_steps": 10, "eval_every": 10})
    tuned = load_checkpoint(result.run_dir)
    assert tuned.tokenizer.chars[:old.tokenizer.vocab_size] == old.tokenizer.chars  # old ids keep their meaning
    assert {"Æ", "Ø", "Å"} <= set(tuned.tokenizer.chars)
    assert tuned.config.vocab_size == len(tuned.tokenizer.chars)


def test_a_new_run_trains_its_own_tokenizer_and_a_fine_tuned_one_keeps_its_checkpoints(tiny_run, tiny_corpus):
    assert initial_tokenizer(None, [str(tiny_corpus)], TrainConfig()) is None
    init = load_checkpoint(tiny_run)
    kept = initial_tokenizer(init, [str(tiny_corpus)], TrainConfig(init_from=str(tiny_run)))
    assert kept is init.tokenizer  # nothing missing: the very same vocabulary


def test_a_byte_vocabulary_never_needs_to_grow(tiny_run, tmp_path):
    init = load_checkpoint(tiny_run)
    init.tokenizer = ByteTokenizer()
    (tmp_path / "new.txt").write_text("anything at all: ÆØÅ 😀\n")
    assert initial_tokenizer(init, [str(tmp_path / "new.txt")], TrainConfig()) is init.tokenizer
