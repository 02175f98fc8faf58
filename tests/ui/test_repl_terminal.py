"""`chargen repl` end to end, as a user meets it: in a pseudo-terminal (pexpect), and on pipes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import chargen
from chargen.ui.chat import ChatSession
from tests.ui.test_chat import GREEDY, make_random_checkpoint

pexpect = pytest.importorskip("pexpect")

CHARGEN = [sys.executable, "-m", "chargen"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB0-2]|\x1b[=>]")
PROMPT = "> "


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_random_checkpoint(tmp_path_factory.mktemp("repl_tty") / "rand.safetensors")


def greedy_reply(ckpt: Path, text: str, length: int) -> str:
    session = ChatSession(chargen.load(ckpt), replace(GREEDY, length=length))
    return "".join(session.reply(text))


def quiet_env(tmp_path: Path) -> dict:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), TERM="xterm",
               PROMPT_TOOLKIT_NO_CPR="1", PYTHONIOENCODING="utf-8", LANG="C.UTF-8")
    env.pop("NO_COLOR", None)
    return env


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r\n", "\n")


def test_chat_in_a_pseudo_terminal(ckpt, tmp_path):
    env = quiet_env(tmp_path)
    child = pexpect.spawn(CHARGEN[0], CHARGEN[1:] + ["repl", str(ckpt), "--length", "30", "--stop", "",
                                                     "--seed", "3"],
                          env=env, encoding="utf-8", dimensions=(40, 200), timeout=30)
    try:
        child.expect_exact("/help lists commands")
        child.expect_exact(PROMPT)

        # A reply streams back, in the reply colour (cyan), and the prompt returns.
        child.send("hello there\r")
        child.expect(r"\x1b\[[0-9;]*36m")
        child.expect_exact(PROMPT)

        # Greedy decoding is deterministic: after /reset it says what a fresh session says.
        child.send("/temp 0\r")
        child.expect_exact("temp 0")
        child.send("/reset\r")
        child.expect_exact("conversation forgotten")
        child.expect_exact(PROMPT)
        child.send("hello there\r")
        child.expect(r"\x1b\[[0-9;]*36m")
        child.expect_exact(PROMPT)
        expected = greedy_reply(ckpt, "hello there", 30)
        assert expected.strip(" \n")  # a reply worth comparing
        assert expected in plain(child.before)

        # Ctrl-C stops a long reply mid-way: the text streamed so far stays, the prompt comes back.
        child.send("/len 1000000\r")
        child.expect_exact("len 1000000")
        child.send("more\r")
        child.expect(r"36m[^\x1b]{20}")  # 20 characters of the reply have arrived: it is streaming
        child.sendintr()
        child.expect_exact("[stopped]")
        child.expect_exact(PROMPT)

        # The session is intact; characters the model never saw are reported, not crashed on.
        child.send("/info\r")
        child.expect_exact("ended by interrupt")
        child.send("مرحبا 😀\r")
        child.expect_exact("never saw")
        child.expect_exact(PROMPT)

        # Ctrl-D leaves with exit code 0.
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "مرحبا 😀" in (tmp_path / "state" / "chargen" / "history").read_text(encoding="utf-8")


def test_piped_mode_end_to_end(ckpt, tmp_path):
    script = "hello there\n/temp -1\nمرحبا\n/reset\nhello there\n"
    done = subprocess.run(CHARGEN + ["repl", str(ckpt), "--temp", "0", "--length", "30", "--stop", ""],
                          input=script, capture_output=True, text=True, encoding="utf-8",
                          env=quiet_env(tmp_path), timeout=60)
    expected = greedy_reply(ckpt, "hello there", 30)
    assert done.stdout == f"{expected}\n{expected}\n"
    assert "\x1b" not in done.stdout
    # Command output and errors go to stderr, one line each.
    errors = [line for line in done.stderr.splitlines() if line.startswith("chargen repl: error: ")]
    assert len(errors) == 2 and "/temp -1" in errors[0] and "never saw" in errors[1]
    assert "conversation forgotten" in done.stderr
    assert done.returncode == 1  # a prompt failed; the ones after it were answered
