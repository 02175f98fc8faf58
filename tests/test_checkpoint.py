"""Checkpoints: identical logits after a round trip, tokenizers inside, older formats still loading."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chargen.checkpoint import METADATA_KEY, load_checkpoint, read_metadata, resolve_checkpoint, save_checkpoint
from chargen.errors import ChargenError
from chargen.model import CELLS, CharLM, ModelConfig
from chargen.text.tokenizers import CharTokenizer, SentencePieceTokenizer
from tests.conftest import make_text


def as_written_before(path, keys=("skip_connections",)) -> None:
    """Rewrite a checkpoint without these model or training keys, as earlier versions wrote them."""
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = json.loads(f.metadata()[METADATA_KEY]), {k: f.get_tensor(k) for k in f.keys()}
    for key in keys:
        in_model = meta["model"].pop(key, None) is not None
        assert meta["summary"].get("train_config", {}).pop(key, None) is not None or in_model, key
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})


@pytest.mark.parametrize("cell", CELLS)
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, cell):
    torch.manual_seed(1)
    tokenizer = CharTokenizer.train(["hello world"])
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, cell=cell, layers=2, hidden=12)).eval()
    save_checkpoint(tmp_path / "m.safetensors", model, tokenizer, {"step": 3})
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    tokens = torch.randint(tokenizer.vocab_size, (2, 25))
    torch.testing.assert_close(loaded.model(tokens)[0], model(tokens)[0], rtol=0, atol=0)
    assert loaded.summary == {"step": 3} and loaded.config == model.config
    assert loaded.tokenizer.chars == tokenizer.chars
    assert not loaded.model.training  # ready to generate
    assert list(tmp_path.iterdir()) == [tmp_path / "m.safetensors"]  # no temp files left behind


def test_training_state_travels_only_when_asked_for(tmp_path):
    tokenizer = CharTokenizer.train(["hello world"])
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden=8))
    extra = {"optim.0.step": torch.tensor(3.0), "rnn_state.h": torch.ones(1, 2, 8)}
    save_checkpoint(tmp_path / "last.safetensors", model, tokenizer, {"step": 3}, extra)
    assert load_checkpoint(tmp_path / "last.safetensors").training_state == {}
    state = load_checkpoint(tmp_path / "last.safetensors", training_state=True).training_state
    assert state.keys() == extra.keys() and all(torch.equal(state[k], extra[k]) for k in extra)


def test_a_run_directory_means_its_best_checkpoint_else_its_last(tmp_path):
    tokenizer = CharTokenizer.train(["ab"])
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden=8))
    save_checkpoint(tmp_path / "last.safetensors", model, tokenizer, {"step": 5})
    assert resolve_checkpoint(tmp_path) == tmp_path / "last.safetensors"
    save_checkpoint(tmp_path / "best.safetensors", model, tokenizer, {"step": 4})
    assert resolve_checkpoint(tmp_path) == tmp_path / "best.safetensors"
    assert read_metadata(tmp_path)["summary"] == {"step": 4}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ChargenError, match="empty: no checkpoint in this directory"):
        resolve_checkpoint(tmp_path / "empty")


def test_sentencepiece_tokenizer_travels_inside_the_checkpoint(tmp_path):
    tokenizer = SentencePieceTokenizer.train([make_text(300)], vocab_size=320)
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, hidden=8, layers=1))
    save_checkpoint(tmp_path / "sp.safetensors", model, tokenizer, {"step": 0})
    loaded = load_checkpoint(tmp_path / "sp.safetensors")
    text = "the lazy fox"
    assert loaded.tokenizer.decode(loaded.tokenizer.encode(text)) == text
    assert list(loaded.tokenizer.encode(text)) == list(tokenizer.encode(text))


def test_a_checkpoint_from_before_skip_connections_loads_without_them(tmp_path):
    tokenizer = CharTokenizer.train(["hello world"])
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, hidden=12, skip_connections=False))
    save_checkpoint(tmp_path / "m.safetensors", model, tokenizer, {"step": 3})
    as_written_before(tmp_path / "m.safetensors")
    loaded = load_checkpoint(tmp_path / "m.safetensors").model
    assert loaded.skip_head is None and not loaded.config.skip_connections
    tokens = torch.randint(tokenizer.vocab_size, (2, 9))
    torch.testing.assert_close(loaded(tokens)[0], model.eval()(tokens)[0], rtol=0, atol=0)


def test_a_checkpoint_from_before_weight_drop_loads_as_trained_without_it(tmp_path):
    tokenizer = CharTokenizer.train(["hello world"])
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, hidden=12))
    save_checkpoint(tmp_path / "m.safetensors", model, tokenizer, {"step": 3})
    as_written_before(tmp_path / "m.safetensors", ("weight_drop", "locked_dropout", "embed_dropout"))
    config = load_checkpoint(tmp_path / "m.safetensors").model.config
    assert (config.weight_drop, config.locked_dropout, config.embed_dropout) == (0.0, False, 0.0)


def test_regularization_settings_travel_with_the_model(tmp_path):
    tokenizer = CharTokenizer.train(["hello world"])
    settings = {"dropout": 0.2, "weight_drop": 0.25, "locked_dropout": True, "embed_dropout": 0.1}
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, hidden=12, **settings))
    save_checkpoint(tmp_path / "m.safetensors", model, tokenizer, {"step": 3})
    loaded = load_checkpoint(tmp_path / "m.safetensors").model
    assert {k: getattr(loaded.config, k) for k in settings} == settings
    assert loaded.rnn.weight_drop == 0.25 and loaded.rnn.locked and loaded.drop.locked
