"""What a time-capped save costs: writing ``last.safetensors`` against the training it protects.

    python bench/save_cost.py                      # 2x512 and 3x1024, batch 32 x 64, fp32; ~2 min on 2 cores
    python bench/save_cost.py --shapes 2x512 --saves 10 --precision bf16
    python bench/save_cost.py --threads 1          # on a busy machine: 2 threads on 2 shared cores crawl

For each shape, a real ``Trainer`` (the code ``chargen train`` runs) trains a few steps on a
generated corpus, so the optimizer holds its moments and the carried LSTM state exists; the step
time is the median of the timed steps. Then ``Trainer.save`` writes ``last.safetensors`` several
times, exactly as a ``--save-every`` save does (weights, AdamW's moments, RNG states, carried
state; the bytes built, written to a temp file, fsynced, renamed, the directory synced). Printed:
the save's median time, and its share of the default ``--save-every`` interval (10 minutes of
training), and how many training steps of the same model that time would have run. The run
directory is made in the current directory (``--dir`` to change), on the disk where runs
normally go, since the fsync's cost is the disk's.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from chargen.checkpoint import LAST_NAME  # noqa: E402
from chargen.training import StepDone, TrainConfig, Trainer  # noqa: E402
from chargen.training.auto import AUTO_SAVE_EVERY_SECONDS, auto_eval_every  # noqa: E402

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\n-&$3"  # 65, as Shakespeare's


def make_corpus(path: Path, chars: int = 1 << 20, seed: int = 0) -> None:
    rng = random.Random(seed)
    path.write_text("".join(rng.choice(ALPHABET) for _ in range(chars)))


def measure(shape: str, corpus: Path, workdir: Path, args) -> dict:
    layers, hidden = (int(n) for n in shape.split("x"))
    config = TrainConfig(layers=layers, hidden=hidden, batch_size=args.batch_size, seq_len=args.seq_len,
                         max_steps=args.warmup + args.steps, eval_every=10 ** 6, save_every="off", val_frac=0,
                         preview_length=0, device="cpu", precision=args.precision, seed=0,
                         out=str(workdir / shape))
    marks: list[float] = []

    def on_event(event):
        if isinstance(event, StepDone):
            marks.append(time.perf_counter())

    trainer = Trainer(config, [str(corpus)], on_event=on_event)
    trainer.run()  # trains, then saves last and best once
    first = max(args.warmup, 1)  # a step's time: from the step before it ended to its own end
    step_seconds = statistics.median(b - a for a, b in zip(marks[first - 1:], marks[first:]))
    saves = []
    for _ in range(args.saves):
        started = time.perf_counter()
        trainer.save(LAST_NAME, elapsed=0.0)
        saves.append(time.perf_counter() - started)
    save_seconds = statistics.median(saves)
    return {"shape": shape, "parameters": trainer.model.num_parameters(),
            "mb": (workdir / shape / LAST_NAME).stat().st_size / 1e6, "save": save_seconds,
            "save_max": max(saves), "step": step_seconds,
            "share": save_seconds / AUTO_SAVE_EVERY_SECONDS,
            "eval_minutes": auto_eval_every(args.batch_size, args.seq_len) * step_seconds / 60}


def row(r: dict) -> str:
    return (f"| {r['shape']} | {r['parameters'] / 1e6:.1f} M | {r['mb']:.0f} MB | {r['save']:.2f} s "
            f"(max {r['save_max']:.2f}) | {r['step']:.3f} s | {r['save'] / r['step']:.1f} steps | "
            f"{100 * r['share']:.2f}% | {r['eval_minutes']:.0f} min |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["2x512", "3x1024"],
                        help="LAYERSxHIDDEN (default: 2x512 3x1024)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16 (default: fp32)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps (default: 4)")
    parser.add_argument("--saves", type=int, default=5, help="timed saves of last.safetensors (default: 5)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where the runs are written (default: here)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix=".save-cost-", dir=args.dir) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        make_corpus(corpus)
        for shape in args.shapes:
            results.append(measure(shape, corpus, Path(tmp), args))
    minutes = AUTO_SAVE_EVERY_SECONDS // 60
    print(f"batch {args.batch_size} x {args.seq_len}, {args.precision}, {torch.get_num_threads()} thread(s); "
          f"a save every {minutes} minutes (--save-every auto)")
    print("| model | parameters | last.safetensors | one save (median) | one training step | the save in steps "
          f"| share of {minutes} minutes of training | time between evaluations at --eval-every auto |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(row(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
