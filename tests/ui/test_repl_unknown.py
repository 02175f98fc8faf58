"""A piped REPL answers every line it can: unseen characters are skipped (or replaced) with a
warning, a line that cannot be answered is reported, the rest are answered, and the exit is 1."""

import io
import subprocess

import pytest

import chargen
from chargen.generation.settings import SamplingSettings
from chargen.ui.chat import ChatSession
from chargen.ui.repl import run_piped
from tests.conftest import CHARGEN, subprocess_env

SETTINGS = dict(length=15, seed=1, temp=0)


def repl(run, stdin: str, *options) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHARGEN), "repl", str(run), "--length", "15", "--seed", "1", "--temp", "0",
                           "--stop", "", *options], input=stdin, capture_output=True, text=True,
                          env=subprocess_env())


def expected_replies(run, lines):
    session = ChatSession(chargen.load(run), SamplingSettings(**SETTINGS))
    return ["".join(session.reply(line)) for line in lines]


def test_line_2_of_3_cannot_be_answered_lines_1_and_3_are_and_the_exit_is_1(tiny_run):
    result = repl(tiny_run, "the dog\nthe Zoo\na cat\n", "--unknown", "error")
    assert result.returncode == 1
    assert result.stdout.splitlines() == expected_replies(tiny_run, ["the dog", "a cat"])
    assert result.stderr.count("\n") == 1 and "'Z'" in result.stderr and "never saw" in result.stderr


def test_by_default_unseen_characters_are_skipped_with_a_warning(tiny_run):
    result = repl(tiny_run, "the dog\nthe Zoo\na cat\n")
    assert result.returncode == 0
    assert result.stdout.splitlines() == expected_replies(tiny_run, ["the dog", "the oo", "a cat"])
    assert result.stderr.count("\n") == 1 and "warning" in result.stderr and "'Z'" in result.stderr


def test_a_line_of_nothing_but_unseen_characters_is_reported_and_the_next_answered(tiny_run):
    session = ChatSession(chargen.load(tiny_run), SamplingSettings(**SETTINGS))
    out, err = io.StringIO(), io.StringIO()
    assert run_piped(session, ["ZZZ\n", "the\n"], out, err) == 1
    assert out.getvalue().count("\n") == 1 and "only characters the model never saw" in err.getvalue()


def test_replace_maps_to_the_closest_known_character(tiny_run):
    session = ChatSession(chargen.load(tiny_run), SamplingSettings(**SETTINGS), unknown="replace")
    out, err = io.StringIO(), io.StringIO()
    assert run_piped(session, ["thé dog\n"], out, err) == 0
    assert out.getvalue().splitlines() == expected_replies(tiny_run, ["the dog"])
    assert "replaced" in err.getvalue() and "'é'" in err.getvalue()


@pytest.mark.parametrize("option", [["--unknown", "nope"], ["--repetition-penalty", "-1"], ["--min-length", "x"],
                                    ["--temp", "0.5,0.7"]])
def test_bad_repl_options_are_one_line_and_exit_2(tiny_run, option):
    result = repl(tiny_run, "the\n", *option)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stdout == ""


def test_the_terminal_chat_skips_unseen_characters_with_a_note(tiny_run, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    from tests.ui.test_repl_terminal import CHARGEN as COMMAND, PROMPT, plain, quiet_env

    child = pexpect.spawn(COMMAND[0], COMMAND[1:] + ["repl", str(tiny_run), "--length", "15", "--stop", "",
                                                     "--seed", "1", "--temp", "0"],
                          env=quiet_env(tmp_path), encoding="utf-8", dimensions=(40, 200), timeout=30)
    try:
        child.expect_exact(PROMPT)
        child.send("the Zoo\r")
        child.expect_exact("note: dropped characters the model never saw: 'Z' (U+005A)")
        child.expect_exact(PROMPT)
        reply = plain(child.before).strip()
        assert reply == expected_replies(tiny_run, ["the oo"])[0].strip()
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
