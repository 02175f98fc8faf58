"""Model quality per CPU-minute: val loss on Tiny Shakespeare after a fixed wall-time budget.

    python bench/quality.py --time 5m                      # chargen's defaults
    python bench/quality.py --time 5m -- --hidden 768      # any `chargen train` options after --

Validation is the last 10% of the corpus (nanoGPT's shakespeare_char split), scored over the whole
split in nats per character. Prints the val-loss curve, the final figure and reference points, then
the best checkpoint's streamed figure (state carried through the split) beside its windowed one
(non-overlapping 256-char windows, each from a fresh state: how nanoGPT's figures are measured).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chargen.ui.cli import build_parser  # noqa: E402
from chargen.ui.options import parse_duration, train_options  # noqa: E402
from chargen.ui.dashboard import describe_precision, describe_shape  # noqa: E402
from chargen.training import AutoChosen, EvalDone, RunStarted, StepDone, TrainConfig, Trainer  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "corpora" / "tinyshakespeare.txt"
REFERENCES = [
    ("nanoGPT CPU recipe (4-layer transformer, 2000 iters), this machine", "76 s", 1.886),
    ("plain 2x512 LSTM, Adam, no tuning, this machine", "5 min", 1.447),
    ("nanoGPT GPU recipe (6-layer transformer, one A100; a windowed figure)", "~3 min", 1.4697),
]
WINDOW = 256  # nanoGPT's block size: its val loss is over windows of this many chars, each from scratch
NANOGPT_WINDOWED = 1.4697


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", type=parse_duration, default=300.0, help="wall-time budget (default: 5m)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="default: corpora/tinyshakespeare.txt (see corpora/README.md to fetch it)")
    parser.add_argument("train_options", nargs="*", help="extra `chargen train` options, after --")
    args = parser.parse_args()
    if not args.corpus.is_file():
        sys.exit(f"bench/quality.py: error: {args.corpus}: corpus not found; pass --corpus PATH")

    with tempfile.TemporaryDirectory() as tmp:
        train_args = build_parser().parse_args(["train", str(args.corpus), "--out", f"{tmp}/run",
                                                "--max-time", f"{args.time}s", *args.train_options])
        config = TrainConfig(**train_options(train_args))
        curve: list[tuple[float, int, float]] = []
        train_losses: list[float] = []  # since the last evaluation: shows how far val lags behind
        started = time.perf_counter()

        def on_event(event):
            if isinstance(event, RunStarted):
                m, c = event.model_config, event.config
                print(f"model {m.layers}x{m.hidden} {m.cell}, {event.num_parameters:,} params, "
                      f"{event.precision}, batch {c.batch_size}x{c.seq_len}, lr {c.lr}, "
                      f"dropout {c.dropout}, weight decay {c.weight_decay}, budget {args.time:.0f}s", flush=True)
                if event.shape_plan:
                    print(f"auto: {describe_shape(event.shape_plan)}", flush=True)
                if event.precision_plan:
                    print(f"auto precision: {describe_precision(event.precision_plan)}", flush=True)
            elif isinstance(event, StepDone):
                train_losses.append(event.loss)
            elif isinstance(event, AutoChosen):
                print(f"{event.describe()} at step {event.step} (auto: ~{event.planned_epochs:.1f} "
                      "epochs fit the budget)", flush=True)
            elif isinstance(event, EvalDone):
                row = (time.perf_counter() - started, event.step, event.val_loss)
                curve.append(row)
                train = sum(train_losses) / max(len(train_losses), 1)
                train_losses.clear()
                print(f"  {row[0]:6.0f}s  step {row[1]:6d}  val {row[2]:.4f} nats/char  "
                      f"{row[2] / math.log(2):.4f} bits/char  (train {train:.3f})", flush=True)

        trainer = Trainer(config, [str(args.corpus)], on_event=on_event)
        result = trainer.run()
        wall = time.perf_counter() - started
        streamed, windowed = both_figures(f"{tmp}/run", trainer.val_tokens)
    final = curve[-1][2]
    print(f"\nfinal: val {final:.4f} nats/char ({final / math.log(2):.4f} bits/char), best "
          f"{result.best_val_loss:.4f}, {result.step} steps, {wall:.0f}s wall (training and evaluation)")
    print("\nreference points (val nats/char on the same split):")
    for name, when, loss in REFERENCES:
        print(f"  {loss:.4f}  after {when:>6}  {name}")
    print(f"  {final:.4f}  after {wall:5.0f}s  chargen, this run")
    print(f"\nbest checkpoint on the split: streamed {streamed:.4f} nats/char (context carried through the "
          f"text), windowed {windowed:.4f} (non-overlapping {WINDOW}-char windows from a fresh state, "
          f"as nanoGPT scores: its {NANOGPT_WINDOWED} is a windowed figure)")


def both_figures(run: str, val_tokens) -> tuple[float, float]:
    """The streamed and the windowed (nanoGPT's measurement) loss of the run's best checkpoint."""
    import chargen
    from chargen.evaluation import evaluate, evaluate_windows

    model = chargen.load(run)
    return (evaluate(model.model, val_tokens, model.tokenizer).nats_per_char,
            evaluate_windows(model.model, val_tokens, model.tokenizer, WINDOW).nats_per_char)


if __name__ == "__main__":
    main()
