"""Benchmark: encode a big mixed-script corpus, then start training from the token cache.

    python bench/big_corpus.py              # 500 MB, one file
    python bench/big_corpus.py --mb 20      # quick run
    python bench/big_corpus.py --files 10000 --mb 50   # a directory of many small files

A UTF-8 corpus of ``--mb`` megabytes (Latin, Cyrillic, Greek, Devanagari, Arabic, CJK, emoji...)
is generated in a temporary directory, deleted afterwards. Each phase runs in a fresh Python
process so its peak RSS (``ru_maxrss``) is that phase's own:

1. encode: ``load_corpus`` with an empty cache: vocabulary pass + encoding pass + cache write.
2. start (cold): ``Trainer`` over the same corpus; the cache from phase 1 is hit. Times the
   construction and the first training step; a few more steps and one evaluation follow, so
   the peak RSS covers the start of training, evaluation included.
3. start (warm): the same again, to show a second run on a warm page cache.

Timings on a shared machine are noisy: run it twice when a figure matters.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Words in several scripts; lines mix them the way multilingual web text does.
SCRIPTS = {
    "latin": "abcdefghijklmnopqrstuvwxyzéèàçñöüß",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
    "greek": "αβγδεζηθικλμνξοπρστυφχψω",
    "devanagari": "कखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह" + "ािीुूेैोौं्",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "cjk": "".join(chr(c) for c in range(0x4E00, 0x4E00 + 3000, 3)),
    "hangul": "".join(chr(c) for c in range(0xAC00, 0xAC00 + 1200, 7)),
    "emoji": "".join(chr(c) for c in range(0x1F600, 0x1F650)) + "🚀🌍🎉❤️✨",
}
PUNCTUATION = [", ", ". ", "! ", "? ", " — ", ": ", " "]


def make_lines(count: int, seed: int) -> list[bytes]:
    """``count`` distinct random lines of mixed-script words, UTF-8 encoded."""
    rng = random.Random(seed)
    names = list(SCRIPTS)
    weights = [30, 15, 5, 10, 10, 15, 5, 3]
    lines = []
    for _ in range(count):
        words = []
        for _ in range(rng.randint(4, 18)):
            alphabet = SCRIPTS[rng.choices(names, weights)[0]]
            words.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))))
            words.append(rng.choice(PUNCTUATION))
        lines.append(("".join(words).strip() + "\n").encode("utf-8"))
    return lines


def write_corpus(root: Path, megabytes: float, files: int, seed: int = 0) -> tuple[Path, int]:
    """Write the corpus (one file, or ``files`` files in a directory); returns (path, bytes)."""
    import numpy as np

    lines = make_lines(50_000, seed)
    lengths = np.array([len(line) for line in lines])
    target = int(megabytes * 1e6)
    rng = np.random.default_rng(seed)
    path = root / ("corpus.txt" if files == 0 else "corpus")
    outs = [path] if files == 0 else [path / f"{i // 1000:03d}" / f"doc{i:06d}.txt" for i in range(files)]
    written = 0
    for index, out in enumerate(outs):
        out.parent.mkdir(parents=True, exist_ok=True)
        size = (target - written) // (len(outs) - index)  # the files share what is left evenly
        with open(out, "wb") as f:
            done = 0
            while done < size:
                # A block of lines at a time: a few MB per join keeps generation fast and small.
                picks = rng.integers(0, len(lines), size=max(1, min(40_000, (size - done) // 60)))
                keep = picks[np.cumsum(lengths[picks]) <= size - done]
                if len(keep) == 0:
                    keep = picks[:1]  # the last line may overshoot the size a little
                block = b"".join(lines[i] for i in keep)
                f.write(block)
                done += len(block)
        written += done
    return path, written


ENCODE = """
import json, resource, sys, time
t0 = time.perf_counter()
from chargen.text.corpus import load_corpus
imported = time.perf_counter()
from chargen.training import TrainConfig
# The settings a training run passes, so that its start finds this cache entry.
corpus = load_corpus([sys.argv[1]], tokenizer_kind=sys.argv[3], vocab_size=TrainConfig().vocab_size,
                     cache_dir=sys.argv[2])
done = time.perf_counter()
print(json.dumps({"import_s": imported - t0, "encode_s": done - imported, "tokens": len(corpus.tokens),
                  "vocab": corpus.tokenizer.vocab_size, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

START = """
import json, resource, sys, time
t0 = time.perf_counter()
import torch
if int(sys.argv[7]):
    torch.set_num_threads(int(sys.argv[7]))
from chargen.training import StepDone, TrainConfig, Trainer
imported = time.perf_counter()
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
marks = {}
def on_event(event):
    if isinstance(event, StepDone) and "first_step" not in marks:
        marks["first_step"] = time.perf_counter()
config = TrainConfig(tokenizer=sys.argv[3], hidden=int(sys.argv[4]), layers=2, max_steps=5, eval_every=5,
                     eval_tokens=int(sys.argv[5]), log_every=1, preview_length=0, device="cpu", precision="fp32",
                     out=sys.argv[2] + "/run" + sys.argv[6])
trainer = Trainer(config, [sys.argv[1]], on_event=on_event)
built = time.perf_counter()
ready_rss = peak()
trainer.run()
print(json.dumps({"import_s": imported - t0, "init_s": built - imported, "ready_rss_mb": ready_rss,
                  "first_step_s": marks["first_step"] - built, "peak_rss_mb": peak()}))
"""


def run_phase(code: str, *args) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"phase failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=500, help="corpus size in MB (default: 500)")
    parser.add_argument("--files", type=int, default=0, help="split into this many files in a directory (default: one file)")
    parser.add_argument("--tokenizer", default="char", help="char, byte or sentencepiece (default: char)")
    parser.add_argument("--hidden", type=int, default=128, help="model hidden size for the start-up phase (default: 128)")
    parser.add_argument("--eval-tokens", type=int, default=50_000, help="validation tokens scored by the one evaluation (default: 50000)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for the training steps (default: torch's choice; 1 on a busy machine)")
    parser.add_argument("--dir", help="where to make the temporary directory (default: the system temp dir)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="chargen-bench-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        corpus, size = write_corpus(root, args.mb, args.files)
        print(f"corpus: {size / 1e6:.1f} MB in {max(args.files, 1)} file(s), generated in {time.perf_counter() - t0:.1f}s ({root})")
        cache = root / "runs" / ".cache"
        enc = run_phase(ENCODE, corpus, cache, args.tokenizer)
        print(f"encode:  {enc['encode_s']:6.2f}s  {size / 1e6 / enc['encode_s']:6.1f} MB/s  peak RSS {enc['peak_rss_mb']:6.0f} MB"
              f"  ({enc['tokens']:,} tokens, vocab {enc['vocab']:,}; import {enc['import_s']:.2f}s)")
        for label, n in (("start", 1), ("touched", 2)):
            if label == "touched":  # new mtime, same bytes: the files are hashed again, the cache still hits
                for path in [corpus] if corpus.is_file() else corpus.rglob("*.txt"):
                    os.utime(path)
            start = run_phase(START, corpus, root / "runs", args.tokenizer, args.hidden, args.eval_tokens, n, args.threads)
            print(f"{label + ':':9s}Trainer() ready in {start['init_s']:5.2f}s, RSS {start['ready_rss_mb']:4.0f} MB; "
                  f"then 5 steps + 1 eval: first step {start['first_step_s']:5.2f}s, peak RSS {start['peak_rss_mb']:4.0f} MB"
                  f"  (import {start['import_s']:.2f}s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
