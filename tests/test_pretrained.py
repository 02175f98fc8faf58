"""Built-in models: exported compact, found by name everywhere a checkpoint goes, the user's files first."""

from __future__ import annotations

import io
import json
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import chargen
from chargen.checkpoint import export_checkpoint, load_checkpoint, resolve_checkpoint
from chargen.errors import ChargenError
from chargen.pretrained import builtin_models, read_catalog, resolve_name, write_catalog_entry
from tests.builtin_models import builtin_dir, builtin_tiny  # noqa: F401
from tests.conftest import ROOT, TINY_OPTIONS, make_text


def test_export_writes_bf16_weights_that_load_into_the_fp32_model(tiny_run, tmp_path):
    target = tmp_path / "small.safetensors"
    source = export_checkpoint(tiny_run, target)
    with safe_open(str(target), framework="pt") as f:
        names = list(f.keys())
        assert names and all(name.startswith("model.") for name in names)  # no training state
        assert {f.get_tensor(name).dtype for name in names} == {torch.bfloat16}
    loaded = load_checkpoint(target)
    assert loaded.model.embed.weight.dtype == torch.float32
    for name, weight in loaded.model.state_dict().items():
        expected = source.model.state_dict()[name].to(torch.bfloat16).float()
        assert torch.equal(weight, expected), name
    assert loaded.summary["best_val_loss"] == source.summary["best_val_loss"]
    assert target.stat().st_size < 0.6 * (tiny_run / "best.safetensors").stat().st_size


def test_catalog_entries_are_written_and_listed(tmp_path):
    write_catalog_entry(tmp_path, "b", corpus="c", train_command="t", val_loss=1.25)
    write_catalog_entry(tmp_path, "a", corpus="c2", train_command="t2", val_loss=None)
    assert list(read_catalog(tmp_path)) == ["a", "b"]
    assert read_catalog(tmp_path)["b"]["file"] == "b.safetensors"


def test_a_broken_catalog_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "catalog.json").write_text("{not json")
    monkeypatch.setenv("CHARGEN_PRETRAINED_DIR", str(tmp_path))
    with pytest.raises(ChargenError, match="catalog is unreadable"):
        builtin_models()


def test_load_sample_eval_and_info_take_a_builtin_name(builtin_tiny, builtin_dir, cli, tiny_run):
    model = chargen.load(builtin_tiny)
    assert model.path == builtin_dir / "tinyword.safetensors"
    expected = model.generate("the ", length=40, seed=3)
    code, out, err = cli("sample", builtin_tiny, "--prime", "the ", "--length", "40", "--seed", "3")
    assert code == 0, err
    assert out == "the " + expected + "\n"
    (builtin_dir.parent / "held_out.txt").write_text(make_text(20, seed=5))
    code, out, err = cli("eval", builtin_tiny, builtin_dir.parent / "held_out.txt", "--json")
    assert code == 0 and json.loads(out)["chars"] > 0, err
    code, out, err = cli("info", builtin_tiny, "--json")
    assert code == 0 and json.loads(out)["path"] == str(builtin_dir / "tinyword.safetensors"), err


def test_repl_chats_with_a_builtin_model(builtin_tiny, cli, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("the fox\n"))
    code, out, err = cli("repl", builtin_tiny, "--seed", "1", "--length", "30", "--history", "")
    assert code == 0, err
    assert out.strip()


def test_a_users_directory_of_the_same_name_wins_and_the_listing_says_so(builtin_tiny, tiny_run, cli):
    shutil.copytree(tiny_run, builtin_tiny, ignore=shutil.ignore_patterns(".lock", "*.jsonl"))
    assert resolve_checkpoint(builtin_tiny).resolve() == (Path(builtin_tiny) / "best.safetensors").resolve()
    assert resolve_name(builtin_tiny).name == builtin_tiny  # the relative path, not the package file
    assert chargen.load(builtin_tiny).path.parent.name == builtin_tiny
    code, out, err = cli("models")
    assert code == 0
    assert f"./{builtin_tiny} here wins" in out


def test_a_users_file_of_the_same_name_wins_even_when_it_is_not_a_checkpoint(builtin_tiny):
    with open(builtin_tiny, "w") as f:
        f.write("my notes")
    with pytest.raises(ChargenError, match="not a chargen checkpoint"):
        chargen.load(builtin_tiny)


def test_models_lists_name_size_corpus_and_validation_loss(builtin_tiny, builtin_dir, cli):
    code, out, err = cli("models")
    assert code == 0, err
    assert "tinyword" in out and "MB" in out and "word soup" in out and "val loss" in out
    assert "wins" not in out
    code, out, err = cli("models", "--json")
    row = json.loads(out.splitlines()[0])
    assert row["name"] == "tinyword" and row["size_bytes"] == (builtin_dir / "tinyword.safetensors").stat().st_size
    assert row["val_loss"] == pytest.approx(load_checkpoint(builtin_dir / "tinyword.safetensors").summary["best_val_loss"])


def test_an_unknown_name_says_which_models_exist(builtin_tiny, cli):
    code, out, err = cli("sample", "nosuchmodel", "--length", "5")
    assert code == 2
    assert "nosuchmodel" in err and "built-in model (tinyword; see chargen models)" in err


def test_fine_tuning_starts_from_a_builtin_model(builtin_tiny, tmp_path):
    corpus = tmp_path / "more.txt"
    corpus.write_text(make_text(100, seed=9))
    options = dict(TINY_OPTIONS, max_steps=4, eval_every=2)
    chargen.train(str(corpus), out=str(tmp_path / "tuned"), init_from=builtin_tiny, **options)
    tuned = load_checkpoint(tmp_path / "tuned")
    assert tuned.config == chargen.load(builtin_tiny).config


def test_the_package_ships_the_models_directory_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["chargen.pretrained"]
    assert "*.safetensors" in patterns and "*.json" in patterns
    for model in builtin_models():  # whatever ships is listed, and the listing is true
        assert model.installed, f"{model.name} is in the catalog but {model.path} is missing"


def test_every_shipped_model_chats_with_no_training(cli, monkeypatch, tmp_path):
    monkeypatch.delenv("CHARGEN_PRETRAINED_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # a fresh place: no file or directory there shadows a name
    shipped = [m for m in builtin_models() if m.installed]
    if not shipped:
        pytest.skip("no built-in model ships in chargen/pretrained/ (scripts/ship_models.py makes them)")
    for model in shipped:
        monkeypatch.setattr(sys, "stdin", io.StringIO("def main():\n"))
        code, out, err = cli("repl", model.name, "--seed", "1", "--length", "80", "--history", "")
        assert code == 0, err
        assert out.strip(), f"{model.name} gave an empty reply"
        loaded = chargen.load(model.name)
        assert loaded.summary.get("best_val_loss") == pytest.approx(model.val_loss)
