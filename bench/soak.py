"""Soak: kill -9 a training run at random moments, resume it each time, and check nothing but time was lost.

    python bench/soak.py                 # 50 kills (a few minutes)
    python bench/soak.py --quick         # 3 kills (seconds): what the test suite runs
    python bench/soak.py --kills 200 --seed 7 --dir /tmp/soak

A tiny model trains on a generated corpus with a fixed seed, saving ``last.safetensors`` every
50 ms (``--save-every``), so kills land before, between and in the middle of saves. Each round
starts ``chargen train`` (``--resume`` once a checkpoint exists), waits until the run has gone a
random number of steps past where it resumed (read from ``metrics.jsonl``), waits a random
fraction of a step's time more, and sends SIGKILL. After the last kill the run is resumed to its
end. Then:

- the final weights must equal, tensor for tensor and bit for bit, those of the same run never
  interrupted (same seed, same step count);
- ``metrics.jsonl`` must hold every step once, each with the uninterrupted run's training loss;
- no temp file may be left in the run directory.

It prints the kills survived and the steps lost per kill (steps redone after each resume: the
highest step logged before the kill minus the step of the checkpoint resumed from). The random
moments come from ``--seed``, the process timing does not: two soaks kill at different steps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from chargen.training.rundir import read_metrics  # reads up to the last whole record

LAST = "last.safetensors"
METRICS = "metrics.jsonl"
MAX_PROGRESS = 40  # a round kills the run 1..this many steps past where it resumed
QUICK_KILLS = 3
TRAIN = ["--layers", "1", "--hidden", "32", "--seq-len", "16", "--batch-size", "8", "--device", "cpu",
         "--precision", "fp32", "--seed", "0", "--warmup-steps", "5", "--dropout", "0.2", "--eval-every", "100",
         "--log-every", "1", "--preview-length", "0", "--save-every", "0.05s", "--plain"]
POLL_SECONDS = 0.002
ROUND_TIMEOUT = 120.0  # a round that shows no progress in this long has hung


@dataclass
class SoakResult:
    kills: int = 0
    steps: int = 0
    lost: list[int] = field(default_factory=list)  # steps redone after each kill
    mid_save: int = 0  # kills that left a half-written temp file behind (found and removed on resume)
    fresh_starts: int = 0  # kills before any checkpoint existed: the run started over
    weights_equal: bool = False
    tensors: int = 0
    metrics_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.weights_equal and self.metrics_ok and not self.problems


def make_corpus(path: Path, lines: int = 400, seed: int = 0) -> None:
    """Word soup: small, but with structure a tiny model learns (the tests' tiny corpus)."""
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog and cat runs home to sleep".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(lines)) + "\n")


def chargen_env() -> dict:
    # One thread: the runs are tiny, and the same thread count in every run keeps them bit-identical.
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chargen", "train", *args], env=chargen_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def saved_step(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["chargen"])["summary"]["step"]


def model_tensors(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}


def weights_differ(a: Path, b: Path) -> list[str]:
    """The model tensors that are not bit-identical between two checkpoints (or are in one only)."""
    import torch

    ta, tb = model_tensors(a), model_tensors(b)
    return sorted(set(ta) ^ set(tb)) + [k for k in sorted(set(ta) & set(tb)) if not torch.equal(ta[k], tb[k])]


def train_losses(path: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["train_loss"]) for r in read_metrics(path) if "train_loss" in r]


def metrics_problems(soaked: list[tuple[int, float]], straight: list[tuple[int, float]]) -> list[str]:
    """What is wrong with the soaked run's training records, against the uninterrupted run's."""
    steps = [s for s, _ in soaked]
    duplicates = sorted({s for s in steps if steps.count(s) > 1})
    problems = [f"steps logged more than once: {duplicates[:10]}"] if duplicates else []
    if sorted(set(steps)) != [s for s, _ in straight]:
        missing = sorted({s for s, _ in straight} - set(steps))
        problems.append(f"steps missing from metrics.jsonl: {missing[:10]}")
    expected = dict(straight)
    differ = [s for s, loss in soaked if s in expected and loss != expected[s]]
    if differ:
        problems.append(f"training loss differs from the uninterrupted run's at steps {differ[:10]}")
    return problems


def last_logged_step(path: Path) -> int:
    """The step of the newest whole record, reading only the end of the file (polled often)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return 0
    for line in reversed(tail.splitlines()):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def one_round(corpus: Path, run: Path, steps: int, rng: random.Random, result: SoakResult) -> None:
    """Start (or resume) the run, let it go a random distance, kill -9 it, and count what was lost."""
    resumed = saved_step(run / LAST) if (run / LAST).exists() else 0
    result.fresh_starts += not (run / LAST).exists()
    args = ["--resume", str(run)] if (run / LAST).exists() else [str(corpus), "--out", str(run), *TRAIN,
                                                                   "--max-steps", str(steps)]
    target = resumed + rng.randint(1, MAX_PROGRESS)
    extra = rng.uniform(0, 0.005)  # a few steps' time: the kill falls anywhere within a step or a save
    proc = start(args)
    deadline = time.monotonic() + ROUND_TIMEOUT
    while last_logged_step(run / METRICS) < target:
        if proc.poll() is not None:
            raise RuntimeError(f"round {result.kills + 1}: the run ended (exit {proc.returncode}) before "
                               f"the kill: {proc.stderr.read().strip()[-1500:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"round {result.kills + 1}: no progress past step {target} in {ROUND_TIMEOUT:.0f}s")
        time.sleep(POLL_SECONDS)
    time.sleep(extra)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    result.kills += 1
    result.mid_save += any(run.glob(f".{LAST}.tmp*"))
    reached = max((r.get("step", 0) for r in read_metrics(run / METRICS)), default=0)
    result.lost.append(reached - (saved_step(run / LAST) if (run / LAST).exists() else 0))


def finish(run: Path) -> None:
    proc = start(["--resume", str(run), "--save-every", "off"])  # the rest in one go: no kill to come
    try:
        _, err = proc.communicate(timeout=ROUND_TIMEOUT * 5)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError("the final resume did not finish in time") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the final resume failed (exit {proc.returncode}): {err.strip()[-500:]}")


def soak(kills: int, seed: int, workdir: Path) -> SoakResult:
    """Kill a run ``kills`` times, resume it to its end, and compare it with a run never killed."""
    rng = random.Random(seed)
    steps = kills * (MAX_PROGRESS + 60) + 50  # more than the kills can use up, so the run ends after them
    corpus, straight, run = workdir / "corpus.txt", workdir / "straight", workdir / "soaked"
    make_corpus(corpus)
    # Never killed, and saving at evaluations only: how often a run saves must not change what it learns.
    # It runs beside the soak (its own directory): the two take no longer than the soak alone.
    plain = start([str(corpus), "--out", str(straight), *TRAIN, "--max-steps", str(steps), "--save-every", "off"])
    try:
        result = SoakResult(steps=steps)
        for _ in range(kills):
            one_round(corpus, run, steps, rng, result)
        finish(run)
        _, err = plain.communicate(timeout=ROUND_TIMEOUT * 5)
    finally:
        if plain.poll() is None:
            plain.kill()
            plain.wait()
    if plain.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed: {err.strip()[-500:]}")
    differ = weights_differ(run / LAST, straight / LAST)
    result.tensors = len(model_tensors(straight / LAST))
    result.weights_equal = not differ and saved_step(run / LAST) == steps
    if differ:
        result.problems.append(f"final weights differ from the uninterrupted run's: {differ}")
    problems = metrics_problems(train_losses(run / METRICS), train_losses(straight / METRICS))
    result.metrics_ok = not problems
    result.problems += problems
    leftovers = sorted(p.name for p in run.glob("*.tmp*")) + sorted(p.name for p in run.glob(".*.tmp*"))
    if leftovers:
        result.problems.append(f"temp files left in the run directory: {leftovers}")
    return result


def report(result: SoakResult) -> str:
    lost = result.lost or [0]
    lines = [
        f"kills survived: {result.kills} of {result.kills} (SIGKILL at random moments, resumed each time); "
        f"{result.mid_save} landed in the middle of a save, {result.fresh_starts} before the first checkpoint",
        f"steps lost per kill: mean {statistics.mean(lost):.1f}, median {statistics.median(lost):g}, "
        f"max {max(lost)} (run of {result.steps:,} steps, last.safetensors every 50 ms)",
        f"final weights: {'bit-identical to' if result.weights_equal else 'DIFFERENT from'} the uninterrupted "
        f"run's ({result.tensors} tensors)",
        f"metrics.jsonl: {'every step once, same training loss' if result.metrics_ok else 'WRONG'}",
    ]
    lines += [f"problem: {p}" for p in result.problems]
    lines.append("soak: OK" if result.ok else "soak: FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="how many times to kill the run (default: 50)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_KILLS} kills: what the test suite runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill moments (default: 0)")
    parser.add_argument("--dir", type=Path, help="work here and keep the runs (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    kills = QUICK_KILLS if args.quick else args.kills
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        result = soak(kills, args.seed, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="chargen-soak-") as tmp:
            result = soak(kills, args.seed, Path(tmp))
    print(report(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
