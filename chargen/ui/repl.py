"""The face of ``chargen repl CKPT`` (alias ``chargen chat``) over a ``ChatSession``.

A prompt-toolkit prompt (history file, key bindings, slash command completion, bottom toolbar)
when stdin and stdout are a terminal, or a plain line-by-line loop when they are not, so that the
REPL can be scripted. The conversation itself lives in ``chat.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from ..api import load
from ..compat import count_spacing_marks_as_one_column
from ..devices import one_thread_for_single_steps
from ..errors import ChargenError
from ..generation.defaults import read_defaults
from ..generation.settings import SamplingSettings
from .chat import COMMAND_NAMES, COMMANDS, DEFAULT_STOP, ChatSession, is_command
from .options import add_device_argument, add_sampling_arguments, sampling_settings, unescape


# ---- command line ----------------------------------------------------------------------------

def default_history_path() -> Path:
    """Where prompt history lives: $XDG_STATE_HOME/chargen/history, else ~/.local/state/..."""
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state_home) / "chargen" / "history"


def add_repl_arguments(parser) -> None:
    """The options of ``chargen repl`` / ``chargen chat``."""
    parser.add_argument("checkpoint", metavar="CKPT", help="a run directory (its best checkpoint), a checkpoint "
                        "file or a built-in model's name (chargen models)")
    # In a chat a reply ends at a blank line unless told otherwise (`sample` has no default stop).
    add_sampling_arguments(parser, stop_default=DEFAULT_STOP,
                           stop_help=r"a reply ends when the model writes this; repeat for several; \n and \t "
                                     r"are understood (default: \n\n, a blank line; '' for none)",
                           unknown_default="skip")
    parser.add_argument("--user-prefix", default="", metavar="TEXT",
                        help=r"fed before each of your turns, e.g. '\n\nYOU:\n' (default: none)")
    parser.add_argument("--bot-prefix", default="", metavar="TEXT",
                        help=r"fed after each of your turns, before the reply, e.g. '\n\nROMEO:\n' (default: none)")
    parser.add_argument("--history", metavar="FILE", default=None,
                        help=f"prompt history file; '' keeps none (default: {default_history_path()})")
    parser.add_argument("--blocks", action="store_true",
                        help="when stdin is not a terminal: a prompt is a block of lines ended by a blank "
                        "line (default: one prompt per line)")
    add_device_argument(parser)


def run_repl(args) -> int:
    """``chargen repl``: a prompt-toolkit chat on a terminal, a line-by-line loop on pipes."""
    if args.temp and len(args.temp) > 1:
        raise ChargenError(f"--temp {','.join(f'{t:g}' for t in args.temp)}: a chat takes one temperature")
    sampling_settings(args, empty_stop_is_none=True)  # bad values are reported before a model is loaded
    model = load(args.checkpoint, device=args.device)
    one_thread_for_single_steps(model.device)
    # The run's stored defaults (a chat's stop is a blank line unless they say otherwise), then the options.
    base = SamplingSettings.from_kwargs(model.defaults, stop=read_defaults(model.path).get("stop", DEFAULT_STOP))
    settings = sampling_settings(args, empty_stop_is_none=True, base=base)
    session = ChatSession(model, settings, user_prefix=unescape(args.user_prefix),
                          bot_prefix=unescape(args.bot_prefix), device=args.device, unknown=args.unknown)
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

    Exit code 0, or 1 when some prompt or command failed (each failure says why on ``err``; the
    prompts after it are still answered).
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
            text, warning = session.prepare(prompt[1:] if prompt.startswith("//") else prompt)
            if warning:
                print(f"chargen repl: warning: {warning}", file=err)
            for piece in session.reply(text):
                out.write(piece)
                out.flush()
        except ChargenError as exc:
            print(f"chargen repl: error: {exc}", file=err)
            failed = True
            continue
        out.write("\n")
        out.flush()
    return 1 if failed else 0


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


def run_terminal(session: ChatSession, history_option: str | None, input=None, output=None) -> int:
    """The interactive chat. Returns 0 on Ctrl-D or /quit.

    ``input`` and ``output`` are prompt-toolkit's (default: the terminal); tests pass a pipe input
    and a dummy output.
    """
    import prompt_toolkit.utils

    count_spacing_marks_as_one_column(prompt_toolkit.utils)  # what the terminal draws: see compat
    return TerminalChat(session, history_option, input, output).run()


class TerminalChat:
    """The prompt-toolkit front end: prompt, toolbar and key bindings, replies streamed in colour."""

    def __init__(self, session: ChatSession, history_option: str | None, input=None, output=None):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.styles import Style

        self.session = session
        self.style = Style.from_dict(STYLE_RULES)
        self.hint = ""  # a one-off message in the toolbar, e.g. after Ctrl-C on an empty line
        history, self.history_warning = open_history(history_option)
        self.prompt = PromptSession(history=history, completer=make_completer(), complete_while_typing=True,
                                    key_bindings=self._key_bindings(), bottom_toolbar=self._toolbar,
                                    style=self.style, input=input, output=output,
                                    prompt_continuation=lambda width, line, wrap: "." * (width - 1) + " ")
        self.output = self.prompt.app.output

    def _key_bindings(self):
        from prompt_toolkit.key_binding import KeyBindings

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
                self.hint = "Ctrl-D or /quit leaves"

        return bindings

    def _toolbar(self):
        s, stats = self.session.settings, self.session.last_reply
        speed = f"{stats.chars_per_second:.0f} chars/s" if stats else "- chars/s"
        fields = [("", f" {self.session.checkpoint_name} "), ("", "│"),
                  ("", f" temp {s.temp:g}  top-k {s.top_k or 'off'}  top-p {s.top_p:g}  len {s.length} "),
                  ("", "│"), ("", f" {speed} ")]
        if self.hint:
            fields += [("", "│"), ("class:bottom-toolbar.key", f" {self.hint} ")]
            self.hint = ""
        return fields

    def say(self, text: str, cls: str = "note", end: str = "\n") -> None:
        from prompt_toolkit import print_formatted_text
        from prompt_toolkit.formatted_text import FormattedText

        print_formatted_text(FormattedText([(f"class:{cls}", text)]), style=self.style, end=end, output=self.output)

    def run(self) -> int:
        session = self.session
        self.say(f"chargen chat · {session.checkpoint_name} · {session.model_summary()}")
        self.say("Type and press Enter; the reply streams back. /help lists commands; Alt-Enter is a new line; "
                 "Ctrl-C stops a reply; Ctrl-D quits.")
        for note in (self.history_warning, session.stop_warning()):
            if note:
                self.say(f"note: {note}")
        while True:
            try:
                line = self.prompt.prompt(PROMPT)
            except EOFError:
                return 0
            except KeyboardInterrupt:  # only if a key binding did not catch it first
                continue
            if is_command(line):
                result = session.run_command(line)
                if result.quit:
                    return 0
                if result.message:
                    self.say(("error: " if result.error else "") + result.message,
                             "error" if result.error else "note")
            elif line.strip():
                self.answer(line[1:] if line.startswith("//") else line)

    def answer(self, text: str) -> None:
        """Stream the model's reply to ``text``; Ctrl-C stops it at a token boundary."""
        session = self.session
        try:
            text, warning = session.prepare(text)
        except ChargenError as exc:
            self.say(f"error: {exc}", "error")
            return
        if warning:
            self.say(f"note: {warning}")
        label = session.bot_prefix.lstrip()
        if label:
            self.say(label, "label", end="")
        # The reply goes straight to prompt-toolkit's Output, one piece at a time: cheaper per
        # character than print_formatted_text, and Output.write still neuters escape codes the
        # model might generate.
        output = self.output
        output.set_attributes(self.style.get_attrs_for_style_str("class:reply"), output.get_default_color_depth())
        try:
            with sigint_as_flag() as interrupted:
                for piece in session.reply(text, interrupted.is_set):
                    output.write(piece)
                    output.flush()
        finally:
            output.reset_attributes()
            output.flush()
        self.say("" if session.last_reply.ended_by != "interrupt" else "  [stopped]")
