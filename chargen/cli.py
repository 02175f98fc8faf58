"""The ``chargen`` command line: a thin layer over the Python API.

Every user mistake ends in one line on stderr and exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
from dataclasses import fields
from pathlib import Path

from . import __version__
from .errors import ChargenError

EXIT_USAGE = 2
MAX_BEAM = 1000
MAX_SAMPLE_LENGTH = 10_000_000
MAX_CORPUS_MB = 1_000_000  # a terabyte: more is a typo


def check_seed(seed: int | None, option: str = "--seed") -> None:
    """torch seeds are 64-bit: say so instead of failing deep inside torch."""
    if seed is not None and not -(1 << 63) <= seed < 1 << 64:
        raise ChargenError(f"{option} {seed}: must be a whole number that fits in 64 bits")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that points at --help."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``2h`` or ``1h30m``."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 90s, 5m, 2h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be more than 0")
    return total


def auto_or_number(option: str, example: str):
    """An argparse type for an option that takes ``auto`` or a number (range-checked with the
    other options)."""
    def parse(text: str) -> float | str:
        if text.strip().lower() == "auto":
            return "auto"
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {option} {text!r}: use auto or a number such as {example}") from None
    return parse


def auto_or_whole(option: str, example: str):
    """An argparse type for an option that takes ``auto`` or a whole number."""
    def parse(text: str) -> int | str:
        if text.strip().lower() == "auto":
            return "auto"
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {option} {text!r}: use auto or a whole number such as {example}") from None
    return parse


def unescape(text: str | None) -> str | None:
    r"""Turn the escapes a shell makes hard to type (\n, \t, \r, \\) into the characters."""
    if text is None:
        return None
    return re.sub(r"\\([ntr\\])", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], text)


# Help for every TrainConfig field; the defaults come from the dataclass itself.
TRAIN_OPTIONS = {
    "cell": ("recurrent cell: lstm, gru, rnn (plain tanh RNN) or lstm-peephole (gates see the cell "
             "state; several times slower: no fused kernel)", str),
    "layers": ("number of stacked recurrent layers", int),
    "hidden": ("hidden size of each layer (also the embedding size): a number, or auto for 512, "
               "or narrower (down to 256) when --max-time is too short to train 512 well (README)",
               auto_or_whole("hidden", "512")),
    "dropout": ("dropout between layers and on the output: a rate, 0 to disable, or auto to grow "
                "it with the number of epochs the budget allows (none up to 7, 0.2 at 10, 0.3 at 20)",
                auto_or_number("dropout", "0.2")),
    "tie_weights": ("share the input embedding with the output layer", None),
    "skip_connections": ("feed every layer's output to the output layer, not only the top one's "
                         "(Graves 2013; README)", None),
    "tokenizer": ("char (code points), byte (UTF-8 bytes) or sentencepiece (subwords)", str),
    "vocab_size": ("vocabulary size, for --tokenizer sentencepiece", int),
    "normalize": ("Unicode normalization for the char tokenizer: NFC or NFKC (default: none)", str),
    "encoding": ("text encoding of the corpus files", str),
    "seq_len": ("tokens per truncated-BPTT window (state is carried across windows): a number, or auto "
                "for 64, or 32 when --max-time lets the model read the text at most 6.5 times (README)",
                auto_or_whole("seq len", "64")),
    "batch_size": ("parallel streams per step", int),
    "lr": ("peak learning rate (AdamW): a number, or auto to raise it with the number of epochs "
           "the budget allows (5e-3 up to 5, 7e-3 from 10)", auto_or_number("lr", "5e-3")),
    "schedule": ("how the learning rate falls after the warm-up, over the whole budget: cosine or "
                 "linear (README)", str),
    "min_lr_frac": ("the schedule ends at lr times this", float),
    "warmup_steps": ("linear warm-up steps", int),
    "weight_decay": ("AdamW weight decay on weight matrices: a number, or auto to grow it with the "
                     "number of epochs the budget allows (0.3 up to 5, 0.6 at 20)",
                     auto_or_number("weight decay", "0.3")),
    "grad_clip": ("clip the global gradient norm to this", float),
    "max_steps": ("stop after this many steps", int),
    "max_time": ("wall-time budget from reading the corpus to the final evaluation and checkpoint, e.g. "
                 "90s, 5m, 2h", parse_duration),
    "epochs": ("stop after this many passes over the corpus (10 if no limit is given)", float),
    "val_frac": ("fraction of the corpus (its end) held out for validation", float),
    "eval_every": ("evaluate on the validation split and checkpoint every N steps, or auto: every "
                   "1,638,400 training tokens (800 steps of batch 32 x seq 64, 1,600 of 32 x 32)",
                   auto_or_whole("eval every", "400")),
    "eval_tokens": ("validation tokens scored per evaluation, spread over the split (0 = all of it)", int),
    "log_every": ("write a metrics.jsonl line every N steps", int),
    "preview_length": ("tokens of sample shown at each evaluation (0 disables)", int),
    "out": ("run directory (default: checkpoints/<corpus>-<date>-<time>)", str),
    "seed": ("random seed: same seed, same run", int),
    "device": ("auto, cpu, cuda or mps (auto picks the best present)", str),
    "precision": ("auto (bf16 autocast on GPUs, and on CPUs with native bf16 where a few timed steps show it faster; else fp32), fp32 or bf16", str),
    "compile": ("torch.compile the model (helps on GPUs; slow start)", None),
    "init_from": ("start from this checkpoint's weights (fine-tuning; fresh optimizer)", str),
    "extend_vocab": ("with --init-from: grow the vocabulary to take the corpus's new characters", None),
}


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    parser.add_argument("corpus", nargs="*", help="text files or directories of text files")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory where it stopped")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        help_text, kind = TRAIN_OPTIONS[f.name]
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if kind is None:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{help_text} (default: {'on' if default else 'off'})")
        else:
            shown = "none" if default is None else default
            parser.add_argument(flag, type=kind, default=default, metavar=f.name.upper(),
                                help=f"{help_text} (default: {shown})")


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    from .sampling import SamplingSettings

    d = SamplingSettings()
    parser.add_argument("--temp", type=float, default=d.temp, help=f"temperature; 0 always takes the most likely token (default: {d.temp})")
    parser.add_argument("--top-k", type=int, default=d.top_k, help="sample only among the k most likely tokens (default: 0 = off)")
    parser.add_argument("--top-p", type=float, default=d.top_p, help="sample only from the smallest set holding this probability (default: 1.0 = off)")
    parser.add_argument("--length", type=int, default=d.length, help=f"tokens to generate (default: {d.length})")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed: same seed, same text (default: random)")
    parser.add_argument("--stop", default=d.stop, help=r"stop when this string is generated; \n and \t are understood (default: none)")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="chargen", description=(
        "Train character-level LSTM language models on any text, then sample from them or chat "
        "with them. Run 'chargen COMMAND --help' for each command's options."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"chargen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)

    train = commands.add_parser("train", help="train a model on text files (live dashboard)",
                                description="Train a model. Checkpoints (best and last), metrics.jsonl "
                                "and the token cache go under the run directory.")
    _add_train_arguments(train)
    train.add_argument("--plain", action="store_true", help="plain log lines instead of the live dashboard")

    sample = commands.add_parser("sample", help="generate text from a checkpoint, streamed as it comes",
                                 description="Generate text. CKPT is a run directory (its best checkpoint) or a checkpoint file.")
    sample.add_argument("checkpoint", metavar="CKPT")
    sample.add_argument("--prime", default="", help=r"text to start from (printed first); \n is understood")
    _add_sampling_arguments(sample)
    sample.add_argument("--num-samples", type=int, default=1, help="independent samples, generated together (default: 1)")
    sample.add_argument("--beam", type=int, default=0, help="beam search of this width instead of sampling (default: 0 = off)")
    sample.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")

    evaluate = commands.add_parser("eval", help="loss of a checkpoint on held-out text",
                                   description="Report the model's loss on text files: nats/char, bits/char, perplexity.")
    evaluate.add_argument("checkpoint", metavar="CKPT")
    evaluate.add_argument("text", nargs="+", help="text files or directories")
    evaluate.add_argument("--encoding", default="utf-8", help="text encoding of the files (default: utf-8)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")

    info = commands.add_parser("info", help="describe a checkpoint", description="Show a checkpoint's config, vocabulary, size and training summary.")
    info.add_argument("checkpoint", metavar="CKPT")
    info.add_argument("--json", action="store_true", help="print one JSON object")

    from .repl import add_repl_arguments
    repl = commands.add_parser("repl", aliases=["chat"], help="chat with a model in the terminal",
                               description="Interactive chat: type a prompt, the model's reply streams back. "
                               "The model's memory is its recurrent state, carried from turn to turn.")
    add_repl_arguments(repl)

    from .corpora import CORPORA
    corpus = commands.add_parser("corpus", help="build a corpus that needs no download",
                                 description="Write a built-in corpus to a text file. " +
                                 "; ".join(f"{k}: {v}" for k, v in CORPORA.items()))
    corpus.add_argument("name", choices=sorted(CORPORA))
    corpus.add_argument("-o", "--out", help="output file (default: corpora/<name>.txt)")
    corpus.add_argument("--max-mb", type=float, default=4.0, help="size cap in MB (default: 4)")
    corpus.add_argument("--lag", type=int, default=100, help="long-lag only: distractors between cue and recall (default: 100)")
    return parser


# ---- commands --------------------------------------------------------------------------------

def cmd_train(args) -> int:
    from .dashboard import Dashboard
    from .train import LAST_NAME, TrainConfig, Trainer, TrainingAborted, TrainingInterrupted

    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    if not args.corpus and not args.resume:
        raise ChargenError("chargen train: give a corpus (text files or directories), or --resume RUN")
    if args.resume and args.out:
        raise ChargenError(f"--out {args.out}: a resumed run stays in its own directory ({args.resume}); "
                           "drop --out, or start a new run from its weights with --init-from")
    from .distributed import is_main_process
    stopped = None
    # Under torchrun only rank 0 reports; the other ranks must not draw a dashboard of their own.
    with Dashboard(live=False if args.plain or not is_main_process() else None) as dashboard:
        trainer = Trainer(TrainConfig(**options), args.corpus, on_event=dashboard, resume=args.resume)
        try:
            trainer.run()
        except (TrainingInterrupted, TrainingAborted) as stop:
            stopped = stop
    # Said after the live panel has closed, so it is the last thing on the screen.
    if isinstance(stopped, TrainingInterrupted):
        dashboard.console.print(f"[yellow]stopped at step {stopped.step}; checkpoint saved to "
                                f"{stopped.run_dir / LAST_NAME}. Resume with:[/] chargen train --resume "
                                f"{stopped.run_dir}", soft_wrap=True)
        return 128 + (stopped.signal_number or signal.SIGINT)
    if isinstance(stopped, TrainingAborted):
        last = stopped.run_dir / LAST_NAME
        kept = (f"the last checkpoint, {last}, is intact; resume with: chargen train --resume {stopped.run_dir}"
                if last.exists() else "no checkpoint had been saved yet")
        dashboard.console.print(f"[red]aborted without saving;[/] {kept}", soft_wrap=True)
        return 128 + stopped.signal_number
    return 0


def cmd_sample(args) -> int:
    from .api import load

    if args.num_samples < 1 or args.num_samples > 10_000:
        raise ChargenError(f"--num-samples {args.num_samples}: must be between 1 and 10000")
    if not 0 <= args.beam <= MAX_BEAM:
        raise ChargenError(f"--beam {args.beam}: must be between 0 (off) and {MAX_BEAM}")
    if not 0 <= args.length <= MAX_SAMPLE_LENGTH:
        raise ChargenError(f"--length {args.length}: must be between 0 and {MAX_SAMPLE_LENGTH:,}")
    check_seed(args.seed)
    model = load(args.checkpoint, device=args.device)
    prime = unescape(args.prime)
    settings = dict(temp=args.temp, top_k=args.top_k, top_p=args.top_p, length=args.length,
                    seed=args.seed, stop=unescape(args.stop))
    sampler = model.sampler(args.num_samples)
    sampler.check_text(prime, "--prime")
    from .sampling import SamplingSettings
    options = SamplingSettings(**settings).validate()
    out = sys.stdout
    if args.beam:
        out.write(prime + model.generate(prime, beam=args.beam, **settings) + "\n")
        return 0
    sampler.feed(prime)
    if args.num_samples == 1:
        out.write(prime)
        out.flush()
        for piece in sampler.stream(options):
            out.write(piece)
            out.flush()
        out.write("\n")
    else:
        for i, text in enumerate(sampler.generate(options)):
            out.write(f"--- sample {i + 1} ---\n{prime}{text}\n")
    out.flush()
    return 0


def cmd_eval(args) -> int:
    from .api import load
    from .data import find_text_files, iter_text

    model = load(args.checkpoint, device=args.device)
    files = find_text_files(args.text)
    text = "".join(iter_text(files, args.encoding))
    unknown = model.tokenizer.unknown_chars(text)
    if unknown:
        from .errors import describe_chars
        raise ChargenError(f"{', '.join(map(str, files))}: has characters the model never saw: "
                           f"{describe_chars(unknown)}")
    result = model.evaluate(text)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{result.nats_per_char:.4f} nats/char  {result.bits_per_char:.4f} bits/char  "
              f"perplexity {result.perplexity:.3f}  ({result.chars:,} chars, {result.tokens:,} tokens)")
    return 0


def checkpoint_info(path) -> dict:
    """Everything ``chargen info`` shows, as a dict."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    summary = ckpt.summary
    tok = ckpt.tokenizer
    best = summary.get("best_val_loss")
    groups = summary.get("optimizer_param_groups")
    matrices = groups[0] if isinstance(groups, list) and groups and isinstance(groups[0], dict) else {}
    return {
        "path": str(ckpt.path),
        "file_bytes": ckpt.path.stat().st_size,
        "model": ckpt.config.to_dict(),
        "parameters": ckpt.model.num_parameters(),
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "vocab": "".join(tok.chars) if tok.kind == "char" else None,
        "steps": summary.get("step"),
        "epochs": summary.get("epoch"),
        "train_seconds": summary.get("elapsed"),
        "best_val_loss": best,
        "best_val_bpc": best / math.log(2) if isinstance(best, (int, float)) else None,
        "precision": summary.get("precision"),
        "corpus": summary.get("corpus"),
        "train_config": summary.get("train_config"),
        "lr": summary.get("peak_lr"),  # the peak rate used: --lr, or what auto chose
        "weight_decay": matrices.get("weight_decay"),  # likewise
        "saved_at": summary.get("saved_at"),
    }


def cmd_info(args) -> int:
    info = checkpoint_info(args.checkpoint)
    if args.json:
        print(json.dumps(info))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_column(style="bold cyan", justify="right")
    table.add_column(overflow="fold")
    m = info["model"]
    table.add_row("checkpoint", f"{info['path']} ({info['file_bytes'] / 1e6:.1f} MB)")
    table.add_row("model", f"{m['layers']}x{m['hidden']} {m['cell']}, dropout {m['dropout']}, "
                  f"tied weights {'yes' if m['tie_weights'] else 'no'}, "
                  f"skip connections {'yes' if m['skip_connections'] else 'no'}")
    table.add_row("parameters", f"{info['parameters']:,}")
    table.add_row("tokenizer", f"{info['tokenizer']}, vocab {info['vocab_size']}")
    if info["vocab"] is not None:
        table.add_row("vocab", repr(info["vocab"]))
    table.add_row("trained", f"{info['steps']} steps, {info['epochs'] or 0:.2f} epochs, "
                  f"{info['train_seconds'] or 0:.0f}s, {info['precision']}")
    best = info["best_val_loss"]
    table.add_row("best val loss", f"{best:.4f} nats/char ({info['best_val_bpc']:.4f} bits/char)" if best is not None else "-")
    if info["corpus"]:
        table.add_row("corpus", ", ".join(info["corpus"][:5]) + (" ..." if len(info["corpus"]) > 5 else ""))
    cfg = info["train_config"] or {}
    if cfg:
        used = {**cfg, **{k: info[k] for k in ("lr", "weight_decay") if info[k] is not None}}
        table.add_row("training", ", ".join(f"{k}={used[k]}" for k in ("seq_len", "batch_size", "lr", "weight_decay",
                                                                       "grad_clip", "seed") if k in used))
    Console().print(table)
    return 0


def cmd_corpus(args) -> int:
    from .corpora import build_corpus

    if not (isinstance(args.max_mb, float) and math.isfinite(args.max_mb) and 0 < args.max_mb <= MAX_CORPUS_MB):
        raise ChargenError(f"--max-mb {args.max_mb}: must be a number > 0 and at most {MAX_CORPUS_MB:,}")
    out = build_corpus(args.name, args.out or Path("corpora") / f"{args.name}.txt", int(args.max_mb * (1 << 20)),
                       lag=args.lag)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_repl(args) -> int:
    from .repl import run_repl

    return run_repl(args)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "info": cmd_info,
            "repl": cmd_repl, "chat": cmd_repl, "corpus": cmd_corpus}


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
