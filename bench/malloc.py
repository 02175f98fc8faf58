"""Training speed with and without ``keep_freed_memory`` (glibc's malloc reusing freed memory).

    python bench/malloc.py                          # 2x384, batch 32x32; ~1 min
    python bench/malloc.py --hidden 512 --seq-len 64

Each training step frees its activations and allocates them again; by default glibc maps big
blocks fresh and returns the freed top of its heap to the kernel, so the next step page-faults
the memory back in (``chargen.devices.keep_freed_memory``). ``Trainer`` sets malloc up on CPUs;
this script runs the same training steps in fresh processes with that and without it,
alternating, and prints the median chars/s and minor page faults per step of each, and their
ratio. A malloc setting cannot be undone in a process, hence the subprocesses. The text is
generated (speed does not depend on it).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(args) -> None:
    """One run: time steps after warm-up; print chars/s and faults per step as JSON."""
    import importlib

    train = importlib.import_module("chargen.training")
    if args.child == "off":  # the name the trainer calls
        importlib.import_module("chargen.training.trainer").keep_freed_memory = lambda: False
    marks = {}

    def on_event(event):
        if isinstance(event, train.StepDone) and event.step in (args.warmup, args.steps):
            marks[event.step] = (event.elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

    config = train.TrainConfig(hidden=args.hidden, seq_len=args.seq_len, batch_size=args.batch_size,
                               dropout=args.dropout, max_steps=args.steps, val_frac=0.0, eval_every=10**6,
                               preview_length=0, out=tempfile.mkdtemp(dir=args.dir) + "/run")
    train.Trainer(config, [args.corpus], on_event=on_event).run()
    (t0, f0), (t1, f1) = marks[args.warmup], marks[args.steps]
    steps = args.steps - args.warmup
    print(json.dumps({"chars_per_sec": steps * args.batch_size * args.seq_len / (t1 - t0),
                      "faults_per_step": (f1 - f0) / steps}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=120, help="steps per run (default: 120)")
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the timing (default: 20)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setting, alternating (default: 3)")
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    import torch

    from chargen.devices import MALLOC_KEEP

    with tempfile.TemporaryDirectory() as tmp:
        rng = random.Random(0)
        words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9)))
                 for _ in range(3000)]
        corpus = Path(tmp, "corpus.txt")
        corpus.write_text(" ".join(rng.choice(words) + rng.choice(" ,.;:!?\n") for _ in range(200_000)))
        results = {"off": [], "on": []}
        for _ in range(args.rounds):
            for setting in results:
                command = [sys.executable, __file__, "--child", setting, "--corpus", str(corpus), "--dir", tmp]
                for option in ("hidden", "seq_len", "batch_size", "dropout", "steps", "warmup"):
                    command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"bench/malloc.py: a run failed:\n{done.stderr}")
                results[setting].append(json.loads(done.stdout.splitlines()[-1]))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 2x{args.hidden} LSTM, batch "
          f"{args.batch_size}x{args.seq_len}, dropout {args.dropout}; {args.steps - args.warmup} timed steps "
          f"per run, {args.rounds} runs of each, alternating")
    median = {s: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for s, runs in results.items()}
    print(f"chargen's malloc settings: no mmap, trim threshold {MALLOC_KEEP >> 20} MiB")
    print("malloc              | chars/s (median) | minor faults/step")
    for setting, label in (("off", "glibc default"), ("on", "chargen's")):
        runs = ", ".join(f"{r['chars_per_sec']:,.0f}" for r in results[setting])
        print(f"{label:19} | {median[setting]['chars_per_sec']:16,.0f} | {median[setting]['faults_per_step']:17,.0f}"
              f"   (runs: {runs})")
    print(f"ratio: {median['on']['chars_per_sec'] / median['off']['chars_per_sec']:.3f}x")


if __name__ == "__main__":
    main()
