"""How the command line spells values: argument types, and the option groups several commands share.

Defaults and limits come from the layers below (``TrainConfig``'s fields, ``SamplingSettings``,
``chargen.limits``), so ``--help`` shows exactly what validation enforces.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, fields

from ..generation.settings import SamplingSettings
from ..limits import MAX_TEMPS
from ..text.unknown import UNKNOWN_HELP, UNKNOWN_POLICIES
from ..training.config import TrainConfig, flag_name
from ..training.saving import SAVE_EVERY_WORDS

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


def duration_or(words: tuple[str, ...]):
    """An argparse type for a duration that may also be one of ``words`` (such as auto or off)."""

    def parse(text: str):
        if text.strip().lower() in words:
            return text.strip().lower()
        try:
            return parse_duration(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: use {', '.join(words)} or a duration > 0 "
                                             "such as 90s, 5m, 2h or 1h30m") from None
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
                 "weight_decay": "0.3", "ar": "2", "tar": "1"}


class StoreGiven(argparse.Action):
    """Store the value and note the option as given on the command line (``args.given``): only
    those override a ``--config`` file; argparse's defaults must not."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


class FlagGiven(argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag``, noted as given like ``StoreGiven``."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def train_field_parser(f):
    """How the command line (and a ``--config`` file's text values) spell a ``TrainConfig`` field."""
    kind = f.metadata["kind"]
    if kind == "auto-duration":
        return duration_or(SAVE_EVERY_WORDS)
    if kind.startswith("auto-"):
        return auto_or(int if kind == "auto-int" else float, f.name.replace("_", " "), AUTO_EXAMPLES[f.name])
    return PLAIN_TYPES[kind]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``chargen train``'s options: one per ``TrainConfig`` field, help and default from the field."""
    parser.add_argument("corpus", nargs="*", help="text files or directories of text files")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory where it stopped")
    parser.add_argument("--config", metavar="FILE",
                        help="read options from a TOML file (keys: the options below, e.g. hidden = 512, "
                        "max-time = \"5m\"); options on the command line win. `chargen info RUN --toml` writes one")
    for f in fields(TrainConfig):
        help_text, kind = f.metadata["help"], f.metadata["kind"]
        default = f.default if f.default is not MISSING else None
        if kind == "flag":
            parser.add_argument(flag_name(f.name), action=FlagGiven, default=default,
                                help=f"{help_text} (default: {'on' if default else 'off'})")
            continue
        parser.add_argument(flag_name(f.name), type=train_field_parser(f), default=default, metavar=f.name.upper(),
                            action=StoreGiven, help=f"{help_text} (default: {'none' if default is None else default})")


def train_options(args: argparse.Namespace) -> dict:
    """The ``TrainConfig`` fields from parsed ``chargen train`` arguments."""
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)}


def parse_temps(text: str) -> list[float]:
    """``--temp``: one temperature, or several separated by commas (one sample each)."""
    try:
        temps = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --temp {text!r}: use a number such as 0.8, or several "
                                         "such as 0.5,0.8,1.1") from None
    if len(temps) > MAX_TEMPS:
        raise argparse.ArgumentTypeError(f"invalid --temp {text!r}: at most {MAX_TEMPS} temperatures")
    return temps


def add_sampling_arguments(parser: argparse.ArgumentParser, stop_default: str | None = None,
                           stop_help: str = r"stop when this string is generated; repeat for several (the "
                                            r"first to appear wins); \n and \t are understood (default: none)",
                           unknown_default: str = "error") -> None:
    """The options that pick each next token, shared by ``sample`` and ``repl``.

    Their parsed default is None, so that only options given on the command line override the
    run's stored defaults (``generation.toml``); the help shows the built-in defaults."""
    d = SamplingSettings()
    add = parser.add_argument
    add("--temp", type=parse_temps, metavar="T[,T...]",
        help=f"temperature; 0 always takes the most likely token; several, comma-separated, give one "
             f"sample each (default: {d.temp})")
    add("--top-k", type=int, help=f"sample only among the k most likely tokens (default: {d.top_k} = off)")
    add("--top-p", type=float, help=f"sample only from the smallest set holding this probability (default: {d.top_p} = off)")
    add("--length", type=int, help=f"tokens to generate (default: {d.length})")
    add("--seed", type=int, help="random seed: same seed, same text (default: random)")
    add("--stop", action="append", metavar="TEXT", help=stop_help)
    parser.set_defaults(stop_default=stop_default)
    add("--repetition-penalty", type=float, metavar="R",
        help=f"make tokens already in the window less likely: positive logits are divided by R, negative ones "
             f"multiplied (CTRL); 1.1 to 1.3 breaks loops (default: {d.repetition_penalty:g} = off)")
    add("--no-repeat-ngram", type=int, metavar="N",
        help=f"never emit an N-token sequence already in the window (default: {d.no_repeat_ngram} = off)")
    add("--repeat-window", type=int, metavar="N",
        help="tokens the two options above look back over (default: 0 = the whole reply or sample)")
    add("--min-length", type=int, metavar="N",
        help=f"stop strings are ignored until N tokens are generated (default: {d.min_length})")
    add("--max-time", type=parse_duration, metavar="DURATION",
        help="end a sample or reply after this long, e.g. 5s or 2m (default: no limit)")
    add("--unknown", choices=UNKNOWN_POLICIES, default=unknown_default, help=f"{UNKNOWN_HELP} (default: {unknown_default})")


# How each sampling option's parsed value becomes a SamplingSettings field (None: not given).
SETTING_OPTIONS = ("temp", "top_k", "top_p", "length", "seed", "stop", "repetition_penalty", "no_repeat_ngram",
                   "repeat_window", "min_length", "max_time")


def given_settings(args: argparse.Namespace, empty_stop_is_none: bool = False) -> dict:
    """The SamplingSettings fields given on the command line (``--temp`` takes its first value).

    An empty ``--stop`` is refused, or with ``empty_stop_is_none`` (a chat, whose default stop it
    turns off) means no stop string."""
    given = {name: getattr(args, name) for name in SETTING_OPTIONS if getattr(args, name, None) is not None}
    if "temp" in given:
        given["temp"] = given["temp"][0]
    if "stop" in given:
        stops = tuple(unescape(s) for s in given["stop"])
        if empty_stop_is_none:
            stops = tuple(s for s in stops if s)
        given["stop"] = stops[0] if len(stops) == 1 else (stops or None)
    return given


def sampling_settings(args: argparse.Namespace, empty_stop_is_none: bool = False,
                      base: SamplingSettings | None = None) -> SamplingSettings:
    """Validated settings: ``base`` (built-in defaults, the run's stored ones, the command's own
    stop) with the options given on the command line on top."""
    if base is None:
        base = SamplingSettings(stop=getattr(args, "stop_default", None))
    return SamplingSettings.from_kwargs(base, **given_settings(args, empty_stop_is_none)).validate()


def temperatures(args: argparse.Namespace, settings: SamplingSettings) -> list[float]:
    """The temperatures to sample at: those of ``--temp``, or the settings' one."""
    return list(args.temp) if args.temp else [settings.temp]


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument("--device", default=default,
                        help=f"cpu, cuda, mps or auto (auto picks the best present; default: {default})")
