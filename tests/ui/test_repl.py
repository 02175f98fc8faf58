"""``chargen repl`` around a chat session: piped mode, the command line, and the prompt-toolkit front
end driven through a pipe input and a dummy output."""

from __future__ import annotations

import io
from pathlib import Path

import chargen
import prompt_toolkit.utils

from chargen.ui import repl as repl_module
from chargen.ui.chat import ChatSession
from chargen.ui.repl import make_completer, read_prompts, run_piped, run_terminal
from tests.ui.test_chat import GREEDY, ckpt, greedy_after, model  # noqa: F401 (fixtures)


def test_completer_offers_commands_with_help_and_paths(tmp_path):
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    completer = make_completer()

    def complete(text):
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert complete("/t") == ["/temp", "/top-k", "/top-p"]
    assert complete("hello /t") == []
    (tmp_path / "run-a").mkdir()
    assert complete(f"/load {tmp_path}/ru") == ["n-a"]
    metas = [c.display_meta_text for c in completer.get_completions(Document("/res"), CompleteEvent())]
    assert metas == ["forget the conversation (the model's memory and the transcript) and restore the trained weights"]


# ---- piped mode --------------------------------------------------------------------------------

def test_read_prompts_by_line_and_by_block():
    text = "one\n\n/temp 0\ntwo\n/not a command\n\n\nthree\n"
    assert list(read_prompts(io.StringIO(text))) == ["one", "/temp 0", "two", "/not a command", "three"]
    assert list(read_prompts(io.StringIO(text), blocks=True)) == ["one", "/temp 0", "two\n/not a command", "three"]


def test_run_piped_prints_replies_only(model):
    session = ChatSession(model, GREEDY)
    out, err = io.StringIO(), io.StringIO()
    code = run_piped(session, io.StringIO("hello\n/temp -1\nسلام\n/reset\nhello\n/quit\nnever read\n"), out, err)
    expected = greedy_after(model, "hello")
    assert out.getvalue() == f"{expected}\n{expected}\n"
    assert code == 1
    assert err.getvalue().count("error:") == 2 and "never saw" in err.getvalue()


def test_cli_piped_mode(ckpt, cli, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    code, out, err = cli("repl", ckpt, "--temp", "0", "--length", "30", "--stop", "", "--history", "")
    assert (code, err) == (0, "")
    assert out == greedy_after(chargen.load(ckpt), "hello") + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    code, out, err = cli("chat", ckpt, "--user-prefix", r"\n\nYOU=\n")
    assert code == 2 and out == ""
    assert "--user-prefix '\\n\\nYOU=\\n' has characters the model never saw: '=' (U+003D)" in err


# ---- the prompt-toolkit front end, with a pipe for a keyboard ----------------------------------

def chat_through_pipe(session: ChatSession, keys: str, history: Path) -> int:
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    with create_pipe_input() as keyboard:
        keyboard.send_text(keys)
        return run_terminal(session, str(history), input=keyboard, output=DummyOutput())


def test_terminal_keys_commands_and_history(model, tmp_path):
    history = tmp_path / "state" / "history"
    session = ChatSession(model, GREEDY)
    keys = ("/te 0.5\r"                # a command, by unique prefix
            "junk\x03"                 # Ctrl-C clears the line
            "hello\x1b\rthere\r"       # Alt-Enter: a new line inside one message
            "مرحبا\r"                  # unknown characters: reported, history keeps them
            "\x04")                    # Ctrl-D: leave
    assert chat_through_pipe(session, keys, history) == 0
    assert session.settings.temp == 0.5
    assert session.transcript[0] == "hello\nthere"
    assert len(session.transcript) == 2
    saved = history.read_text(encoding="utf-8")
    assert "+hello\n+there" in saved and "+مرحبا" in saved and "junk" not in saved

    # A new session finds the history: Up Up recalls the message before the Arabic one.
    again = ChatSession(model, GREEDY)
    assert chat_through_pipe(again, "\x1b[A\x1b[A\r/quit\r", history) == 0
    assert again.transcript[0] == "hello\nthere"


def test_the_terminal_counts_vowel_signs_as_terminals_do(model, tmp_path, monkeypatch):
    measured = []
    monkeypatch.setattr(repl_module, "count_spacing_marks_as_one_column", measured.append)
    assert chat_through_pipe(ChatSession(model, GREEDY), "/quit\r", tmp_path / "history") == 0
    assert measured == [prompt_toolkit.utils]  # prompt-toolkit's widths, fixed before the prompt is drawn


def test_an_unwritable_history_is_noted_and_the_chat_goes_on(model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    session = ChatSession(model, GREEDY)
    assert chat_through_pipe(session, "hello\r\x04", blocker / "history") == 0
    assert session.transcript[0] == "hello"
