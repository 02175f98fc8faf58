"""Which regularization helps, at fixed steps: variants of `chargen train`, two seeds each, side by side.

    python bench/regularization.py --seeds 1,2,3                # the study in bench/RESULTS.md (~50 min)
    python bench/regularization.py --steps 600 --fraction 0.1   # a quick look
    python bench/regularization.py --only --variant "wd 0.3=--weight-drop 0.3"   # the first variant and yours
    python bench/regularization.py --only --hidden 224 --steps 1500 --seeds 1,2,3 \
        --variant "none=--seq-len 32 --ar 0 --tar 0" --variant "AR 2=--seq-len 32 --ar 2 --tar 1"
                                                # the 5-minute run's regime (~6 epochs; auto: no dropout)

Judged at a fixed number of steps, not by the clock (a variant that costs time shows it in the
chars/s column; the verdict on quality must not depend on how loaded the machine was).

The regime is the 20-minute run's, scaled down: that run trains 2x512 (~3.2M parameters) on Tiny
Shakespeare's 1M training characters ~24 times. Here 2x256 (a quarter of the parameters) trains on
the first quarter of the training split for the same ~24 epochs: the same parameters per character
and the same number of readings, in an eighth of the time. Every run is scored on the usual
validation split (the last 10% of the corpus). Runs go two at a time with one thread each, so a
pair of seeds takes about as long as one run on both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chargen.training.rundir import read_metrics  # noqa: E402

CORPUS_PLACES = [ROOT / "corpora" / "tinyshakespeare.txt", ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"]
VAL_FRAC = 0.1  # nanoGPT's shakespeare_char split: the last 10% is validation
# The 20-minute run's window and precision (what auto gives it on AMX CPUs); the width is --hidden.
BASE = "--seq-len 64 --precision bf16 --preview-length 0 --save-every off"
# Each spells out its dropout masks and activation penalties, so that the table stays what it was
# whatever the defaults become.
NO_AR = "--ar 0 --tar 0"
VARIANTS = {
    "per-step dropout masks (the earlier default)": f"--no-locked-dropout {NO_AR}",
    "locked dropout": f"--locked-dropout {NO_AR}",
    "per-step + weight drop 0.2": f"--no-locked-dropout --weight-drop 0.2 {NO_AR}",
    "per-step + weight drop 0.4": f"--no-locked-dropout --weight-drop 0.4 {NO_AR}",
    "per-step + embedding dropout 0.1": f"--no-locked-dropout --embed-dropout 0.1 {NO_AR}",
    "locked + weight drop 0.2": f"--locked-dropout --weight-drop 0.2 {NO_AR}",
    "locked, dropout 0.4": f"--locked-dropout --dropout 0.4 {NO_AR}",
    "locked + TAR 1": "--locked-dropout --ar 0 --tar 1",
    "locked + AR 2": "--locked-dropout --ar 2 --tar 0",
    "locked + AR 2, TAR 1 (AWD-LSTM's)": "--locked-dropout --ar 2 --tar 1",
    "locked + AR 2, TAR 2": "--locked-dropout --ar 2 --tar 2",
    "locked + AR 4, TAR 1": "--locked-dropout --ar 4 --tar 1",
    "locked + AR 4, TAR 2": "--locked-dropout --ar 4 --tar 2",
    "locked + AR 8, TAR 1": "--locked-dropout --ar 8 --tar 1",
}


def proxy_corpus(corpus: Path, fraction: float, folder: Path) -> tuple[Path, float]:
    """The first ``fraction`` of the training split, then the whole validation split; and the
    --val-frac that puts the cut exactly where the validation split starts."""
    text = corpus.read_text(encoding="utf-8")
    cut = int(len(text) * (1 - VAL_FRAC))
    train, val = text[:int(cut * fraction)], text[cut:]
    path = folder / "proxy.txt"
    path.write_text(train + val, encoding="utf-8")
    # The trainer cuts at int(n * (1 - val_frac)); aim half a character inside the train part.
    return path, (len(val) + 0.5) / (len(train) + len(val))


def train_command(corpus: Path, val_frac: float, args: argparse.Namespace, seed: int, options: str,
                  out: Path) -> list[str]:
    return [sys.executable, "-m", "chargen", "train", str(corpus), "--val-frac", repr(val_frac),
            "--max-steps", str(args.steps), "--eval-every", str(max(1, args.steps // 6)), "--seed", str(seed),
            "--hidden", str(args.hidden), "--out", str(out), *shlex.split(BASE), *shlex.split(options)]


def outcome(run: Path) -> dict:
    """The best validation loss of a finished run, and its speed."""
    records = read_metrics(run / "metrics.jsonl")
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    speeds = [r["chars_per_sec"] for r in records if "chars_per_sec" in r]
    return {"best": min(vals), "last": vals[-1], "chars_per_sec": statistics.median(speeds) if speeds else 0.0}


def run_all(jobs: list[tuple[str, int, list[str], Path]], parallel: int) -> dict:
    """Run ``jobs`` ``parallel`` at a time, one thread each; their outcomes by (variant, seed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results, pending = {}, list(jobs)
    while pending:
        batch, pending = pending[:parallel], pending[parallel:]
        running = [(name, seed, out, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                                       stderr=subprocess.PIPE, text=True))
                   for name, seed, cmd, out in batch]
        for name, seed, out, process in running:
            _, err = process.communicate()
            if process.returncode != 0:
                sys.exit(f"bench/regularization.py: {name}, seed {seed} failed:\n{err}")
            results[name, seed] = outcome(out)
            print(f"  {name}, seed {seed}: best {results[name, seed]['best']:.4f}", flush=True)
    return results


def report(results: dict, variants: dict, seeds: list[int]) -> None:
    baseline = next(iter(variants))
    print(f"\n| variant | {' | '.join(f'seed {s}' for s in seeds)} | mean | vs baseline | chars/s |")
    print(f"|---|{'---|' * len(seeds)}---|---|---|")
    base_mean = statistics.mean(results[baseline, s]["best"] for s in seeds)
    for name, options in variants.items():
        bests = [results[name, s]["best"] for s in seeds]
        speed = statistics.mean(results[name, s]["chars_per_sec"] for s in seeds)
        mean = statistics.mean(bests)
        print(f"| {name} `{options}` | {' | '.join(f'{b:.4f}' for b in bests)} | {mean:.4f} | "
              f"{mean - base_mean:+.4f} | {speed:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2900, help="training steps per run (default: 2900, "
                        "~24 epochs of the default fraction)")
    parser.add_argument("--hidden", type=int, default=256, help="width of the 2-layer model (default: 256)")
    parser.add_argument("--fraction", type=float, default=0.25, help="share of the training split to train on")
    parser.add_argument("--seeds", default="1,2", help="comma-separated seeds (default: 1,2)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once, one thread each (default: 2)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                        help="add a variant: a name, =, then `chargen train` options")
    parser.add_argument("--only", action="store_true", help="run the first variant (the baseline of the "
                        "comparison) and the --variant ones only")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    args = parser.parse_args()
    corpus = next((p for p in CORPUS_PLACES if p.is_file()), None)
    if corpus is None:
        sys.exit("bench/regularization.py: error: tinyshakespeare.txt not found in corpora/ or ../shared/corpora/")
    variants = dict(list(VARIANTS.items())[:1] if args.only else VARIANTS)
    variants.update(v.split("=", 1) for v in args.variant)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        proxy, val_frac = proxy_corpus(corpus, args.fraction, Path(tmp))
        print(f"{proxy.stat().st_size:,} bytes ({args.fraction:g} of the training split + validation), "
              f"2x{args.hidden}, {args.steps} steps, seeds {seeds}: {BASE}", flush=True)
        jobs = [(name, seed, train_command(proxy, val_frac, args, seed, options, Path(tmp) / f"{i}-{seed}"),
                 Path(tmp) / f"{i}-{seed}")
                for i, (name, options) in enumerate(variants.items()) for seed in seeds]
        results = run_all(jobs, args.parallel)
    report(results, variants, seeds)
    if args.json:
        args.json.write_text(json.dumps({f"{n} | {s}": r for (n, s), r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
