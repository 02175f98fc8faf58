"""generation.toml: defaults stored with a run, which chargen.load starts from; explicit settings win."""

import shutil
from pathlib import Path

import pytest

import chargen
from chargen.errors import ChargenError
from chargen.generation.defaults import DEFAULTS_NAME, read_defaults, save_defaults
from tests.builtin_models import builtin_dir, builtin_tiny  # noqa: F401


@pytest.fixture
def run(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def test_saved_defaults_are_where_load_starts(run):
    assert read_defaults(run) == {}
    save_defaults(run, {"temp": 0.0, "stop": ("e", "o"), "seed": 5})  # a seed is not a model's default
    save_defaults(run / "best.safetensors", {"length": 40})  # merged over what is stored
    assert read_defaults(run) == {"temp": 0.0, "stop": ("e", "o"), "length": 40}
    model = chargen.load(run)
    assert (model.defaults.temp, model.defaults.length, model.defaults.stops) == (0.0, 40, ("e", "o"))
    text = model.generate("the ")
    assert text == chargen.load(run).generate("the ", temp=0, length=40, stop=["e", "o"])
    assert len(model.generate("the ", stop=None, length=60)) == 60  # explicit settings win


@pytest.mark.parametrize("content,message", [
    ("tmp = 1\n", "unknown setting 'tmp'"),
    ("temp = -1\n", "--temp -1: must be a number >= 0"),
    ("temp = \n", "not a valid TOML"),
])
def test_a_bad_file_is_one_error_naming_it(run, content, message):
    (run / DEFAULTS_NAME).write_text(content)
    with pytest.raises(ChargenError, match=message) as info:
        chargen.load(run)
    assert DEFAULTS_NAME in str(info.value)


def test_built_in_models_keep_no_defaults(builtin_tiny, builtin_dir, cli):
    code, out, err = cli("sample", builtin_tiny, "--temp", "0.5", "--save-defaults")
    assert code == 2 and "built-in model" in err and err.count("\n") == 1
    assert not (builtin_dir / DEFAULTS_NAME).exists() and not list(Path.cwd().iterdir())
    assert read_defaults(builtin_dir / f"{builtin_tiny}.safetensors") == {}
