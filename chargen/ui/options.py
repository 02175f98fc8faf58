"""How the command line spells values: argument types, and the option groups several commands share.

Defaults and limits come from the layers below (``TrainConfig``'s fields, ``SamplingSettings``,
``chargen.limits``), so ``--help`` shows exactly what validation enforces.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, fields

from ..generation.settings import SamplingSettings
from ..training.config import TrainConfig, flag_name

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that points at --help."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``2h`` or ``1h30m``."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 90s, 5m, 2h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be more than 0")
    return total


def auto_or(number: type, option: str, example: str):
    """An argparse type for an option that takes ``auto`` or a number (range-checked later, with
    the other options)."""
    kind = "a whole number" if number is int else "a number"

    def parse(text: str):
        if text.strip().lower() == "auto":
            return "auto"
        try:
            return number(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {option} {text!r}: use auto or {kind} such as {example}") from None
    return parse


def unescape(text: str | None) -> str | None:
    r"""Turn the escapes a shell makes hard to type (\n, \t, \r, \\) into the characters."""
    if text is None:
        return None
    return re.sub(r"\\([ntr\\])", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], text)


# How each ``kind`` of TrainConfig field is read from the command line ("flag" fields are on/off).
PLAIN_TYPES = {"int": int, "float": float, "str": str, "duration": parse_duration}
# The example value an auto-able option's error message suggests.
AUTO_EXAMPLES = {"hidden": "512", "seq_len": "64", "eval_every": "400", "dropout": "0.2", "lr": "5e-3",
                 "weight_decay": "0.3"}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``chargen train``'s options: one per ``TrainConfig`` field, help and default from the field."""
    parser.add_argument("corpus", nargs="*", help="text files or directories of text files")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory where it stopped")
    for f in fields(TrainConfig):
        help_text, kind = f.metadata["help"], f.metadata["kind"]
        default = f.default if f.default is not MISSING else None
        if kind == "flag":
            parser.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, default=default,
                                help=f"{help_text} (default: {'on' if default else 'off'})")
            continue
        if kind.startswith("auto-"):
            parse = auto_or(int if kind == "auto-int" else float, f.name.replace("_", " "), AUTO_EXAMPLES[f.name])
        else:
            parse = PLAIN_TYPES[kind]
        parser.add_argument(flag_name(f.name), type=parse, default=default, metavar=f.name.upper(),
                            help=f"{help_text} (default: {'none' if default is None else default})")


def train_options(args: argparse.Namespace) -> dict:
    """The ``TrainConfig`` fields from parsed ``chargen train`` arguments."""
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)}


def add_sampling_arguments(parser: argparse.ArgumentParser, stop_default: str | None = None,
                           stop_help: str = r"stop when this string is generated; \n and \t are understood "
                                            "(default: none)") -> None:
    """The options that pick each next token, shared by ``sample`` and ``repl``."""
    d = SamplingSettings()
    parser.add_argument("--temp", type=float, default=d.temp,
                        help=f"temperature; 0 always takes the most likely token (default: {d.temp})")
    parser.add_argument("--top-k", type=int, default=d.top_k,
                        help=f"sample only among the k most likely tokens (default: {d.top_k} = off)")
    parser.add_argument("--top-p", type=float, default=d.top_p,
                        help=f"sample only from the smallest set holding this probability (default: {d.top_p} = off)")
    parser.add_argument("--length", type=int, default=d.length, help=f"tokens to generate (default: {d.length})")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed: same seed, same text (default: random)")
    parser.add_argument("--stop", default=stop_default, help=stop_help)


def sampling_settings(args: argparse.Namespace, empty_stop_is_none: bool = False) -> SamplingSettings:
    """Validated settings from parsed sampling arguments. An empty ``--stop`` is refused, or with
    ``empty_stop_is_none`` (a chat, whose default stop it turns off) means no stop string."""
    stop = unescape(args.stop)
    return SamplingSettings(temp=args.temp, top_k=args.top_k, top_p=args.top_p, length=args.length, seed=args.seed,
                            stop=(stop or None) if empty_stop_is_none else stop).validate()


def add_device_argument(parser: argparse.ArgumentParser, default: str = "cpu") -> None:
    parser.add_argument("--device", default=default,
                        help=f"cpu, cuda, mps or auto (auto picks the best present; default: {default})")
