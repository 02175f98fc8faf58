"""What every command shares: the same --device default, help text on every positional argument."""

import argparse

from chargen.ui.cli import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_device_defaults_to_auto_for_every_command():
    defaults = {name: a.default for name, sub in subcommands().items() for a in sub._actions if a.dest == "device"}
    assert {"train", "sample", "eval", "repl"} <= set(defaults)
    assert set(defaults.values()) == {"auto"}


def test_every_positional_argument_has_help():
    missing = [(name, a.dest) for name, sub in subcommands().items() for a in sub._actions
               if not a.option_strings and not a.help]
    assert missing == []
