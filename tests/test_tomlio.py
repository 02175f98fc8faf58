"""The small TOML writer: what it writes, tomllib reads back the same."""

import math
import tomllib

import pytest

from chargen.errors import ChargenError
from chargen.tomlio import dumps_flat, read_toml


def test_round_trip_of_awkward_values():
    table = {"s": 'quote " back \\ nl \n tab \t del \x7f bell \x07 emoji 😀 é', "i": -3, "big": 1 << 62,
             "f": 0.1, "e": 1e-300, "inf": float("inf"), "t": True, "no": False, "l": ["a", "\n"], "n": None}
    back = tomllib.loads(dumps_flat(table, header="two\nlines"))
    assert back == {k: v for k, v in table.items() if k != "n"}
    assert math.isnan(tomllib.loads(dumps_flat({"x": float("nan")}))["x"])


def test_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("x = = 1\n")
    with pytest.raises(ChargenError, match="bad.toml: not a valid TOML config"):
        read_toml(bad, "config")
    with pytest.raises(ChargenError, match="missing.toml: no such config"):
        read_toml(tmp_path / "missing.toml", "config")
