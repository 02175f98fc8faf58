"""Generation defaults stored with a model: ``generation.toml`` beside the checkpoint (what Hugging
Face's ``generation_config.json`` is). ``chargen sample --save-defaults`` writes it; ``sample``,
``repl`` and ``chargen.load`` start from it, and options given explicitly win.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ..errors import ChargenError
from ..fileio import atomic_write_bytes
from ..pretrained import models_dir
from ..tomlio import dumps_flat, read_toml
from .settings import SamplingSettings

DEFAULTS_NAME = "generation.toml"
# The seed makes every sample the same text: a property of one command, not of a model.
NOT_STORED = ("seed",)
STORABLE = tuple(f.name for f in fields(SamplingSettings) if f.name not in NOT_STORED)


def defaults_path(checkpoint: str | Path) -> Path | None:
    """Where a checkpoint's generation defaults live: beside it, in its run directory. None for
    the built-in models, which share one directory (and it is the installed package's)."""
    checkpoint = Path(checkpoint)
    directory = checkpoint if checkpoint.is_dir() else checkpoint.parent
    if directory.resolve() == models_dir().resolve():
        return None
    return directory / DEFAULTS_NAME


def read_defaults(checkpoint: str | Path) -> dict:
    """The stored defaults (SamplingSettings field names), or {} when there are none."""
    path = defaults_path(checkpoint)
    if path is None or not path.is_file():
        return {}
    table = read_toml(path, "generation defaults file")
    unknown = sorted(set(table) - set(STORABLE))
    if unknown:
        raise ChargenError(f"{path}: unknown setting {unknown[0]!r}; known: {', '.join(STORABLE)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    try:
        SamplingSettings(**values).validate()
    except ChargenError as exc:
        raise ChargenError(f"{path}: {exc}; fix or delete the file") from None
    return values


def save_defaults(checkpoint: str | Path, values: dict) -> Path:
    """Store ``values`` (field names) as the checkpoint's defaults, over those already stored."""
    values = {k: v for k, v in values.items() if k in STORABLE}
    path = defaults_path(checkpoint)
    if path is None:
        raise ChargenError(f"--save-defaults: {checkpoint} is a built-in model; copy it into a run directory "
                           "of your own to store defaults with it")
    merged = {**read_defaults(checkpoint), **values}
    text = dumps_flat({k: merged[k] for k in STORABLE if k in merged},
                      header="chargen generation defaults: `chargen sample` and `chargen repl` start from these;\n"
                             "options given on the command line win. Written by `chargen sample --save-defaults`.")
    atomic_write_bytes(path, text.encode("utf-8"), what="generation defaults")
    return path
