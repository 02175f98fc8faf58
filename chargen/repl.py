"""Chat-style REPL: ``chargen repl CKPT`` (alias ``chargen chat``).

Two layers:

- ``ChatSession`` is the conversation, with no terminal in sight: sampling settings, the chat
  template, slash commands, one reply at a time streamed as text pieces, the transcript. The
  model's memory is the ``Sampler``'s recurrent state, carried from turn to turn; nothing is ever
  re-read.
- ``run_repl`` puts a face on it: a prompt-toolkit prompt (history file, key bindings, slash
  command completion, bottom toolbar) when stdin and stdout are a terminal, or a plain
  line-by-line loop when they are not, so that the REPL can be scripted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

from .cli import _add_sampling_arguments, unescape
from .errors import ChargenError, describe_chars
# _StopFilter is the Sampler's own stop-string logic; reused so that chat and `sample` agree.
from .sampling import SamplingSettings, _StopFilter

DEFAULT_STOP = "\n\n"


# ---- the conversation, without a terminal ----------------------------------------------------

@dataclass
class ReplyStats:
    """How the last reply went, for the toolbar and ``/info``."""

    chars: int              # characters shown (the stop string is not counted)
    seconds: float          # from the user's Enter to the last character
    first_char_seconds: float | None  # from Enter to the first character shown
    ended_by: str           # "stop", "length" or "interrupt"

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
    Command("/stop", r"/stop [TEXT|off]", r"a reply ends when the model writes TEXT (\n understood)"),
    Command("/reset", "/reset", "forget the conversation (the model's memory and the transcript)"),
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


def _show(text: str | None) -> str:
    """A setting's value as the user would type it: newlines as \\n, None as 'off'."""
    if text is None:
        return "off"
    return repr(text)[1:-1]


class ChatSession:
    """A conversation with one model: settings, chat template, memory, transcript.

    ``reply(text)`` feeds the user's turn (wrapped in the template) in one forward pass and yields
    the model's answer piece by piece. The recurrent state left at the end of a reply, however it
    ended, is where the next turn starts; ``reset()`` forgets it.
    """

    def __init__(self, model, settings: SamplingSettings | None = None,
                 user_prefix: str = "", bot_prefix: str = "", device: str = "cpu"):
        self.settings = (settings or SamplingSettings(stop=DEFAULT_STOP)).validate()
        self.user_prefix, self.bot_prefix, self.device = user_prefix, bot_prefix, device
        self.last_reply: ReplyStats | None = None
        self._use_model(model)

    # -- model and memory

    def _use_model(self, model) -> None:
        for option, text in (("--user-prefix", self.user_prefix), ("--bot-prefix", self.bot_prefix)):
            unknown = model.tokenizer.unknown_chars(text)
            if unknown:
                raise ChargenError(f"{option} '{_show(text)}': has characters the model never saw: "
                                   f"{describe_chars(unknown)}; choose a prefix made of the corpus's characters")
        self.model = model
        self.sampler = model.sampler()
        self.reset()

    def reset(self) -> None:
        """Forget the conversation: the model's recurrent state and the transcript."""
        self.sampler.reset()
        self.transcript: list[str] = []  # exactly what the model read and wrote, in order

    def stop_warning(self) -> str | None:
        """A note when the stop string can never be generated by this model."""
        stop = self.settings.stop
        unknown = self.model.tokenizer.unknown_chars(stop) if stop else set()
        if unknown:
            return (f"the model never saw {describe_chars(unknown)} of the stop string "
                    f"'{_show(stop)}'; replies will end at the length limit")
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
        unknown = self.model.tokenizer.unknown_chars(text)
        if unknown:
            raise ChargenError(f"the model never saw {describe_chars(unknown)}; nothing was sent "
                               f"(its vocabulary is the training corpus's characters, see /info)")

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
        stop_filter = _StopFilter(self.settings.stop)
        written: list[str] = []
        shown, first_char_at, ended_by = 0, None, "length"
        try:
            with contextlib.closing(self.sampler.stream(replace(self.settings, stop=None))) as pieces:
                for piece in pieces:
                    written.append(piece)
                    visible = stop_filter.push(piece)
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
            rest = stop_filter.flush() if ended_by != "stop" else ""
            if rest:
                shown += len(rest)
                yield rest
        finally:
            self.transcript.append("".join(written))
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
            return _show(value)
        if (field, value) in (("top_k", 0), ("top_p", 1.0)):
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
        result = self._set(name, "stop", arg,
                           lambda text: None if text.lower() in ("off", "none") else unescape(text), "text")
        warning = self.stop_warning() if arg else None
        return CommandResult(f"{result.message}; note: {warning}") if warning else result

    def _cmd_reset(self, name, arg):
        self.reset()
        return CommandResult("conversation forgotten; the next turn starts afresh")

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
        from .api import load

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
        c, tok = self.model.config, self.model.tokenizer
        return (f"{c.layers}x{c.hidden} {c.cell}, {tok.kind} vocab {tok.vocab_size}, "
                f"{self.model.model.num_parameters():,} parameters")

    def settings_summary(self) -> str:
        return ", ".join(f"{label} {self._setting_text(field)}" for label, field in
                         (("temp", "temp"), ("top-k", "top_k"), ("top-p", "top_p"),
                          ("len", "length"), ("seed", "seed"), ("stop", "stop")))

    def info(self) -> str:
        """Model, vocabulary, parameters, settings and the last reply's speed, as text lines."""
        tok = self.model.tokenizer
        lines = [f"checkpoint  {self.model.path}",
                 f"model       {self.model_summary()}"]
        if tok.kind == "char":
            lines.append(f"vocab       {''.join(tok.chars)!r}")
        lines += [f"settings    {self.settings_summary()}",
                  f"template    user prefix '{_show(self.user_prefix)}', bot prefix '{_show(self.bot_prefix)}'",
                  f"memory      {sum(map(len, self.transcript)):,} characters read and written since the last reset"]
        stats = self.last_reply
        if stats:
            first = "-" if stats.first_char_seconds is None else f"{stats.first_char_seconds * 1000:.0f} ms"
            lines.append(f"last reply  {stats.chars} chars in {stats.seconds:.2f} s "
                         f"({stats.chars_per_second:.0f} chars/s), first char after {first}, "
                         f"ended by {stats.ended_by}")
        return "\n".join(lines)


# ---- command line ----------------------------------------------------------------------------

def default_history_path() -> Path:
    """Where prompt history lives: $XDG_STATE_HOME/chargen/history, else ~/.local/state/..."""
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state_home) / "chargen" / "history"


def add_repl_arguments(parser) -> None:
    """The options of ``chargen repl`` / ``chargen chat``."""
    parser.add_argument("checkpoint", metavar="CKPT", help="a run directory (its best checkpoint) or a checkpoint file")
    _add_sampling_arguments(parser)
    # In a chat a reply ends at a blank line unless told otherwise (`sample` has no default stop).
    stop = next(action for action in parser._actions if action.dest == "stop")
    stop.default = DEFAULT_STOP
    stop.help = r"a reply ends when the model writes this; \n and \t are understood (default: \n\n, a blank line; '' for none)"
    parser.add_argument("--user-prefix", default="", metavar="TEXT",
                        help=r"fed before each of your turns, e.g. '\n\nYOU:\n' (default: none)")
    parser.add_argument("--bot-prefix", default="", metavar="TEXT",
                        help=r"fed after each of your turns, before the reply, e.g. '\n\nROMEO:\n' (default: none)")
    parser.add_argument("--history", metavar="FILE", default=None,
                        help=f"prompt history file; '' keeps none (default: {default_history_path()})")
    parser.add_argument("--blocks", action="store_true",
                        help="when stdin is not a terminal: a prompt is a block of lines ended by a blank "
                        "line (default: one prompt per line)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")


def run_repl(args) -> int:
    """``chargen repl``: a prompt-toolkit chat on a terminal, a line-by-line loop on pipes."""
    from .api import load

    if args.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Replies are a chain of small matrix-vector products: extra threads buy little and, on a
        # busy machine, a spinning thread pool turned a 13 ms first character into over a second.
        import torch
        torch.set_num_threads(1)
    settings = SamplingSettings(temp=args.temp, top_k=args.top_k, top_p=args.top_p, length=args.length,
                                seed=args.seed, stop=unescape(args.stop) or None).validate()
    session = ChatSession(load(args.checkpoint, device=args.device), settings,
                          user_prefix=unescape(args.user_prefix), bot_prefix=unescape(args.bot_prefix),
                          device=args.device)
    if sys.stdin.isatty() and sys.stdout.isatty():
        return run_terminal(session, args.history)
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        # Never die on a byte the locale cannot take; scripts get a '?' instead.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    warning = session.stop_warning()
    if warning:
        print(f"chargen repl: note: {warning}", file=sys.stderr)
    return run_piped(session, sys.stdin, sys.stdout, sys.stderr, blocks=args.blocks)


# ---- not a terminal: one prompt per line (or block), replies on stdout -----------------------

def read_prompts(lines: Iterable[str], blocks: bool = False) -> Iterator[str]:
    """Prompts from input lines: one per non-empty line, or one per blank-line separated block.

    In blocks, a line starting with '/' where a block would start is a command on its own line.
    """
    block: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not blocks or (is_command(line) and not block):
            if line.strip():
                yield line
            continue
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def run_piped(session: ChatSession, lines: Iterable[str], out: TextIO, err: TextIO,
              blocks: bool = False) -> int:
    """Answer each prompt on ``out`` (reply then a newline), streamed; everything else on ``err``.

    Exit code 0, or 2 when some prompt or command failed (each failure says why on ``err``).
    """
    failed = False
    for prompt in read_prompts(lines, blocks):
        if is_command(prompt):
            result = session.run_command(prompt)
            if result.message:
                print(("chargen repl: error: " if result.error else "") + result.message, file=err)
            failed |= result.error
            if result.quit:
                break
            continue
        try:
            for piece in session.reply(prompt[1:] if prompt.startswith("//") else prompt):
                out.write(piece)
                out.flush()
        except ChargenError as exc:
            print(f"chargen repl: error: {exc}", file=err)
            failed = True
            continue
        out.write("\n")
        out.flush()
    return 2 if failed else 0


# ---- a terminal: prompt-toolkit ----------------------------------------------------------------

STYLE_RULES = {
    "prompt": "ansigreen bold",
    "reply": "ansicyan",
    "label": "ansicyan bold",
    "note": "ansibrightblack",
    "error": "ansired",
    "bottom-toolbar": "noreverse bg:ansibrightblack ansiwhite",
    "bottom-toolbar.key": "bold",
}
PROMPT = [("class:prompt", "> ")]


def make_completer():
    """Tab completion for slash commands (with their help), and file names after /load and /save.

    Built in a function so that prompt-toolkit is imported only when a terminal chat starts.
    """
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document

    class SlashCompleter(Completer):
        paths = PathCompleter(expanduser=True)
        descriptions = {c.name: c.help for c in COMMANDS}

        def get_completions(self, document, complete_event):
            text = document.text_before_cursor
            if not is_command(text):
                return
            word, space, arg = text.partition(" ")
            if not space:
                for name in COMMAND_NAMES:
                    if name.startswith(word):
                        yield Completion(name, start_position=-len(word), display_meta=self.descriptions[name])
            elif word in ("/load", "/save"):
                yield from self.paths.get_completions(Document(arg.lstrip()), complete_event)

    return SlashCompleter()


@contextlib.contextmanager
def sigint_as_flag() -> Iterator[threading.Event]:
    """While generating, Ctrl-C sets a flag (checked between tokens) instead of raising.

    A KeyboardInterrupt could land between a forward pass and the bookkeeping after it; a flag
    stops the reply only at a token boundary, so the model's memory stays consistent.
    """
    flag = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def open_history(path_option: str | None):
    """A FileHistory at ``path_option`` (default location if None), or in-memory if '' or unusable."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    if path_option == "":
        return InMemoryHistory(), None
    path = Path(path_option).expanduser() if path_option else default_history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError as exc:
        return InMemoryHistory(), f"history is not kept: cannot write {path}: {exc.strerror or exc}"
    return FileHistory(str(path)), None


def measure_spacing_marks_as_terminals_do() -> None:
    """Make prompt-toolkit count a spacing combining mark as one column, as terminals draw it.

    Spacing marks (Unicode category Mc) are the vowel signs of Punjabi, Hindi, Kannada and other
    Indic scripts. glibc's wcwidth, tmux, xterm and VTE give each one a cell; recent releases of
    the wcwidth package give it 0 on its own, and prompt-toolkit adds up per-character widths, so
    on a line of Punjabi its idea of the cursor fell behind the terminal's and the redrawn prompt
    landed mid-line ("> > ਪੰਜਾਬੀ"). prompt-toolkit keeps widths in a plain dict cache: seed it.
    """
    import unicodedata

    from prompt_toolkit.utils import _CHAR_SIZES_CACHE, get_cwidth

    if get_cwidth("\u0a3e") == 1:  # GURMUKHI VOWEL SIGN AA: this wcwidth already agrees
        return
    for code in range(0x20000):  # no spacing marks lie beyond the first two planes
        char = chr(code)
        if unicodedata.category(char) == "Mc":
            _CHAR_SIZES_CACHE[char] = 1


def run_terminal(session: ChatSession, history_option: str | None, input=None, output=None) -> int:
    """The interactive chat. Returns 0 on Ctrl-D or /quit.

    ``input`` and ``output`` are prompt-toolkit's (default: the terminal); tests pass a pipe input
    and a dummy output.
    """
    from prompt_toolkit import PromptSession, print_formatted_text
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.styles import Style

    measure_spacing_marks_as_terminals_do()
    style = Style.from_dict(STYLE_RULES)

    def say(text: str, cls: str = "note", end: str = "\n") -> None:
        print_formatted_text(FormattedText([(f"class:{cls}", text)]), style=style, end=end, output=output)

    hint = {"text": ""}  # a one-off message in the toolbar, e.g. after Ctrl-C on an empty line
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event):
        event.current_buffer.insert_text("\n")

    @bindings.add("c-c")
    def _clear_line(event):
        buffer = event.current_buffer
        if buffer.text:
            buffer.reset()
        else:
            hint["text"] = "Ctrl-D or /quit leaves"

    def toolbar():
        s, stats = session.settings, session.last_reply
        speed = f"{stats.chars_per_second:.0f} chars/s" if stats else "- chars/s"
        fields = [("", f" {session.checkpoint_name} "), ("", "│"),
                  ("", f" temp {s.temp:g}  top-k {s.top_k or 'off'}  top-p {s.top_p:g}  len {s.length} "),
                  ("", "│"), ("", f" {speed} ")]
        if hint["text"]:
            fields += [("", "│"), ("class:bottom-toolbar.key", f" {hint['text']} ")]
            hint["text"] = ""
        return fields

    history, history_warning = open_history(history_option)
    prompt = PromptSession(history=history, completer=make_completer(), complete_while_typing=True,
                           key_bindings=bindings, bottom_toolbar=toolbar, style=style,
                           prompt_continuation=lambda width, line, wrap: "." * (width - 1) + " ",
                           input=input, output=output)
    output = prompt.app.output
    reply_style = style.get_attrs_for_style_str("class:reply")
    say(f"chargen chat · {session.checkpoint_name} · {session.model_summary()}")
    say("Type and press Enter; the reply streams back. /help lists commands; Alt-Enter is a new line; "
        "Ctrl-C stops a reply; Ctrl-D quits.")
    for note in (history_warning, session.stop_warning()):
        if note:
            say(f"note: {note}")
    while True:
        try:
            line = prompt.prompt(PROMPT)
        except EOFError:
            return 0
        except KeyboardInterrupt:  # only if a key binding did not catch it first
            continue
        if is_command(line):
            result = session.run_command(line)
            if result.quit:
                return 0
            if result.message:
                say(("error: " if result.error else "") + result.message, "error" if result.error else "note")
            continue
        if not line.strip():
            continue
        text = line[1:] if line.startswith("//") else line
        try:
            session.check_input(text)
        except ChargenError as exc:
            say(f"error: {exc}", "error")
            continue
        label = session.bot_prefix.lstrip()
        if label:
            say(label, "label", end="")
        # The reply goes straight to prompt-toolkit's Output, one piece at a time: cheaper per
        # character than print_formatted_text, and Output.write still neuters escape codes the
        # model might generate.
        output.set_attributes(reply_style, output.get_default_color_depth())
        try:
            with sigint_as_flag() as interrupted:
                for piece in session.reply(text, interrupted.is_set):
                    output.write(piece)
                    output.flush()
        finally:
            output.reset_attributes()
            output.flush()
        say("" if session.last_reply.ended_by != "interrupt" else "  [stopped]")
