"""A built-in model for tests: the tiny run exported as the package's models are, in a temp dir.

Import the fixture in a test module: ``from tests.builtin_models import builtin_tiny  # noqa: F401``.
"""

from __future__ import annotations

import pytest

from chargen.checkpoint import export_checkpoint
from chargen.pretrained import DIR_VARIABLE, write_catalog_entry

NAME = "tinyword"


@pytest.fixture(scope="session")
def builtin_dir(tiny_run, tmp_path_factory):
    """A models directory holding ``tinyword``: the tiny run's best checkpoint in bf16."""
    directory = tmp_path_factory.mktemp("pretrained")
    checkpoint = export_checkpoint(tiny_run, directory / f"{NAME}.safetensors")
    write_catalog_entry(directory, NAME, corpus="word soup (tests/conftest.py make_text)",
                        train_command="chargen.train(tiny.txt, **TINY_OPTIONS)",
                        val_loss=checkpoint.summary["best_val_loss"], description="a 1x32 LSTM for tests")
    return directory


@pytest.fixture
def builtin_tiny(builtin_dir, monkeypatch, tmp_path):
    """``tinyword`` is a built-in model for this test, which runs in an empty directory."""
    monkeypatch.setenv(DIR_VARIABLE, str(builtin_dir))
    monkeypatch.chdir(tmp_path)
    return NAME
