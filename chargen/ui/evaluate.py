"""``chargen eval``: the streamed figure, and beside it the windowed and dynamic ones on request.

The files are read, encoded and scored a piece at a time (``evaluation.evaluate_stream``), so a
held-out file of gigabytes is evaluated in bounded memory; on a terminal a progress bar shows how
far it got. See docs/evaluation.md for what each figure measures.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

from ..api import load
from ..dynamic import DYNAMIC_DECAY, DYNAMIC_LR, DYNAMIC_SEGMENT, evaluate_dynamic
from ..errors import ChargenError
from ..evaluation import EvalResult, encode_chunks, evaluate_stream
from ..limits import MAX_LR, MAX_WHOLE
from ..text.files import file_size, find_text_files, iter_text


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--windows", type=int, metavar="N",
        help="also score the text as nanoGPT does: consecutive non-overlapping windows of N tokens, each "
             "from a fresh state with no context before it (nanoGPT uses random windows of 256)")
    add("--dynamic", action="store_true",
        help="also score it with dynamic evaluation: the model keeps learning on the text as it reads "
             "it (in memory only: the checkpoint is not changed)")
    add("--dynamic-lr", type=float, default=DYNAMIC_LR, metavar="LR",
        help=f"dynamic evaluation's step size, per weight in units of its gradient's RMS (default: {DYNAMIC_LR})")
    add("--dynamic-decay", type=float, default=DYNAMIC_DECAY, metavar="D",
        help=f"fraction of the way back to the trained weights per step, 0-1 (default: {DYNAMIC_DECAY})")
    add("--dynamic-segment", type=int, default=DYNAMIC_SEGMENT, metavar="N",
        help=f"tokens scored between two dynamic steps (default: {DYNAMIC_SEGMENT})")


def check_eval_options(args) -> None:
    if args.windows is not None and not 1 <= args.windows <= MAX_WHOLE:
        raise ChargenError(f"--windows {args.windows}: give a window length from 1 to {MAX_WHOLE:,} tokens (nanoGPT: 256)")
    if not 1 <= args.dynamic_segment <= MAX_WHOLE:
        raise ChargenError(f"--dynamic-segment {args.dynamic_segment}: give 1 to {MAX_WHOLE:,} tokens")
    if not 0 <= args.dynamic_lr <= MAX_LR:
        raise ChargenError(f"--dynamic-lr {args.dynamic_lr}: give a rate from 0 to {MAX_LR}")
    if not 0 <= args.dynamic_decay <= 1:
        raise ChargenError(f"--dynamic-decay {args.dynamic_decay}: give a fraction from 0 to 1")


@contextmanager
def progress_bar(total: int, show: bool):
    """``start(label)`` -> a callback taking the characters done; a rich bar on stderr, or nothing."""
    if not show:
        yield lambda label: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        def start(label: str):
            task = progress.add_task(label, total=max(total, 1))  # bytes: about the characters
            return lambda chars: progress.update(task, completed=min(chars, total))
        yield start


def describe(result: EvalResult) -> str:
    return (f"{result.nats_per_char:.4f} nats/char  {result.bits_per_char:.4f} bits/char  "
            f"perplexity {result.perplexity:.3f}  ({result.chars:,} chars, {result.tokens:,} tokens)")


def evaluate(args) -> int:
    check_eval_options(args)
    model = load(args.checkpoint, device=args.device)
    files = find_text_files(args.text)
    what = ", ".join(map(str, files))

    def pieces():
        return encode_chunks(iter_text(files, args.encoding), model.tokenizer, what)

    dynamic = None
    with progress_bar(sum(file_size(f) for f in files), sys.stderr.isatty()) as start:
        streamed, windowed = evaluate_stream(model.model, pieces(), model.tokenizer, window=args.windows,
                                             on_progress=start("scoring"))
        if args.dynamic:
            dynamic = evaluate_dynamic(model.model, pieces(), model.tokenizer, lr=args.dynamic_lr,
                                       decay=args.dynamic_decay, segment=args.dynamic_segment,
                                       on_progress=start("dynamic evaluation"))
    if args.json:
        out = streamed.to_dict()
        if windowed:
            out["windowed"] = {**windowed.to_dict(), "window": args.windows, "windows": "non-overlapping"}
        if dynamic:
            out["dynamic"] = {**dynamic.to_dict(), "lr": args.dynamic_lr, "decay": args.dynamic_decay,
                              "segment": args.dynamic_segment}
        print(json.dumps(out))
    elif not windowed and not dynamic:
        print(describe(streamed))
    else:
        print(f"streamed       {describe(streamed)}  [context carried through the text]")
        if windowed:
            print(f"windowed {args.windows:<5} {describe(windowed)}  [non-overlapping windows, each from a fresh state]")
        if dynamic:
            print(f"dynamic        {describe(dynamic)}  [learning as it reads: lr {args.dynamic_lr}, "
                  f"decay {args.dynamic_decay}]")
    return 0
