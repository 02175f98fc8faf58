"""Sampling speed: chargen's Sampler against the naive per-char ``nn.LSTM`` loop, same process.

    python bench/sample_speed.py                 # 1x256, 2x512, 3x512; about half a minute
    python bench/sample_speed.py --threads 1     # e.g. on a machine shared with other work
    python bench/sample_speed.py --device cuda   # on a GPU; streams 1, 8, 64 and 256

For each shape it builds one random-weight model (vocab 65, as tinyshakespeare) and times, in
alternating rounds, (a) the naive loop: ``nn.LSTM`` called once per char at batch 1, then the
linear head, softmax and ``torch.multinomial``, and (b) ``chargen``'s ``Sampler.generate`` (the
whole user-visible path: token picking, decoding, stop filter) in fp32 and bf16. It prints the
median chars/s of each, the ratio to the naive loop and the precision chargen picks by default
here ("auto"). Then, for 2x512 at the default precision, batched generation (8 streams) and
priming with 100,000 chars. Machines here are noisy: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import statistics
import string
import time

import torch

from chargen.compat import bf16_matmul_available
from chargen.model.engine import auto_sampling_precision
from chargen.model import CharLM, ModelConfig
from chargen.generation.sampler import Sampler
from chargen.generation.settings import SamplingSettings
from chargen.text.tokenizers import CharTokenizer

VOCAB = "\n" + string.ascii_letters + " .,;:!?'-&$3"  # 65 symbols, like tinyshakespeare


@torch.inference_mode()
def naive_chars_per_sec(model: CharLM, length: int, seed: int = 0) -> float:
    """The baseline: what a straightforward sampling loop over nn.LSTM costs per char."""
    embed, lstm, head = model.embed, model.rnn, model.head
    device = head.weight.device
    generator = torch.Generator(device).manual_seed(seed)
    token, state = torch.zeros(1, 1, dtype=torch.long, device=device), None
    started = time.perf_counter()
    for _ in range(length):
        out, state = lstm(embed(token), state)
        probs = torch.softmax(head(out[:, -1]) / 1.0, dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)
        int(token)  # a real loop needs the char to print it
    return length / (time.perf_counter() - started)


def chargen_chars_per_sec(model: CharLM, tokenizer, length: int, precision: str,
                          streams: int = 1, seed: int = 0) -> float:
    """chars/s (all streams together) of chargen's Sampler.generate after a short prime."""
    sampler = Sampler(model, tokenizer, batch_size=streams, precision=precision)
    sampler.feed("\n")
    started = time.perf_counter()
    sampler.generate(SamplingSettings(temp=1.0, length=length, seed=seed))
    return streams * length / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", default="1x256,2x512,3x512")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--streams", default=None, help="streams sampled together, for the batched figures "
                        "(cpu: 8; cuda: 1,8,64,256)")
    args = parser.parse_args()
    device = torch.device(args.device)
    streams = [int(n) for n in (args.streams or ("8" if device.type == "cpu" else "1,8,64,256")).split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = CharTokenizer(VOCAB)
    precisions = ["fp32"] + (["bf16"] if device.type == "cpu" and bf16_matmul_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, bf16 matmul: {bf16_matmul_available()}")
    print(f"{'model':>7} | {'naive chars/s':>13} | "
          + " | ".join(f"{'chargen ' + p:>13} | {'ratio':>6}" for p in precisions) + " | default")

    for shape in args.shapes.split(","):
        layers, hidden = map(int, shape.split("x"))
        torch.manual_seed(0)
        model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=layers, hidden=hidden)).to(device).eval()
        # Lengths sized for ~0.3-1 s per run on a 2-core CPU.
        naive_len = max(100, 400_000 // (layers * hidden))
        fast_len = 5 * naive_len
        naive_chars_per_sec(model, 20)  # warm-up (oneDNN primitives, allocator)
        for p in precisions:
            chargen_chars_per_sec(model, tokenizer, 20, p)
        naive, fast = [], {p: [] for p in precisions}
        for _ in range(args.rounds):  # interleaved, so that load changes hit both alike
            naive.append(naive_chars_per_sec(model, naive_len))
            for p in precisions:
                fast[p].append(chargen_chars_per_sec(model, tokenizer, fast_len, p))
        base = statistics.median(naive)
        cells = " | ".join(f"{statistics.median(fast[p]):13,.0f} | {statistics.median(fast[p]) / base:5.2f}x"
                           for p in precisions)
        print(f"{shape:>7} | {base:13,.0f} | {cells} | {auto_sampling_precision(model)}")

    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, hidden=512)).to(device).eval()
    one = statistics.median(chargen_chars_per_sec(model, tokenizer, 400, "auto") for _ in range(args.rounds))
    for n in streams:
        many = statistics.median(chargen_chars_per_sec(model, tokenizer, 400, "auto", streams=n)
                                 for _ in range(args.rounds))
        print(f"2x512 batched, {auto_sampling_precision(model)}: {n} streams {many:,.0f} chars/s in total "
              f"({many / one:.2f}x one stream's {one:,.0f})")

    prime = "".join(VOCAB[i] for i in torch.randint(len(VOCAB), (100_000,)).tolist())
    times = []
    for _ in range(args.rounds):
        sampler = Sampler(model, tokenizer)
        started = time.perf_counter()
        sampler.feed(prime)
        times.append(time.perf_counter() - started)
    print(f"2x512 priming with {len(prime):,} chars: {statistics.median(times):.3f} s "
          f"(median of {args.rounds})")


if __name__ == "__main__":
    main()
