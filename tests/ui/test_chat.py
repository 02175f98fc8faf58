"""A conversation with a model, no terminal: memory, the chat template, slash commands, unknown text."""

from __future__ import annotations

import string
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import chargen
from chargen.checkpoint import save_checkpoint
from chargen.errors import ChargenError
from chargen.generation.sampler import Sampler
from chargen.generation.settings import SamplingSettings
from chargen.model import CharLM, ModelConfig
from chargen.text.tokenizers import ByteTokenizer, CharTokenizer
from chargen.ui.chat import COMMAND_NAMES, ChatSession, is_command, resolve_command, show

VOCAB = string.ascii_letters + " \n:.,!?"
GREEDY = SamplingSettings(temp=0, length=30, stop=None)


def make_random_checkpoint(path: Path, seed: int = 0, vocab: str = VOCAB) -> Path:
    """A 1x32 LSTM with random weights: instant, and its greedy text is varied (not all spaces)."""
    torch.manual_seed(seed)
    tokenizer = CharTokenizer(sorted(set(vocab)))
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden=32))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10)  # sharper logits, so that greedy decoding does not settle on one symbol
    save_checkpoint(path, model, tokenizer, {"step": 0})
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_random_checkpoint(tmp_path_factory.mktemp("chat") / "rand.safetensors")


@pytest.fixture(scope="module")
def model(ckpt):
    return chargen.load(ckpt)


def greedy_after(model, context: str, settings: SamplingSettings = GREEDY) -> str:
    """What the model says after reading ``context`` from scratch, in one go."""
    sampler = Sampler(model.model, model.tokenizer)
    sampler.feed(context)
    return "".join(sampler.stream(settings))


# ---- command parsing -------------------------------------------------------------------------

def test_commands_resolve_by_name_or_unique_prefix():
    assert resolve_command("/temp") == "/temp"
    assert resolve_command("/q") == "/quit"
    assert resolve_command("/te") == "/temp"
    with pytest.raises(ChargenError, match="could be /top-k, /top-p"):
        resolve_command("/top")
    with pytest.raises(ChargenError, match="unknown command"):
        resolve_command("/frobnicate")
    assert is_command("/temp 0") and not is_command("//temp is a word") and not is_command("hi /x")


def test_settings_are_shown_as_they_are_typed():
    assert show(None) == "off" and show("\n\n") == r"\n\n" and show("a\tb") == r"a\tb"


@pytest.mark.parametrize("line", ["/temp -1", "/temp abc", "/temp nan", "/top-k -3", "/top-k 1.5",
                                  "/top-p 0", "/top-p 1.5", "/len -1", "/len ten", "/seed -2",
                                  "/seed x", "/save", "/load", "/nope", "/top 3"])
def test_bad_values_give_one_line_and_change_nothing(model, line):
    session = ChatSession(model)
    before = replace(session.settings)
    result = session.run_command(line)
    assert result.error and not result.quit
    assert "\n" not in result.message and result.message
    assert session.settings == before


def test_settings_commands(model):
    session = ChatSession(model)
    assert not session.run_command("/temp 0").error and session.settings.temp == 0
    session.run_command("/top-k 5")
    session.run_command("/top-p 0.9")
    session.run_command("/len 12")
    session.run_command("/seed 7")
    session.run_command(r"/stop \n--")
    assert (session.settings.top_k, session.settings.top_p, session.settings.length,
            session.settings.seed, session.settings.stop) == (5, 0.9, 12, 7, "\n--")
    assert session.run_command("/temp").message == "temp 0"  # no value: show it
    session.run_command("/seed off")
    session.run_command("/stop off")
    assert session.settings.seed is None and session.settings.stop is None
    assert session.run_command("/quit").quit


def test_a_stop_string_the_model_cannot_write_is_noted(model):
    session = ChatSession(model)
    result = session.run_command("/stop END=")
    assert not result.error and session.settings.stop == "END="
    assert "note: the model never saw '=' (U+003D) of the stop string 'END='" in result.message
    assert "replies will end at the length limit" in session.stop_warning()


def test_info_and_help(model):
    session = ChatSession(model)
    info = session.run_command("/info").message
    assert f"char vocab {model.tokenizer.vocab_size}" in info
    assert f"{model.model.num_parameters():,} parameters" in info
    assert "temp 0.8" in info and r"stop \n\n" in info
    help_text = session.run_command("/help").message
    assert all(name in help_text for name in COMMAND_NAMES)


# ---- conversation state ------------------------------------------------------------------------

def test_memory_is_the_recurrent_state(model):
    """A turn continues from the state the last one left: the same as reading it all at once."""
    session = ChatSession(model, GREEDY, user_prefix="\nYOU: ", bot_prefix="\nBOT: ")
    first = "".join(session.reply("hello there"))
    second = "".join(session.reply("and then"))
    assert first == greedy_after(model, "\nYOU: hello there\nBOT: ")
    conversation = "\nYOU: hello there\nBOT: " + first + "\nYOU: and then\nBOT: "
    assert second == greedy_after(model, conversation)
    assert "".join(session.transcript) == conversation + second
    # Without the memory, the same words get another answer.
    assert second != greedy_after(model, "\nYOU: and then\nBOT: ")


def test_reset_forgets(model):
    session = ChatSession(model, GREEDY)
    first = "".join(session.reply("hello"))
    "".join(session.reply("more words"))
    assert session.run_command("/reset").message
    assert session.transcript == []
    assert "".join(session.reply("hello")) == first


def test_reply_ends_at_stop_string_which_is_not_shown(model):
    free = greedy_after(model, "hello", replace(GREEDY, length=40))
    stop = free[10:12]  # two characters the model is known to write
    session = ChatSession(model, replace(GREEDY, length=40, stop=stop))
    reply = "".join(session.reply("hello"))
    assert reply == free[:free.index(stop)]
    assert session.last_reply.ended_by == "stop" and session.last_reply.chars == len(reply)
    # The model did write the stop string: it is part of its memory.
    assert session.transcript[-1] == free[:free.index(stop) + len(stop)]


def test_reply_ends_at_length(model):
    session = ChatSession(model, replace(GREEDY, length=7))
    assert len("".join(session.reply("hello"))) == 7
    assert session.last_reply.ended_by == "length"


@pytest.mark.parametrize("written, fed", [
    ("a reply\n\n", "YOU:\nhi\n\nBOT:\n"),     # the reply ended at the stop string: its blank line is there
    ("a reply\n", "\nYOU:\nhi\n\nBOT:\n"),     # it ended at the length limit after one line break
    (None, "\n\nYOU:\nhi\n\nBOT:\n"),          # the first turn: the whole prefix
])
def test_user_prefix_does_not_repeat_the_blank_line_the_model_just_wrote(model, written, fed):
    session = ChatSession(model, replace(GREEDY, stop="\n\n", length=3), user_prefix="\n\nYOU:\n",
                          bot_prefix="\n\nBOT:\n")
    if written is not None:
        session.transcript = ["earlier turn\n\nBOT:\n", written]
    "".join(session.reply("hi"))
    assert session.transcript[-2] == fed  # what the model read for this turn


def test_interrupt_keeps_the_session_consistent(model):
    session = ChatSession(model, replace(GREEDY, length=1000))
    pieces = []
    for piece in session.reply("hello", should_stop=lambda: len(pieces) >= 5):
        pieces.append(piece)
    assert len(pieces) == 5 and session.last_reply.ended_by == "interrupt"
    assert session.transcript == ["hello", "".join(pieces)]
    # The next turn continues exactly from what was written before the interrupt.
    session.settings = GREEDY
    assert "".join(session.reply(" again")) == greedy_after(model, "hello" + "".join(pieces) + " again")


def test_unknown_characters_are_reported_and_nothing_is_fed(model):
    session = ChatSession(model, GREEDY)
    first = "".join(session.reply("hello"))
    for text in ["مرحبا", "سلام دنیا", "ನಮಸ್ಕಾರ", "ਸਤ ਸ੍ਰੀ ਅਕਾਲ", "hi 😀"]:
        with pytest.raises(ChargenError, match="^your text has characters the model never saw: .*; nothing was sent"):
            "".join(session.reply(text))
        assert session.transcript == ["hello", first]
    # The memory is as if the failed turns never happened.
    assert "".join(session.reply(" again")) == greedy_after(model, "hello" + first + " again")


def test_any_script_works_with_a_byte_model(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "bytes.safetensors"
    save_checkpoint(path, CharLM(ModelConfig(vocab_size=256, layers=1, hidden=16)), ByteTokenizer(), {"step": 0})
    session = ChatSession(chargen.load(path), replace(GREEDY, length=20), user_prefix="👤 ", bot_prefix="\nبوت: ")
    for text in ["مرحبا", "اردو میں", "ಕನ್ನಡ", "ਪੰਜਾਬੀ", "🙂🚀"]:
        "".join(session.reply(text))
    assert "ਪੰਜਾਬੀ\nبوت: " in "".join(session.transcript)


def test_prefix_with_unknown_characters_is_refused_at_start(model):
    with pytest.raises(ChargenError) as info:
        ChatSession(model, bot_prefix="\n\nROMEO=\n")
    assert str(info.value) == ("--bot-prefix '\\n\\nROMEO=\\n' has characters the model never saw: '=' (U+003D); "
                               "choose a prefix made of the corpus's characters")


def test_save_and_load(model, tmp_path):
    session = ChatSession(model, GREEDY, user_prefix="Q: ", bot_prefix="\nA: ")
    reply = "".join(session.reply("why"))
    result = session.run_command(f"/save {tmp_path / 'chat.txt'}")
    assert not result.error
    assert (tmp_path / "chat.txt").read_text(encoding="utf-8") == "Q: why\nA: " + reply
    assert session.run_command(f"/save {tmp_path / 'no-such-dir' / 'x.txt'}").error

    other = make_random_checkpoint(tmp_path / "other.safetensors", seed=1)
    assert session.run_command(f"/load {tmp_path / 'missing'}").error
    assert session.model is model
    result = session.run_command(f"/load {other}")
    assert not result.error and "other.safetensors" in result.message
    assert session.model is not model and session.transcript == []
    assert session.settings.temp == 0  # settings survive a model switch
    no_colon = make_random_checkpoint(tmp_path / "nocolon.safetensors", vocab="abc \n")
    refused = session.run_command(f"/load {no_colon}")
    assert refused.error and refused.message.startswith("--user-prefix 'Q: ' has characters the model never saw: ':'")
    assert session.model.path == other
