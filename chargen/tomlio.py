"""TOML in and out for flat tables of settings (a run's config, a model's generation defaults).

Reading is the standard library's ``tomllib``; writing needs only flat scalars and lists of
strings, which a few lines do without a new dependency.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

from .errors import ChargenError


def read_toml(path: str | Path, what: str) -> dict:
    """The table in the TOML file ``path``; any problem is one error naming the file (``what`` it is)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ChargenError(f"{path}: no such {what}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ChargenError(f"{path}: not a valid TOML {what}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ChargenError(f"{path}: cannot read the {what}: {getattr(exc, 'strerror', None) or exc}") from None


def toml_value(value) -> str:
    """One value as TOML: bool, int, float, string or a list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        # JSON's escapes are TOML's (DEL is the one control character JSON leaves raw).
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dumps_flat(table: dict, header: str = "") -> str:
    """A flat table as TOML text; None values (TOML has no null) become comments."""
    lines = [f"# {line}" for line in header.splitlines()]
    for key, value in table.items():
        lines.append(f"# {key} = (none)" if value is None else f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
