"""The ``chargen`` command line: a thin layer over the Python API.

Every user mistake ends in one line on stderr and exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ..errors import ChargenError
from ..limits import MAX_LAG
from ..text.builtin import CORPORA
from ..version import __version__
from . import commands
from .options import (EXIT_USAGE, ArgumentParser, add_device_argument, add_sampling_arguments,
                      add_train_arguments)
from .completion import add_completion_parser, completion_script
from .evaluate import add_eval_arguments
from .repl import add_repl_arguments, run_repl
from .sampling import add_sample_io_arguments
from .plot import add_plot_arguments, plot
from .trackers import TRACKERS
from .viz import add_viz_arguments, viz
from .models import add_models_arguments, models
from .serving import add_serve_arguments, serve

DEFAULT_CORPUS_MB = 4.0
DEFAULT_LAG = 100


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="chargen", description=(
        "Train character-level LSTM language models on any text, then sample from them or chat "
        "with them. Run 'chargen COMMAND --help' for each command's options."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"chargen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for add_parser in PARSERS:
        add_parser(subcommands)
    return parser


def add_train_parser(subcommands) -> None:
    train = subcommands.add_parser("train", help="train a model on text files (live dashboard)",
                                   description="Train a model. Checkpoints (best and last), metrics.jsonl "
                                   "and the token cache go under the run directory.")
    add_train_arguments(train)
    train.add_argument("--plain", action="store_true", help="plain log lines instead of the live dashboard")
    train.add_argument("--log", action="append", choices=TRACKERS, metavar="TRACKER",
                       help="also log to a tracker in the run directory: tensorboard (event files for "
                       "tensorboard --logdir RUN; pip install 'chargen[tensorboard]') or csv (metrics.csv); "
                       "repeat for both")


def add_checkpoint_argument(parser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="a run directory (its best checkpoint), a checkpoint "
                        "file or a built-in model's name (chargen models)")


def add_sample_parser(subcommands) -> None:
    sample = subcommands.add_parser("sample", help="generate text from a checkpoint, streamed as it comes",
                                    description="Generate text. CKPT is a run directory (its best checkpoint) "
                                    "or a checkpoint file.")
    add_checkpoint_argument(sample)
    add_sample_io_arguments(sample)
    add_sampling_arguments(sample)
    sample.add_argument("--num-samples", type=int, default=1, help="independent samples, generated together (default: 1)")
    sample.add_argument("--beam", type=int, default=0, help="beam search of this width instead of sampling (default: 0 = off)")
    add_device_argument(sample)


def add_eval_parser(subcommands) -> None:
    evaluate = subcommands.add_parser("eval", help="loss of a checkpoint on held-out text",
                                      description="Report the model's loss on text files: nats/char, bits/char, perplexity. "
                                      "The text is streamed with the state carried through it; --windows and "
                                      "--dynamic add nanoGPT's windowed and the dynamic-evaluation figures.")
    add_checkpoint_argument(evaluate)
    evaluate.add_argument("text", nargs="+", help="text files or directories")
    evaluate.add_argument("--encoding", default="utf-8", help="text encoding of the files (default: utf-8)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    add_eval_arguments(evaluate)
    add_device_argument(evaluate)


def add_info_parser(subcommands) -> None:
    info = subcommands.add_parser("info", help="describe a checkpoint",
                                  description="Show a checkpoint's config, vocabulary, size and training summary.")
    add_checkpoint_argument(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--toml", action="store_true",
                      help="print the run's full training config as TOML, for chargen train --config")


def add_repl_parser(subcommands) -> None:
    repl = subcommands.add_parser("repl", aliases=["chat"], help="chat with a model in the terminal",
                                  description="Interactive chat: type a prompt, the model's reply streams back. "
                                  "The model's memory is its recurrent state, carried from turn to turn.")
    add_repl_arguments(repl)


def add_corpus_parser(subcommands) -> None:
    corpus = subcommands.add_parser("corpus", help="build a corpus that needs no download",
                                    description="Write a built-in corpus to a text file. " +
                                    "; ".join(f"{k}: {v}" for k, v in CORPORA.items()))
    corpus.add_argument("name", choices=sorted(CORPORA), help="which corpus")
    corpus.add_argument("-o", "--out", help="output file (default: corpora/<name>.txt)")
    corpus.add_argument("--max-mb", type=float, default=DEFAULT_CORPUS_MB,
                        help=f"size cap in MB (default: {DEFAULT_CORPUS_MB:g})")
    corpus.add_argument("--lag", type=int, default=DEFAULT_LAG,
                        help=f"long-lag only: distractors between cue and recall, 0 to {MAX_LAG:,} "
                        f"(default: {DEFAULT_LAG})")


def command_parser(name: str, help: str, description: str, add_arguments):
    """A parser adder for a command whose options live in its own module (``add_arguments``)."""
    def add_parser(subcommands) -> None:
        add_arguments(subcommands.add_parser(name, help=help, description=description))
    return add_parser


add_plot_parser = command_parser(
    "plot", "plot the loss curves of runs (terminal, PNG, SVG or PDF)",
    "Draw train and validation loss of one or more runs from their metrics.jsonl, the best validation point "
    "marked: in the terminal, or with --out into a file (needs matplotlib: pip install 'chargen[plot]').",
    add_plot_arguments)
add_viz_parser = command_parser(
    "viz", "see inside a model: its cells and gates over a text, in a web page",
    "Write one self-contained HTML page (works offline) showing a text one character per cell, coloured by a "
    "layer's cell state, hidden state or gates, or by the model's surprisal; it lists the units that follow "
    "simple properties of the text (quotes, brackets, line position, indentation).",
    add_viz_arguments)
add_serve_parser = command_parser(
    "serve", "serve a model over HTTP: OpenAI-style API and a chat page",
    "Serve a model over HTTP: an OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models), a "
    "chat page at / and /health. Needs the serve extra: pip install 'chargen[serve]'.",
    add_serve_arguments)
add_models_parser = command_parser(
    "models", "list the built-in models (usable by name as CKPT)",
    "List the models that ship with chargen: name, size, corpus and validation loss. Use a name wherever a "
    "checkpoint is expected.",
    add_models_arguments)


# Each command: the function that adds its parser, in the order --help lists them.
PARSERS = [add_train_parser, add_sample_parser, add_eval_parser, add_info_parser, add_repl_parser, add_corpus_parser,
           add_plot_parser, add_viz_parser, add_serve_parser, add_models_parser, add_completion_parser]


def completion(args) -> int:
    sys.stdout.write(completion_script(build_parser(), args.shell))
    return 0


COMMANDS = {"train": commands.train, "sample": commands.sample, "eval": commands.evaluate, "info": commands.info,
            "repl": run_repl, "chat": run_repl, "corpus": commands.corpus, "plot": plot, "viz": viz,
            "serve": serve, "models": models, "completion": completion}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    debug = args.debug or bool(os.environ.get("CHARGEN_DEBUG"))
    try:
        return COMMANDS[args.command](args)
    except ChargenError as exc:
        if debug:
            raise
        print(f"chargen {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (e.g. `chargen sample ... | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the environment said no (disk full, permissions): a line, not a trace
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"chargen {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        if debug:
            raise
        print(f"chargen {args.command}: error: out of memory; try a smaller model, batch or text",
              file=sys.stderr)
        return EXIT_USAGE
