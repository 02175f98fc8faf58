"""Pick dynamic evaluation's learning rate and decay on the end of the TRAINING split, never on
validation (whose figure must stay an honest test).

    python bench/dynamic_tune.py checkpoints/RUN --corpus corpora/tinyshakespeare.txt

The tuning text is the last --chars characters before the validation split (the last --val-frac of
the corpus, as training holds it out). Prints the static figure and the dynamic one for each pair
of the grid, best first. The model has trained on this text, so it gains less from adapting there
than on new text: the chosen rate is a cautious one. chargen.dynamic's defaults came from this
script (bench/RESULTS.md has the run).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import chargen  # noqa: E402
from chargen.dynamic import DYNAMIC_SEGMENT, evaluate_dynamic  # noqa: E402
from chargen.evaluation import evaluate  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "corpora" / "tinyshakespeare.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--val-frac", type=float, default=0.1, help="the run's validation fraction (default: 0.1)")
    parser.add_argument("--chars", type=int, default=50_000, help="tuning text length (default: 50000)")
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3")
    parser.add_argument("--decays", default="0,0.01,0.05")
    args = parser.parse_args()
    model = chargen.load(args.checkpoint)
    tokens = model.tokenizer.encode(args.corpus.read_text(encoding="utf-8"))
    cut = int(len(tokens) * (1 - args.val_frac))  # as chargen.text.corpus splits it
    tune = tokens[max(0, cut - args.chars):cut]
    static = evaluate(model.model, tune, model.tokenizer, burn_in=len(tune)).nats_per_char
    print(f"tuning on tokens [{cut - len(tune)}, {cut}) of {args.corpus.name} (the end of the training split); "
          f"static {static:.4f} nats/char", flush=True)
    rows = []
    for lr, decay in itertools.product(map(float, args.lrs.split(",")), map(float, args.decays.split(","))):
        started = time.perf_counter()
        loss = evaluate_dynamic(model.model, [tune], model.tokenizer, lr=lr, decay=decay,
                                segment=DYNAMIC_SEGMENT).nats_per_char
        rows.append((loss, lr, decay))
        print(f"  lr {lr:g}  decay {decay:g}  {loss:.4f} nats/char  ({loss - static:+.4f}, "
              f"{time.perf_counter() - started:.0f}s)", flush=True)
    print("best first:")
    for loss, lr, decay in sorted(rows)[:5]:
        print(f"  {loss:.4f}  --dynamic-lr {lr:g} --dynamic-decay {decay:g}")


if __name__ == "__main__":
    main()
