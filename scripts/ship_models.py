"""Reproduce the built-in models: build the corpus, train, export compact, update the catalog.

    python scripts/ship_models.py                        # everything: about 50 minutes of CPU
    python scripts/ship_models.py --from-run RUN         # export an already trained run only
    python scripts/ship_models.py --out /tmp/models      # write somewhere else than the package

The shipped file is the run's best checkpoint with its weights in bf16 and no training state
(``chargen.checkpoint.export_checkpoint``): about half the size of the fp32 checkpoint, and it
loads into the fp32 model like any other checkpoint. The catalog entry (``catalog.json`` beside
it) records the corpus recipe, the training command and the validation loss, which ``chargen
models`` lists. Last, the script prints the figures and a sample for docs/models.md.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from chargen.checkpoint import export_checkpoint
from chargen.pretrained import write_catalog_entry

ROOT = Path(__file__).resolve().parents[1]

# The built-in models: name -> (corpus recipe, training options). The corpus is the standard
# library of the Python that runs the script, so another Python version gives a slightly different one.
MODELS = {
    "python": {
        "corpus_file": "stdlib.txt",
        "corpus": ["corpus", "stdlib", "--max-mb", "8"],
        "corpus_text": "Python standard library source, 8 MB (chargen corpus stdlib --max-mb 8)",
        "train": ["--max-time", "50m", "--layers", "2", "--hidden", "384", "--seq-len", "64", "--seed", "1"],
        "description": "2x384 LSTM that writes Python source",
        "sample": ["--prime", "def ", "--length", "600", "--temp", "0.7", "--seed", "1"],
    },
}


def chargen(*args: str) -> None:
    command = [sys.executable, "-m", "chargen", *args]
    print("+", "chargen", shlex.join(args), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def ship(name: str, recipe: dict, work: Path, out: Path, from_run: Path | None) -> None:
    corpus = work / recipe["corpus_file"]
    train_command = shlex.join(["chargen", "train", corpus.name, *recipe["train"]])
    if from_run is None:
        if not corpus.exists():
            chargen(*recipe["corpus"], "--out", str(corpus))
        run = work / name
        chargen("train", str(corpus), *recipe["train"], "--out", str(run), "--plain")
    else:
        run = from_run
    target = out / f"{name}.safetensors"
    checkpoint = export_checkpoint(run, target)
    loss = checkpoint.summary.get("best_val_loss")
    write_catalog_entry(out, name, corpus=recipe["corpus_text"], train_command=train_command, val_loss=loss,
                        description=recipe["description"])
    loss_text = f"{loss:.4f} nats/char" if loss is not None else "none recorded"
    print(f"{name}: {target} ({target.stat().st_size / 1e6:.1f} MB), {checkpoint.model.num_parameters():,} "
          f"parameters, {checkpoint.summary.get('step')} steps, best validation loss {loss_text}")
    print(f"training command: {train_command}")
    chargen("sample", str(target), *recipe["sample"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "chargen" / "pretrained",
                        help="where the .safetensors files and catalog.json go (default: the package)")
    parser.add_argument("--work", type=Path, default=ROOT / "checkpoints" / "shipped",
                        help="corpus and training runs (default: checkpoints/shipped)")
    parser.add_argument("--from-run", type=Path, help="export this trained run instead of training (one model only)")
    parser.add_argument("--only", choices=sorted(MODELS), help="ship one model")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    names = [args.only] if args.only else sorted(MODELS)
    if args.from_run and len(names) != 1:
        parser.error("--from-run exports one model: add --only NAME")
    for name in names:
        ship(name, MODELS[name], args.work, args.out, args.from_run)


if __name__ == "__main__":
    main()
