"""A conversation with a model, with no terminal in sight: the logic of ``chargen repl``.

``ChatSession`` holds the sampling settings, the chat template, the slash commands, the
transcript, and the model's memory: the ``Sampler``'s recurrent state, carried from turn to turn,
so nothing is ever re-read. ``repl.py`` puts a terminal (or a pipe) in front of it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from ..api import load
from ..errors import ChargenError, check_known_chars, describe_chars
from ..generation.settings import SamplingSettings
from ..generation.stops import StopFilter
from ..text.unknown import clean_text
from .options import unescape

DEFAULT_STOP = "\n\n"


@dataclass
class ReplyStats:
    """How the last reply went, for the toolbar and ``/info``."""

    chars: int              # characters shown (the stop string is not counted)
    seconds: float          # from the user's Enter to the last character
    first_char_seconds: float | None  # from Enter to the first character shown
    ended_by: str           # "stop", "length", "time" (--max-time) or "interrupt"

    @property
    def chars_per_second(self) -> float:
        return self.chars / self.seconds if self.seconds > 0 else 0.0


@dataclass
class CommandResult:
    """What a slash command says back; ``error`` results changed nothing."""

    message: str = ""
    error: bool = False
    quit: bool = False


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str


COMMANDS = [
    Command("/temp", "/temp [T]", "temperature; 0 always takes the most likely character"),
    Command("/top-k", "/top-k [K]", "sample among the K most likely only (0 = off)"),
    Command("/top-p", "/top-p [P]", "sample from the smallest set holding P of the probability (1 = off)"),
    Command("/len", "/len [N]", "longest reply, in tokens"),
    Command("/seed", "/seed [N|off]", "same seed and same conversation, same replies; off = random"),
    Command("/stop", r"/stop [TEXT|+TEXT|off]", r"a reply ends when the model writes TEXT (\n understood); "
            "+TEXT adds another stop string"),
    Command("/rep-penalty", "/rep-penalty [R]", "make tokens already in the reply less likely (1 = off; 1.1-1.3 breaks loops)"),
    Command("/no-repeat", "/no-repeat [N]", "never repeat an N-token sequence of the reply (0 = off)"),
    Command("/window", "/window [N]", "tokens /rep-penalty and /no-repeat look back over (0 = the whole reply)"),
    Command("/min-len", "/min-len [N]", "stop strings are ignored until the reply has N tokens"),
    Command("/adapt", "/adapt [on|off]", "on: the model keeps learning from the conversation as it goes "
            "(in memory only; /reset undoes it)"),
    Command("/reset", "/reset", "forget the conversation (the model's memory and the transcript) and "
            "restore the trained weights"),
    Command("/info", "/info", "model, vocabulary, parameters and settings"),
    Command("/save", "/save FILE", "write the conversation, as the model read and wrote it, to FILE"),
    Command("/load", "/load CKPT", "switch to another checkpoint (starts a new conversation)"),
    Command("/help", "/help", "this list"),
    Command("/quit", "/quit", "leave (Ctrl-D does too)"),
]
COMMAND_NAMES = [c.name for c in COMMANDS]

KEYS_HELP = ("Enter sends; Alt-Enter (or Esc then Enter) starts a new line; Up/Down walk the history; "
             "Tab completes commands; Ctrl-C stops a reply or clears the line; Ctrl-D quits. "
             "Start a message with // to send text that begins with /.")


def is_command(line: str) -> bool:
    """Lines starting with one slash are commands; '//' escapes a message that starts with '/'."""
    return line.startswith("/") and not line.startswith("//")


def resolve_command(word: str) -> str:
    """The command a typed word names: the exact name, or a prefix that fits only one."""
    if word in COMMAND_NAMES:
        return word
    matches = [name for name in COMMAND_NAMES if name.startswith(word)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ChargenError(f"{word}: could be {', '.join(matches)}")
    raise ChargenError(f"{word}: unknown command; /help lists them")


def show(text: str | tuple[str, ...] | None) -> str:
    """A setting's value as the user would type it: newlines as \\n, None as 'off', several stop
    strings separated by ' | '."""
    if text is None or text == ():
        return "off"
    if not isinstance(text, str):
        return " | ".join(show(t) for t in text)
    return repr(text)[1:-1]


class ChatSession:
    """A conversation with one model: settings, chat template, memory, transcript.

    ``reply(text)`` feeds the user's turn (wrapped in the template) in one forward pass and yields
    the model's answer piece by piece. The recurrent state left at the end of a reply, however it
    ended, is where the next turn starts; ``reset()`` forgets it.
    """

    def __init__(self, model, settings: SamplingSettings | None = None,
                 user_prefix: str = "", bot_prefix: str = "", device: str = "cpu", unknown: str = "skip"):
        self.settings = (settings or SamplingSettings(stop=DEFAULT_STOP)).validate()
        self.user_prefix, self.bot_prefix, self.device = user_prefix, bot_prefix, device
        self.unknown = unknown  # what to do with characters the model never saw: error, skip, replace
        self.last_reply: ReplyStats | None = None
        self.adapt = False  # /adapt on: learn from each turn once it is over (TrainedModel.learn)
        self._use_model(model)

    # -- model and memory

    def _use_model(self, model) -> None:
        for option, text in (("--user-prefix", self.user_prefix), ("--bot-prefix", self.bot_prefix)):
            check_known_chars(model.tokenizer, text, f"{option} '{show(text)}'",
                              "; choose a prefix made of the corpus's characters")
        self.model = model
        self.sampler = model.sampler()
        self.reset()

    def reset(self) -> None:
        """Forget the conversation: the model's recurrent state and the transcript; undo /adapt."""
        self.model.restore_weights()
        self.sampler.reset()
        self.transcript: list[str] = []  # exactly what the model read and wrote, in order

    def stop_warning(self) -> str | None:
        """A note when a stop string can never be generated by this model."""
        for stop in self.settings.stops:
            unknown = self.model.tokenizer.unknown_chars(stop)
            if unknown:
                ending = ("replies will end at the length limit" if len(self.settings.stops) == 1
                          else "it will never end a reply")
                return f"the model never saw {describe_chars(unknown)} of the stop string '{show(stop)}'; {ending}"
        return None

    @property
    def checkpoint_name(self) -> str:
        path = Path(self.model.path)
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name

    # -- one turn

    def _turn_text(self, text: str) -> str:
        """The user's text wrapped in the template, as it will be fed to the model.

        A reply that ended at the stop string (say a blank line) has already fed that blank line;
        a user prefix starting with one ("\\n\\nYOU:\\n") then skips the line breaks the model just
        wrote, so that turns are separated as in the corpus and not by a gap twice as wide.
        """
        prefix = self.user_prefix
        leading = prefix[:len(prefix) - len(prefix.lstrip())]
        written = "".join(self.transcript[-2:])
        for size in range(len(leading), 0, -1):
            if written.endswith(leading[:size]):
                prefix = prefix[size:]
                break
        return prefix + text + self.bot_prefix

    def check_input(self, text: str) -> None:
        """Raise ChargenError naming the characters of ``text`` the model never saw."""
        check_known_chars(self.model.tokenizer, text, "your text",
                          "; nothing was sent (its vocabulary is the training corpus's characters, see /info)")

    def prepare(self, text: str) -> tuple[str, str | None]:
        """``text`` as it can be sent under the ``unknown`` policy, and a warning naming what was
        dropped or replaced. Raises ChargenError when it cannot be sent (nothing was fed)."""
        if self.unknown == "error":
            self.check_input(text)
            return text, None
        cleaned, unknown = clean_text(text, self.model.tokenizer, self.unknown)
        if not unknown:
            return text, None
        verb = "dropped" if self.unknown == "skip" else "replaced"
        if not cleaned.strip():
            raise ChargenError(f"your text has only characters the model never saw: {describe_chars(unknown)}; "
                               "nothing was sent")
        return cleaned, f"{verb} characters the model never saw: {describe_chars(unknown)}"

    def reply(self, text: str, should_stop: Callable[[], bool] = lambda: False) -> Iterator[str]:
        """Feed the user's turn and yield the model's reply as it is generated.

        The reply ends at the stop string (not shown), after ``settings.length`` tokens, or when
        ``should_stop()`` turns true (checked after every token). Text with characters the model
        never saw raises ChargenError before anything is fed, so the memory is untouched.
        """
        self.check_input(text)
        started = time.perf_counter()
        turn = self._turn_text(text)
        self.sampler.feed(turn)
        self.transcript.append(turn)
        # The stop string is handled here, not by the Sampler, so that we know exactly what the
        # model wrote (stop string included): that is where its memory stands.
        stop_filter = StopFilter(self.settings.stops)
        written: list[str] = []
        shown, first_char_at, ended_by = 0, None, "length"
        try:
            with contextlib.closing(self.sampler.stream(replace(self.settings, stop=None))) as pieces:
                for piece in pieces:
                    written.append(piece)
                    visible = stop_filter.push(piece, armed=self.sampler.outcomes[0].tokens >= self.settings.min_length)
                    if visible:
                        if first_char_at is None:
                            first_char_at = time.perf_counter()
                        shown += len(visible)
                        yield visible
                    if stop_filter.stopped:
                        ended_by = "stop"
                        break
                    if should_stop():
                        ended_by = "interrupt"
                        break
            if ended_by == "length" and self.sampler.outcomes[0].stop_reason == "time":
                ended_by = "time"
            rest = stop_filter.flush() if ended_by != "stop" else ""
            if rest:
                shown += len(rest)
                yield rest
        finally:
            self.transcript.append("".join(written))
            if self.adapt:
                self.model.learn(turn + self.transcript[-1], carry=True)
            now = time.perf_counter()
            self.last_reply = ReplyStats(shown, now - started,
                                         None if first_char_at is None else first_char_at - started,
                                         ended_by)

    # -- slash commands

    def run_command(self, line: str) -> CommandResult:
        """Carry out one slash command line; a bad one changes nothing and says why in one line."""
        word, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        try:
            name = resolve_command(word)
            handler = getattr(self, "_cmd_" + name[1:].replace("-", "_"))
            return handler(name, arg)
        except ChargenError as exc:
            return CommandResult(str(exc), error=True)

    def _set(self, name: str, field: str, arg: str, parse: Callable[[str], object], kind: str) -> CommandResult:
        if not arg:
            return CommandResult(f"{name[1:]} {self._setting_text(field)}")
        try:
            value = parse(arg)
        except ValueError:
            raise ChargenError(f"{name} {arg}: not {kind}") from None
        candidate = replace(self.settings, **{field: value})
        try:
            candidate.validate()
        except ChargenError as exc:
            # validate() speaks in --option terms; keep its reason, name the command instead.
            raise ChargenError(f"{name} {arg}: {str(exc).split(': ', 1)[-1]}") from None
        self.settings = candidate
        return CommandResult(f"{name[1:]} {self._setting_text(field)}")

    def _setting_text(self, field: str) -> str:
        value = getattr(self.settings, field)
        if field == "stop" or value is None:
            return show(value)
        if (field, value) == ("repeat_window", 0):
            return "0 (the whole reply)"
        if (field, value) in (("top_k", 0), ("top_p", 1.0), ("repetition_penalty", 1.0), ("no_repeat_ngram", 0)):
            return f"{value:g} (off)"
        return f"{value:g}" if isinstance(value, float) else str(value)

    def _cmd_temp(self, name, arg):
        return self._set(name, "temp", arg, float, "a number")

    def _cmd_top_k(self, name, arg):
        return self._set(name, "top_k", arg, int, "a whole number")

    def _cmd_top_p(self, name, arg):
        return self._set(name, "top_p", arg, float, "a number")

    def _cmd_len(self, name, arg):
        return self._set(name, "length", arg, int, "a whole number")

    def _cmd_seed(self, name, arg):
        def parse(text: str) -> int | None:
            if text.lower() in ("off", "none", "random"):
                return None
            seed = int(text)
            if seed < 0:
                raise ValueError
            return seed
        return self._set(name, "seed", arg, parse, "a whole number >= 0 or 'off'")

    def _cmd_stop(self, name, arg):
        def parse(text: str):
            if text.lower() in ("off", "none"):
                return None
            if text.startswith("+") and len(text) > 1:
                return (*self.settings.stops, unescape(text[1:]))
            return unescape(text)
        result = self._set(name, "stop", arg, parse, "text")
        warning = self.stop_warning() if arg else None
        return CommandResult(f"{result.message}; note: {warning}") if warning else result

    def _cmd_rep_penalty(self, name, arg):
        return self._set(name, "repetition_penalty", arg, float, "a number")

    def _cmd_no_repeat(self, name, arg):
        return self._set(name, "no_repeat_ngram", arg, int, "a whole number")

    def _cmd_window(self, name, arg):
        return self._set(name, "repeat_window", arg, int, "a whole number")

    def _cmd_min_len(self, name, arg):
        return self._set(name, "min_length", arg, int, "a whole number")

    def _cmd_reset(self, name, arg):
        adapted = self.model.adapted
        self.reset()
        restored = "; trained weights restored" if adapted else ""
        return CommandResult(f"conversation forgotten{restored}; the next turn starts afresh")

    def _cmd_adapt(self, name, arg):
        if arg not in ("", "on", "off"):
            raise ChargenError(f"/adapt {arg}: use /adapt on or /adapt off")
        if arg:
            self.adapt = arg == "on"
        learned = "; /reset restores the trained weights" if self.model.adapted else ""
        return CommandResult(f"adapt {'on: the model learns from each turn' if self.adapt else 'off'}{learned}")

    def _cmd_info(self, name, arg):
        return CommandResult(self.info())

    def _cmd_save(self, name, arg):
        if not arg:
            raise ChargenError("/save FILE: give the file to write the conversation to")
        path = Path(arg).expanduser()
        text = "".join(self.transcript)
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ChargenError(f"/save {arg}: cannot write: {exc.strerror or exc}") from None
        return CommandResult(f"saved {len(text):,} characters to {path}")

    def _cmd_load(self, name, arg):
        if not arg:
            raise ChargenError("/load CKPT: give a checkpoint file or run directory")
        self._use_model(load(Path(arg).expanduser(), device=self.device))
        warning = self.stop_warning()
        note = f"; note: {warning}" if warning else ""
        return CommandResult(f"loaded {self.checkpoint_name} ({self.model_summary()}); new conversation{note}")

    def _cmd_help(self, name, arg):
        width = max(len(c.usage) for c in COMMANDS)
        lines = [f"  {c.usage:<{width}}  {c.help}" for c in COMMANDS]
        return CommandResult("\n".join(["commands (a unique prefix will do, e.g. /q):"]
                                       + lines + ["keys: " + KEYS_HELP]))

    def _cmd_quit(self, name, arg):
        return CommandResult(quit=True)

    # -- descriptions

    def model_summary(self) -> str:
        return self.model.describe()

    def settings_summary(self) -> str:
        return ", ".join(f"{label} {self._setting_text(field)}" for label, field in
                         (("temp", "temp"), ("top-k", "top_k"), ("top-p", "top_p"),
                          ("len", "length"), ("seed", "seed"), ("stop", "stop"),
                          ("rep-penalty", "repetition_penalty"), ("no-repeat", "no_repeat_ngram"),
                          ("window", "repeat_window"), ("min-len", "min_length")))

    def info(self) -> str:
        """Model, vocabulary, parameters, settings and the last reply's speed, as text lines."""
        tok = self.model.tokenizer
        lines = [f"checkpoint  {self.model.path}",
                 f"model       {self.model_summary()}"]
        if tok.kind == "char":
            lines.append(f"vocab       {''.join(tok.chars)!r}")
        lines += [f"settings    {self.settings_summary()}",
                  f"template    user prefix '{show(self.user_prefix)}', bot prefix '{show(self.bot_prefix)}'",
                  f"memory      {sum(map(len, self.transcript)):,} characters read and written since the last reset"]
        stats = self.last_reply
        if stats:
            first = "-" if stats.first_char_seconds is None else f"{stats.first_char_seconds * 1000:.0f} ms"
            lines.append(f"last reply  {stats.chars} chars in {stats.seconds:.2f} s "
                         f"({stats.chars_per_second:.0f} chars/s), first char after {first}, "
                         f"ended by {stats.ended_by}")
        return "\n".join(lines)
