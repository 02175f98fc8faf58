"""Built-in models: small checkpoints shipped inside the package, usable by name.

``chargen repl python`` or ``chargen.load("python")`` find ``python.safetensors`` here. Each model
has an entry in ``catalog.json`` beside it (corpus, training command, validation loss); the files
are written by ``scripts/ship_models.py``. A file or directory of the same name where the user
runs chargen always wins over a built-in model, so a name never hides the user's own work.

``CHARGEN_PRETRAINED_DIR`` points the lookup at another directory laid out the same way (the
tests use it for a tiny model of their own).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ChargenError
from ..fileio import atomic_write_bytes

CATALOG_NAME = "catalog.json"
DIR_VARIABLE = "CHARGEN_PRETRAINED_DIR"
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class BuiltinModel:
    """One entry of the catalog, with where its weights are."""

    name: str
    path: Path
    corpus: str
    train_command: str
    val_loss: float | None
    description: str = ""

    @property
    def installed(self) -> bool:
        return self.path.is_file()

    @property
    def size_bytes(self) -> int | None:
        return self.path.stat().st_size if self.installed else None


def models_dir() -> Path:
    """Where built-in models live: this package, or ``$CHARGEN_PRETRAINED_DIR``."""
    override = os.environ.get(DIR_VARIABLE)
    return Path(override) if override else Path(__file__).resolve().parent


def read_catalog(directory: Path | None = None) -> dict[str, dict]:
    """The catalog (name -> entry) of ``directory``; empty where there is none."""
    path = (directory or models_dir()) / CATALOG_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ChargenError(f"{path}: the built-in model catalog is unreadable ({exc}); reinstall chargen") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ChargenError(f"{path}: the built-in model catalog must map names to objects; reinstall chargen")
    return data


def builtin_models() -> list[BuiltinModel]:
    """Every model in the catalog, installed or not, sorted by name."""
    directory = models_dir()
    models = []
    for name, entry in sorted(read_catalog(directory).items()):
        loss = entry.get("val_loss")
        models.append(BuiltinModel(
            name=name, path=directory / entry.get("file", name + SUFFIX),
            corpus=str(entry.get("corpus", "")), train_command=str(entry.get("train_command", "")),
            val_loss=float(loss) if isinstance(loss, (int, float)) else None,
            description=str(entry.get("description", ""))))
    return models


def find_builtin(name: str) -> BuiltinModel | None:
    """The installed built-in model called ``name``, if there is one."""
    for model in builtin_models():
        if model.name == name and model.installed:
            return model
    return None


def shadowed_by(name: str) -> Path | None:
    """The user's file or directory that wins over the built-in model ``name``, if any."""
    path = Path(name)
    return path if path.exists() else None


def resolve_name(path: str | os.PathLike) -> Path:
    """``path`` itself when it exists (the user's file or directory wins), else the built-in model
    of that name, else ``path`` unchanged (the caller says it does not exist)."""
    path = Path(path)
    if path.exists() or len(path.parts) != 1:
        return path
    model = find_builtin(str(path))
    return model.path if model else path


def available_names() -> list[str]:
    """Names of the installed built-in models, for error messages."""
    return [m.name for m in builtin_models() if m.installed]


def write_catalog_entry(directory: Path, name: str, corpus: str, train_command: str,
                        val_loss: float | None, description: str = "") -> None:
    """Add or replace ``name`` in ``directory``'s catalog (its weights are ``name.safetensors``)."""
    catalog = read_catalog(directory)
    catalog[name] = {"file": name + SUFFIX, "corpus": corpus, "train_command": train_command,
                     "val_loss": val_loss, "description": description}
    text = json.dumps(dict(sorted(catalog.items())), indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(Path(directory) / CATALOG_NAME, text.encode("utf-8"), what="model catalog")
