"""Loops at low temperature, with and without the repetition controls, on a model trained here.

    python bench/repetition.py                  # a few minutes on a CPU core
    python bench/repetition.py --steps 1000 --hidden 256   # a stronger model, slower

Char-RNNs fall into attractors at low temperature (textgenrnn #19 "gets stuck in loops"). This
trains a 2x128 LSTM for a fixed number of steps on the ``stdlib`` corpus (what ``make demo``
trains on), then draws 10 samples of 2,000 characters at temperature 0.5 (seed 1) with each
setting and prints the share of repeated 20-grams (20-character sequences that already occurred
earlier in the same sample) and the mean nats/char of the samples under the model, the price of
steering away from its favourite continuations. The ratio is against no control, same run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import chargen
from chargen.text.builtin import build_corpus

SETTINGS = {
    "none": {},
    "--repetition-penalty 1.2": {"repetition_penalty": 1.2},
    "--repetition-penalty 1.2 --repeat-window 100": {"repetition_penalty": 1.2, "repeat_window": 100},
    "--repetition-penalty 1.5 --repeat-window 100": {"repetition_penalty": 1.5, "repeat_window": 100},
}


def repeated_share(text: str, n: int = 20) -> float:
    grams = [text[i:i + n] for i in range(len(text) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps (default: 400)")
    parser.add_argument("--hidden", type=int, default=128, help="LSTM width, 2 layers (default: 128)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--temp", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = build_corpus("stdlib", Path(tmp) / "stdlib.txt", 2 << 20)
        run = Path(tmp) / "run"
        chargen.train(str(corpus), out=str(run), layers=2, hidden=args.hidden, seq_len=64, batch_size=16,
                      max_steps=args.steps, eval_every=args.steps, preview_length=0, seed=0, device="cpu",
                      precision="fp32", dropout=0.0)
        model = chargen.load(run)
        print(f"model: {model.describe()}, {args.steps} steps (batch 16 x 64), best val "
              f"{model.summary['best_val_loss']:.3f} nats/char")
        print(f"{args.samples} samples x {args.length} chars, temp {args.temp}, seed 1, prime 'def '")
        print(f"{'setting':<48} {'repeated 20-grams':>18} {'ratio':>7} {'nats/char':>10}")
        baseline = None
        for label, controls in SETTINGS.items():
            samples = list(model.samples("def ", num_samples=args.samples, length=args.length, temp=args.temp,
                                         seed=1, **controls))
            share = sum(repeated_share(s.text) for s in samples) / len(samples)
            nats = sum(s.outcome.nats_per_char for s in samples) / len(samples)
            baseline = share if baseline is None else baseline
            ratio = share / baseline if baseline else float("nan")
            print(f"{label:<48} {share:>18.3f} {ratio:>7.2f} {nats:>10.3f}")


if __name__ == "__main__":
    main()
