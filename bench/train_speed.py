"""Training speed: ``chargen.train`` against a bare ``nn.LSTM`` loop of the same shape, same process.

    python bench/train_speed.py                  # 2x512, batch 32, seq 100, fp32 and bf16; < 1 min
    python bench/train_speed.py --threads 1 --steps 10
    python bench/train_speed.py --device cuda    # 2x512 and 3x1024, batch 128, seq 256, with utilisation

The bare loop is the textbook PyTorch loop for the same model: embedding -> ``nn.LSTM`` ->
linear head on one fixed batch, dropout at the same rate with ``nn.Dropout`` (on the embedding
and the output) and ``nn.LSTM``'s own (between layers), cross-entropy, backward, gradient
clipping, ``torch.optim.AdamW`` with its default implementation (chargen's settings otherwise),
state carried between steps; under ``torch.autocast`` for bf16. Where chargen is faster than
1.0x, that is its one-hot input path (``CharLM.forward``: no dropout on the embedding, whose
product with layer 0's input weight is then 65 wide instead of 512), its cheaper dropout masks
(drawn from 16-bit slices of random words, and by default one per sequence, not per step:
``--no-locked-dropout`` times per-step masks as the bare loop draws them) and the fused AdamW
kernel (``chargen.model.layers.dropout``, ``chargen.training.optim.make_optimizer``).

chargen runs its whole loop: batches cut from the corpus, LR schedule, the activation penalties
when asked (``--ar``/``--tar``: a short run's default, which the bare loop lacks), the NaN guard, metrics
lines, events and the live dashboard (rendered to a string). Its chars/s is taken from the step
events, after warm-up steps; the end-of-run checkpoint saves (last and best) are timed apart and
shown as a share of the time between two evaluations at ``--eval-every auto``. (No validation
split: evaluating is useful work, not overhead.) Rounds alternate between the two, and the
medians are compared. Both loops run with glibc's malloc set as ``Trainer`` sets it
(``keep_freed_memory``); what that is worth, bench/malloc.py measures.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import chargen
from chargen.ui.dashboard import Dashboard
from chargen.devices import keep_freed_memory, resolve_precision
from chargen.training import CheckpointSaved, StepDone
from chargen.training.auto import EVAL_EVERY_TOKENS
from chargen.training.auto import AR_SHORT_RUNS, TAR_SHORT_RUNS
from rich.console import Console

SHAKESPEARE = Path(__file__).resolve().parents[1] / "corpora" / "tinyshakespeare.txt"
VOCAB = 65  # Tiny Shakespeare's characters
# What each device measures by default: the shapes (layers x hidden), batch and window.
DEFAULTS = {"cpu": ("2x512", 32, 100), "cuda": ("2x512,3x1024", 128, 256)}


def bare_chars_per_sec(args, precision: str) -> float:
    """chars/s of the minimal loop, over ``args.steps`` steps after ``args.warmup``."""
    torch.manual_seed(0)
    vocab, device = VOCAB, torch.device(args.device)
    embed, head = nn.Embedding(vocab, args.hidden), nn.Linear(args.hidden, vocab)
    lstm = nn.LSTM(args.hidden, args.hidden, args.layers, batch_first=True, dropout=args.dropout)
    drop = nn.Dropout(args.dropout)
    embed, lstm, head = embed.to(device), lstm.to(device), head.to(device)
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.3)
    data = torch.randint(vocab, (args.batch_size, args.seq_len + 1), device=device)
    x, y = data[:, :-1], data[:, 1:]
    state = None
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else \
        (lambda: torch.autocast(device.type, enabled=False))
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            started = time.perf_counter()
        with autocast():
            out, state = lstm(drop(embed(x)), state)
            logits = head(drop(out))
        loss = F.cross_entropy(logits.float().view(-1, vocab), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        state = tuple(s.detach() for s in state)
        loss.item()  # the textbook loop reads its loss every step (to print it, to check it)
    return args.steps * args.batch_size * args.seq_len / (time.perf_counter() - started)


def chargen_chars_per_sec(args, precision: str, corpus: Path, workdir: Path) -> tuple[float, float]:
    """chars/s of chargen's loop after warm-up, and seconds its end-of-run checkpoints took."""
    stamps: list[float] = []
    saved: list[float] = []
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    dashboard = Dashboard(console=console, live=True)

    def on_event(event):
        if isinstance(event, StepDone):  # on a GPU, only at the steps the host reads back
            stamps.append((event.step, time.perf_counter()))
        dashboard(event)
        if isinstance(event, CheckpointSaved):
            saved.append(time.perf_counter())

    total = args.warmup + args.steps
    with dashboard:
        chargen.train(str(corpus), on_event=on_event, out=str(workdir / f"run-{time.monotonic_ns()}"),
                      layers=args.layers, hidden=args.hidden, batch_size=args.batch_size,
                      seq_len=args.seq_len, dropout=args.dropout, locked_dropout=args.locked_dropout,
                      ar=args.ar, tar=args.tar, max_steps=total, eval_every=total,
                      val_frac=0.0, preview_length=0, precision=precision, device=args.device, seed=0,
                      compile=args.compile)
    timed = [(step, at) for step, at in stamps if step >= args.warmup]
    (first_step, first), (last_step, last) = timed[0], timed[-1]
    chars_per_sec = (last_step - first_step) * args.batch_size * args.seq_len / (last - first)
    return chars_per_sec, saved[-1] - stamps[-1][1]


def flops_per_char(layers: int, hidden: int) -> float:
    """A training step's model FLOPs per character: ~24·H·(H+I) per LSTM layer (forward 8·H·(H+I),
    backward twice that) plus the head's 6·H·V; the input size I is H (the embedding's width)."""
    return layers * 24 * hidden * (hidden + hidden) + 6 * hidden * VOCAB


def matmul_peak(device: torch.device, precision: str) -> float:
    """FLOP/s of a big matrix product in ``precision`` on ``device``, measured now: the roof that
    utilisation is counted against."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(8192, 8192, device=device, dtype=dtype)
    for _ in range(2):
        a @ a
    torch.cuda.synchronize(device)
    started, rounds = time.perf_counter(), 10
    for _ in range(rounds):
        a @ a
    torch.cuda.synchronize(device)
    return rounds * 2 * 8192 ** 3 / (time.perf_counter() - started)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--shapes", default=None, help="layers x hidden, comma-separated (cpu: 2x512; "
                        "cuda: 2x512,3x1024)")
    parser.add_argument("--batch-size", type=int, default=None, help="cpu: 32, cuda: 128")
    parser.add_argument("--seq-len", type=int, default=None, help="cpu: 100, cuda: 256")
    parser.add_argument("--dropout", type=float, default=0.3,
                        help="dropout of both loops (default 0.3: what auto picks for ~20 epochs, a 20-minute "
                             "Tiny Shakespeare run on a fast machine)")
    parser.add_argument("--locked-dropout", action=argparse.BooleanOptionalAction, default=True,
                        help="chargen's dropout masks one per sequence (its default) or, with --no-, per step")
    parser.add_argument("--ar", type=float, default=0.0,
                        help="chargen's activation penalty (default 0: what --ar auto gives a run with dropout, as "
                             f"this one; --ar {AR_SHORT_RUNS:g} --tar {TAR_SHORT_RUNS:g} --dropout 0 times a short "
                             "run's; the bare loop has none)")
    parser.add_argument("--tar", type=float, default=0.0, help="chargen's temporal activation penalty (default 0)")
    parser.add_argument("--steps", type=int, default=16, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="chargen's loop with torch.compile (GPUs)")
    args = parser.parse_args()
    shapes, batch_size, seq_len = DEFAULTS["cuda" if args.device.startswith("cuda") else "cpu"]
    args.shapes = args.shapes or shapes
    args.batch_size = args.batch_size or batch_size
    args.seq_len = args.seq_len or seq_len
    return args


def synthetic_corpus(workdir: Path) -> Path:
    """A corpus of Tiny Shakespeare's size, for machines without it."""
    corpus = workdir / "corpus.txt"
    g = torch.Generator().manual_seed(0)
    letters = "abcdefghijklmnopqrstuvwxyz ,.\n"
    corpus.write_text("".join(letters[i] for i in torch.randint(len(letters), (1_100_000,), generator=g).tolist()))
    return corpus


def compare(args, corpus: Path, workdir: Path, precision: str) -> str:
    """One table row: both loops in alternating rounds, medians, ratio (and utilisation on a GPU)."""
    bare, ours, saves = [], [], []
    for _ in range(args.rounds):
        bare.append(bare_chars_per_sec(args, precision))
        speed, save_s = chargen_chars_per_sec(args, precision, corpus, workdir)
        ours.append(speed)
        saves.append(save_s)
    b, c = statistics.median(bare), statistics.median(ours)
    interval_s = EVAL_EVERY_TOKENS / c  # --eval-every auto
    save_s = statistics.median(saves)
    row = (f"{args.layers}x{args.hidden:<5} | {precision:>9} | {b:12,.0f} | {c:15,.0f} | {c / b:5.3f}x | "
           f"{save_s:.2f} s ({100 * save_s / interval_s:.1f}%)")
    if args.device.startswith("cuda"):
        model_flops = c * flops_per_char(args.layers, args.hidden)
        peak = matmul_peak(torch.device(args.device), precision)
        row += f" | {model_flops / 1e12:.1f} TFLOP/s, {100 * model_flops / peak:.1f}% of a big matmul's"
    return row


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # chargen's Trainer sets this for the whole process; set it first so both loops run with it
    # (bench/malloc.py measures what it is worth).
    keep_freed_memory()
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"torch {torch.__version__}, {where}; chargen's precision=auto here means "
          f"{resolve_precision('auto', device)} on {args.device}")
    print(f"batch {args.batch_size}, seq {args.seq_len}, {args.steps} timed steps after {args.warmup}, "
          f"{args.rounds} alternating rounds")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        corpus = SHAKESPEARE if SHAKESPEARE.is_file() else synthetic_corpus(workdir)
        print(f"{'model':>8} | {'precision':>9} | {'bare chars/s':>12} | {'chargen chars/s':>15} | {'ratio':>6} | "
              f"checkpoints (share of the time between evaluations)"
              + (" | utilisation" if device.type == "cuda" else ""))
        for shape in args.shapes.split(","):
            args.layers, args.hidden = map(int, shape.split("x"))
            for precision in args.precisions.split(","):
                print(compare(args, corpus, workdir, precision), flush=True)


if __name__ == "__main__":
    main()
