"""Would a Mogrifier LSTM (Melis et al. 2019) pay per CPU-minute? Its training speed against the fused LSTM.

    python bench/mogrifier_speed.py                 # 2x512, batch 32 x 64, bf16 autocast, 4 rounds; ~1 min
    python bench/mogrifier_speed.py --rounds 2 --hidden 256

A Mogrifier cell lets the input and the state gate each other for a few rounds before every step
(x *= 2·σ(Q h), then h *= 2·σ(R x), ...), so the input's share of the gates can no longer be computed
for the whole window at once, and no fused kernel (oneDNN, cuDNN) runs it: it steps through time
in Python, like chargen's `lstm-peephole`. This prototype (not part of chargen) times forward and
backward of such a stack against ``nn.LSTM``'s fused kernel of the same width in the same process,
and, to separate the two costs, a plain LSTM stepped the same way (0 rounds). The ratio says how
many fewer tokens the cell could read in the same minutes; bench/HISTORY.md weighs that against
the gain per step the paper reports.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


class MogrifierLayer(nn.Module):
    """One Mogrifier LSTM layer, stepped through time (full-rank Q and R, as the paper's small models)."""

    def __init__(self, size: int, hidden: int, rounds: int):
        super().__init__()
        self.ih, self.hh = nn.Linear(size, 4 * hidden), nn.Linear(hidden, 4 * hidden, bias=False)
        self.q = nn.ModuleList(nn.Linear(hidden, size) for _ in range((rounds + 1) // 2))  # state gates input
        self.r = nn.ModuleList(nn.Linear(size, hidden) for _ in range(rounds // 2))  # input gates state
        self.rounds = rounds

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [time, batch, size]
        h = c = x.new_zeros(x.size(1), self.hh.in_features)
        outputs = []
        for x_t in x:
            for i in range(self.rounds):
                if i % 2 == 0:
                    x_t = 2 * torch.sigmoid(self.q[i // 2](h)) * x_t
                else:
                    h = 2 * torch.sigmoid(self.r[i // 2](x_t)) * h
            i_gate, f_gate, g_gate, o_gate = (self.ih(x_t) + self.hh(h)).chunk(4, dim=1)
            c = torch.sigmoid(f_gate) * c + torch.sigmoid(i_gate) * torch.tanh(g_gate)
            h = torch.sigmoid(o_gate) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs)


def seconds_per_step(run, repeats: int) -> float:
    """Median seconds of ``run`` (forward and backward) after two warm-up calls."""
    run(), run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4, help="Mogrifier rounds (the paper's best: 4 to 6)")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.seq_len, args.batch, args.hidden)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32

    def timed(model: nn.Module) -> float:
        def run():
            with torch.autocast("cpu", dtype, enabled=dtype != torch.float32):
                y = model(x)
            (y[0] if isinstance(y, tuple) else y).float().sum().backward()
        return seconds_per_step(run, args.repeats)

    fused = nn.LSTM(args.hidden, args.hidden, args.layers)
    tokens = args.batch * args.seq_len
    print(f"{args.layers}x{args.hidden}, batch {args.batch} x {args.seq_len}, {args.precision}, "
          f"forward + backward, tokens/s ({torch.get_num_threads()} threads):")
    for rounds, name in ((0, "LSTM stepped in Python"), (args.rounds, f"Mogrifier, {args.rounds} rounds")):
        stepped = nn.Sequential(*(MogrifierLayer(args.hidden, args.hidden, rounds) for _ in range(args.layers)))
        fused_s, stepped_s = timed(fused), timed(stepped)  # the baseline again beside each: machines drift
        print(f"  {name:<24} {tokens / stepped_s:>9,.0f}   fused nn.LSTM {tokens / fused_s:>9,.0f}   "
              f"{stepped_s / fused_s:.1f}x slower")


if __name__ == "__main__":
    main()
