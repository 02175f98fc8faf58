"""``chargen train --config run.toml`` and ``chargen info RUN --toml``: a run's options as a file,
so a run can be repeated or varied. Keys are ``TrainConfig`` field names (dashes or underscores),
plus ``corpus``; text values are read as the command line reads them ("auto", "5m")."""

from __future__ import annotations

import argparse
import difflib
from dataclasses import MISSING, fields
from pathlib import Path

from ..errors import ChargenError
from ..tomlio import dumps_flat, read_toml
from ..training.config import TrainConfig
from .options import train_field_parser

FIELDS = {f.name: f for f in fields(TrainConfig)}
CORPUS_KEY = "corpus"
# Which TOML values each kind of field takes besides text (bool is an int in Python: refused apart).
NUMBER_KINDS = {"int": (int,), "float": (int, float), "duration": (int, float), "auto-int": (int,),
                "auto-float": (int, float), "auto-duration": (int, float)}


def config_value(path, key: str, value):
    """One value of the file, as the ``TrainConfig`` field ``key`` holds it."""
    f, where = FIELDS[key], f"{path}: {key}"
    kind = f.metadata["kind"]
    if kind == "flag":
        if not isinstance(value, bool):
            raise ChargenError(f"{where} = {value!r}: must be true or false")
        return value
    if isinstance(value, str):
        try:
            return train_field_parser(f)(value)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ChargenError(f"{where} = {value!r}: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, NUMBER_KINDS.get(kind, ())):
        raise ChargenError(f"{where} = {value!r}: expected {'text' if kind == 'str' else 'a number'}")
    return float(value) if kind in ("float", "duration") else value


def read_train_config(path: str | Path) -> tuple[dict, list[str] | None]:
    """The ``TrainConfig`` fields a config file sets, and its corpus (None when it has none).

    An unknown key is one error naming the key and the closest valid one."""
    table = read_toml(path, "config file")
    options, corpus = {}, None
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if key == CORPUS_KEY:
            corpus = [value] if isinstance(value, str) else value
            if not (isinstance(corpus, list) and corpus and all(isinstance(c, str) for c in corpus)):
                raise ChargenError(f"{path}: corpus: must be a path or a list of paths")
            continue
        if isinstance(value, dict):
            raise ChargenError(f"{path}: [{raw_key}]: tables are not options; write the keys at the top level")
        if key not in FIELDS:
            close = difflib.get_close_matches(key, [*FIELDS, CORPUS_KEY], n=1)
            hint = f"; did you mean {close[0].replace('_', '-')}?" if close else ""
            raise ChargenError(f"{path}: unknown option {raw_key!r}{hint}")
        options[key] = config_value(path, key, value)
    return options, corpus


def merge_config(args: argparse.Namespace, options: dict) -> dict:
    """The ``TrainConfig`` fields: the command line's defaults, then the config file, then the
    options actually given on the command line."""
    if not args.config:
        return options
    from_file, corpus = read_train_config(args.config)
    if corpus and not args.corpus:
        args.corpus = corpus
    given = getattr(args, "given", set())
    return {**options, **from_file, **{k: v for k, v in options.items() if k in given}}


def config_toml(train_config: dict, corpus: list[str] | None = None, source: str = "") -> str:
    """A run's full configuration as a config file that ``--config`` reads back to the same
    ``TrainConfig``. Fields missing from an older run's record get today's defaults."""
    values = {}
    for name, f in FIELDS.items():
        default = f.default if f.default is not MISSING else None
        values[name] = train_config.get(name, default)
    header = f"chargen train config{f' of {source}' if source else ''}: chargen train --config FILE"
    table = {**({CORPUS_KEY: list(corpus)} if corpus else {}), **values}
    return dumps_flat(table, header=header)
