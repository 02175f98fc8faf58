"""How the command line spells values, and --help built from the same constants the rules use."""

import argparse
from dataclasses import fields

import pytest

from chargen.training.auto import DROPOUT_FREE_EPOCHS, auto_dropout, auto_lr, auto_weight_decay
from chargen.training.config import TrainConfig, flag_name
from chargen.ui.cli import build_parser
from chargen.ui.options import auto_or, parse_duration, unescape


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("5m", 300), ("2h", 7200), ("1h30m", 5400), ("45", 45),
                                           ("1.5h", 5400), (" 2m 30s ", 150), ("0.5s", 0.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-5m", "nan", "soon", "5 minutes", "m", "1d"])
def test_what_is_not_a_duration_says_how_to_write_one(text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"invalid duration {text!r}"):
        parse_duration(text)


def test_auto_or_a_number():
    parse = auto_or(int, "hidden", "512")
    assert parse("auto") == parse(" AUTO ") == "auto"
    assert parse("384") == 384
    with pytest.raises(argparse.ArgumentTypeError, match="invalid hidden '1e3': use auto or a whole number such as 512"):
        parse("1e3")
    rate = auto_or(float, "dropout", "0.2")
    assert rate("0.25") == 0.25 and rate("auto") == "auto"
    with pytest.raises(argparse.ArgumentTypeError, match="invalid dropout 'lots': use auto or a number such as 0.2"):
        rate("lots")


def test_unescape_turns_the_escapes_a_shell_makes_hard_into_characters():
    assert unescape(None) is None
    assert unescape(r"\n\nYOU:\t") == "\n\nYOU:\t"
    assert unescape(r"a\rb") == "a\rb"
    assert unescape(r"a\\n") == "a\\n"  # an escaped backslash stays one, before the n
    assert unescape(r"\x \q") == r"\x \q"  # others are left as typed


def test_train_has_a_flag_for_every_option_with_its_help(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # as one line, however argparse wrapped it
    for f in fields(TrainConfig):
        assert flag_name(f.name) in text, f.name
        assert " ".join(f.metadata["help"].split()) in text, f.name


def test_train_help_shows_the_values_the_auto_rules_give(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (f"none up to {DROPOUT_FREE_EPOCHS}, {auto_dropout(10):g} at 10, {auto_dropout(20):g} at 20"
            in text) and f"{auto_dropout(20):g}" == "0.3"
    assert f"{auto_weight_decay(20):g} at 20" in text and f"{auto_lr(10):g} from 10" in text


def test_parsed_train_options_keep_auto_and_read_durations():
    args = build_parser().parse_args(["train", "corpus.txt", "--hidden", "auto", "--seq-len", "32",
                                      "--max-time", "1h30m", "--no-tie-weights"])
    assert (args.hidden, args.seq_len, args.max_time, args.tie_weights) == ("auto", 32, 5400, False)
