"""The REPL's commands for the new controls: /rep-penalty, /no-repeat, /window, /min-len, /stop +TEXT."""

import pytest

import chargen
from chargen.generation.settings import SamplingSettings
from chargen.ui.chat import ChatSession


@pytest.fixture
def session(tiny_run):
    return ChatSession(chargen.load(tiny_run), SamplingSettings(length=60, seed=1, stop="\n\n"))


def test_commands_set_the_controls(session):
    assert session.run_command("/rep-penalty 1.3").message == "rep-penalty 1.3"
    assert session.run_command("/no-repeat 4").message == "no-repeat 4"
    assert session.run_command("/window 50").message == "window 50"
    assert session.run_command("/min-len 10").message == "min-len 10"
    s = session.settings
    assert (s.repetition_penalty, s.no_repeat_ngram, s.repeat_window, s.min_length) == (1.3, 4, 50, 10)
    assert "rep-penalty 1.3" in session.info() and "min-len 10" in session.info()


@pytest.mark.parametrize("line,reason", [("/rep-penalty 0", "must be a number in (0"), ("/no-repeat x", "not a whole"),
                                         ("/window -1", "between 0"), ("/min-len -2", "between 0")])
def test_bad_values_change_nothing(session, line, reason):
    before = session.settings
    result = session.run_command(line)
    assert result.error and reason in result.message and result.message.startswith(line.split()[0])
    assert session.settings == before


def test_several_stop_strings(session):
    assert session.run_command("/stop +e").message == r"stop \n\n | e"
    assert session.settings.stops == ("\n\n", "e")
    reply = "".join(session.reply("the dog"))
    assert "e" not in reply and session.last_reply.ended_by in ("stop", "length")
    assert session.run_command("/stop off").message == "stop off" and session.settings.stops == ()


def test_min_len_holds_in_a_chat(tiny_run):
    settings = SamplingSettings(length=80, seed=2, stop=" ", temp=0.8)
    free = "".join(ChatSession(chargen.load(tiny_run), SamplingSettings(length=80, seed=2)).reply("the"))
    short = "".join(ChatSession(chargen.load(tiny_run), settings).reply("the"))
    held = ChatSession(chargen.load(tiny_run), settings)
    held.run_command("/min-len 25")
    long = "".join(held.reply("the"))
    assert short == free[:free.index(" ")]
    assert len(long) >= 25 and long == free[:free.index(" ", 25)]
