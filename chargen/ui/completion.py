"""``chargen completion bash|zsh|fish``: shell completion generated from the real parser (shtab),
so it always knows every command and option. Checkpoint arguments complete run directories and
``.safetensors`` files."""

from __future__ import annotations

import argparse

from ..errors import ChargenError

SHELLS = ("bash", "zsh", "fish")
# What each argument completes to, by its ``dest``: files, directories or checkpoints.
FILE_ARGS = ("corpus", "text", "prime_file", "out", "config", "history", "init_from")
DIRECTORY_ARGS = ("resume",)
CHECKPOINT_ARGS = ("checkpoint",)
INSTALL_HINT = {
    "bash": "source <(chargen completion bash)   # in ~/.bashrc",
    "zsh": "chargen completion zsh > ~/.zfunc/_chargen   # with fpath+=~/.zfunc before compinit",
    "fish": "chargen completion fish > ~/.config/fish/completions/chargen.fish",
}


def add_completion_parser(subcommands) -> None:
    completion = subcommands.add_parser(
        "completion", help="print a shell completion script (bash, zsh or fish)",
        description="Print a completion script for your shell. " + "; ".join(
            f"{shell}: {hint}" for shell, hint in INSTALL_HINT.items()))
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")


def mark_completions(parser: argparse.ArgumentParser, shtab) -> None:
    """Tell shtab what each argument of ``parser`` and its subcommands completes to."""
    for action in parser._actions:  # argparse has no public walk over a parser's arguments
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                mark_completions(sub, shtab)
        elif action.dest in CHECKPOINT_ARGS:
            action.complete = shtab.glob("*.safetensors")
        elif action.dest in FILE_ARGS:
            action.complete = shtab.FILE
        elif action.dest in DIRECTORY_ARGS:
            action.complete = shtab.DIRECTORY


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    try:
        import shtab
    except ImportError:
        raise ChargenError("needs shtab: pip install 'chargen[completion]'") from None
    mark_completions(parser, shtab)
    return shtab.complete(parser, shell=shell)
