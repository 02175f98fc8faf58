"""Chat-style REPL (placeholder until the REPL lands)."""

from .errors import ChargenError


def add_repl_arguments(parser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT")


def run_repl(args) -> int:
    raise ChargenError("the REPL is not built yet")
