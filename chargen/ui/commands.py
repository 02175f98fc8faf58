"""What each ``chargen`` command does, once its arguments are parsed (``cli.py`` parses them)."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

from ..checkpoint import LAST_NAME, load_checkpoint
from ..evaluation import nats_to_bits
from ..errors import ChargenError
from ..model import ModelConfig
from ..limits import MAX_CORPUS_MB
from ..text.builtin import build_corpus
from .options import train_options


def train(args) -> int:
    from ..training import TrainConfig, Trainer, TrainingAborted, TrainingInterrupted
    from ..training.distributed import is_main_process
    from .dashboard import Dashboard
    from .train_config import merge_config
    from .trackers import Trackers

    options = merge_config(args, train_options(args))
    if not args.corpus and not args.resume:
        raise ChargenError("chargen train: give a corpus (text files or directories), or --resume RUN")
    if args.resume and args.out:
        raise ChargenError(f"--out {args.out}: a resumed run stays in its own directory ({args.resume}); "
                           "drop --out, or start a new run from its weights with --init-from")
    stopped = None
    # Under torchrun only rank 0 reports; the other ranks must not draw a dashboard of their own.
    with (Dashboard(live=False if args.plain or not is_main_process() else None) as dashboard,
          Trackers(args.log if is_main_process() else None) as trackers):
        def on_event(event) -> None:
            dashboard(event)
            trackers(event)

        trainer = Trainer(TrainConfig(**options), args.corpus, on_event=on_event, resume=args.resume)
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


def sample(args) -> int:
    from .sampling import sample as run_sample

    return run_sample(args)


def evaluate(args) -> int:
    from .evaluate import evaluate as run_eval  # streamed, windowed and dynamic figures

    return run_eval(args)


def checkpoint_info(path) -> dict:
    """Everything ``chargen info`` shows, as a dict."""
    ckpt = load_checkpoint(path)
    summary, tok = ckpt.summary, ckpt.tokenizer
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
        "best_val_bpc": nats_to_bits(best) if isinstance(best, (int, float)) else None,
        "precision": summary.get("precision"),
        "corpus": summary.get("corpus"),
        "train_config": summary.get("train_config"),
        "lr": summary.get("peak_lr"),  # the peak rate used: --lr, or what auto chose
        "weight_decay": matrices.get("weight_decay"),  # likewise
        "ar": summary.get("ar"),  # likewise (runs from before --ar/--tar have none)
        "tar": summary.get("tar"),
        "saved_at": summary.get("saved_at"),
    }


def info(args) -> int:
    details = checkpoint_info(args.checkpoint)
    if getattr(args, "toml", False):
        from .train_config import config_toml

        if not isinstance(details["train_config"], dict):
            raise ChargenError(f"{args.checkpoint}: the checkpoint has no training config to print")
        print(config_toml(details["train_config"], details["corpus"], details["path"]), end="")
        return 0
    if args.json:
        print(json.dumps(details))
        return 0
    from rich.console import Console

    Console().print(info_table(details))
    return 0


def info_table(info: dict):
    """``chargen info``'s table (rich is imported here: the other commands start without it)."""
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_column(style="bold cyan", justify="right")
    table.add_column(overflow="fold")
    m = info["model"]
    table.add_row("checkpoint", f"{info['path']} ({info['file_bytes'] / 1e6:.1f} MB)")
    locked = " (locked)" if m.get("locked_dropout") and m["dropout"] else ""
    extra = "".join(f", {label} {m[key]}" for key, label in (("weight_drop", "weight drop"),
                                                              ("embed_dropout", "embedding dropout")) if m.get(key))
    table.add_row("model", f"{ModelConfig(**m).shape()}, dropout {m['dropout']}{locked}{extra}, "
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
        used = {**cfg, **{k: info[k] for k in ("lr", "weight_decay", "ar", "tar") if info[k] is not None}}
        table.add_row("training", ", ".join(f"{k}={used[k]}" for k in ("seq_len", "batch_size", "lr", "weight_decay",
                                                                       "ar", "tar", "grad_clip", "seed") if k in used))
    return table


def corpus(args) -> int:
    if not (math.isfinite(args.max_mb) and 0 < args.max_mb <= MAX_CORPUS_MB):
        raise ChargenError(f"--max-mb {args.max_mb}: must be a number > 0 and at most {MAX_CORPUS_MB:,}")
    out = build_corpus(args.name, args.out or Path("corpora") / f"{args.name}.txt", int(args.max_mb * (1 << 20)),
                       lag=args.lag)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
