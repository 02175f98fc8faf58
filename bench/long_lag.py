"""Why LSTM: the long-time-lag experiment of Hochreiter & Schmidhuber (1997), on chargen's cells.

Each episode is a cue (one of 4 symbols), ``lag`` random distractors, ``=``, and the cue again
(``bench/recall.py``). Every cell is trained from scratch on the same episodes for the same number
of steps, with hidden sizes chosen so the parameter counts match, and scored on the recall after
``=`` (chance 25%). Then the vanishing gradient is measured rather than asserted: the norm of
d loss / d h_t at growing distances from a loss on the last step.

    python bench/long_lag.py                 # the README table (~10 min on 2 CPU cores)
    python bench/long_lag.py --quick         # lags 10,50,100 with fewer steps (~2 min)
    python bench/long_lag.py --cells lstm,rnn --lags 100 --steps 1000
    python bench/long_lag.py --quick --plot docs/img/vanishing-gradient.png   # the figure too (matplotlib)

A cell written ``lstm:1`` is an LSTM with that forget-gate bias at initialisation; plain ``lstm``
and ``lstm-peephole`` use ``--forget-bias``. chargen's own default is 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/recall.py

from chargen.ui.options import parse_duration  # noqa: E402
from chargen.model import CELLS, CharLM, ModelConfig  # noqa: E402
from chargen.text.long_lag import long_lag_tokenizer  # noqa: E402
from recall import (hidden_grad_norms, long_lag_batch, recall_accuracy, set_forget_bias,  # noqa: E402
                    train_recall)

DISTANCES = (1, 10, 50, 100, 200)
SYMBOLS = 4


def parse_row(spec: str, forget_bias: float) -> tuple[str, float | None]:
    """``lstm:1`` -> ("lstm", 1.0); ``rnn`` -> ("rnn", None)."""
    cell, _, bias = spec.partition(":")
    if cell not in CELLS:
        raise SystemExit(f"unknown cell {cell!r}; choose from {', '.join(CELLS)}")
    if cell.startswith("lstm"):
        return cell, float(bias) if bias else forget_bias
    if bias:
        raise SystemExit(f"{spec}: only LSTM cells have a forget-gate bias")
    return cell, None


def make_model(cell: str, hidden: int, forget_bias: float | None, vocab: int, seed: int) -> CharLM:
    torch.manual_seed(seed)
    # Untied head: with tied weights the plain RNN needed a lower learning rate than the others.
    model = CharLM(ModelConfig(vocab_size=vocab, cell=cell, layers=1, hidden=hidden, dropout=0.0,
                               tie_weights=False))
    if forget_bias is not None:
        set_forget_bias(model, forget_bias)
    return model


def matched_hidden(cell: str, target: int, vocab: int) -> int:
    """The hidden size whose parameter count is closest to ``target`` (LSTM 4 gate blocks, GRU 3, RNN 1)."""
    def count(h: int) -> int:
        with torch.device("meta"):
            model = CharLM(ModelConfig(vocab_size=vocab, cell=cell, layers=1, hidden=h, tie_weights=False))
        return model.num_parameters()
    return min(range(1, 1025), key=lambda h: abs(count(h) - target))


def label(cell: str, bias: float | None) -> str:
    return cell if bias is None else f"{cell} (forget bias {bias:g})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="rnn,gru,lstm:1,lstm,lstm-peephole", help="rows, comma-separated")
    parser.add_argument("--lags", default="10,50,100,200", help="distractors between cue and recall")
    parser.add_argument("--steps", type=int, default=400, help="training steps per cell and lag (batch 32)")
    parser.add_argument("--budget", type=parse_duration, default=None,
                        help="also stop each run after this wall time, e.g. 60s")
    parser.add_argument("--lstm-hidden", type=int, default=64,
                        help="LSTM hidden size; the other cells match its parameter count")
    parser.add_argument("--forget-bias", type=float, default=5.0,
                        help="forget-gate bias of lstm and lstm-peephole rows")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small models: 1 is fastest)")
    parser.add_argument("--quick", action="store_true", help="lags 10,50,100 and 150 steps (~2 min)")
    parser.add_argument("--plot", metavar="FILE", help="also draw the gradient norms by distance into FILE "
                        "(.png, .svg or .pdf; needs matplotlib: pip install 'chargen[plot]')")
    args = parser.parse_args(argv)
    if args.quick:
        args.lags, args.steps = "10,50,100", 150
    torch.set_num_threads(args.threads)
    lags = [int(x) for x in args.lags.split(",")]
    rows = [parse_row(spec, args.forget_bias) for spec in args.cells.split(",")]
    tokenizer = long_lag_tokenizer(SYMBOLS)
    vocab = tokenizer.vocab_size
    with torch.device("meta"):
        target = CharLM(ModelConfig(vocab_size=vocab, cell="lstm", layers=1, hidden=args.lstm_hidden,
                                    tie_weights=False)).num_parameters()
    hidden = {cell: matched_hidden(cell, target, vocab) for cell, _ in rows}

    print(f"# long-lag recall: {SYMBOLS} cues (chance {1 / SYMBOLS:.0%}), 8 distractor symbols, "
          f"{args.steps} steps x 32 episodes, lr {args.lr:g}, seed {args.seed}, "
          f"{torch.get_num_threads()} CPU thread(s)\n")
    print("| cell | hidden | params | " + " | ".join(f"lag {q}" for q in lags) + " | train time |")
    print("|---|---:|---:|" + "---:|" * len(lags) + "---:|")
    trained = {}
    for cell, bias in rows:
        accs, seconds = [], 0.0
        for lag in lags:
            model = make_model(cell, hidden[cell], bias, vocab, args.seed)
            started = time.perf_counter()
            train_recall(model, tokenizer, lag, args.steps, lr=args.lr, seed=args.seed, max_time=args.budget)
            seconds += time.perf_counter() - started
            accs.append(recall_accuracy(model, tokenizer, lag))
            trained[cell, bias] = (lag, model)
        print(f"| {label(cell, bias)} | {hidden[cell]} | {model.num_parameters():,} | "
              + " | ".join(f"{a:.0%}" for a in accs) + f" | {seconds:.0f}s |", flush=True)

    # The gradient reaching h_t from a loss on the recall at the end of a lag-200 episode.
    x, cues = long_lag_batch(tokenizer, max(DISTANCES), 16, torch.Generator().manual_seed(args.seed + 1))
    tokens = torch.cat([x, cues[:, None]], dim=1)
    distances = list(range(1, max(DISTANCES) + 1)) if args.plot else list(DISTANCES)  # every one for the figure
    curves = {}
    for title, source in (("at initialisation", None), (f"after training (lag {lags[-1]} models)", trained)):
        print(f"\n# mean ||d loss / d h_t|| at distance d from the loss, {title}\n")
        print("| cell | " + " | ".join(f"d={d}" for d in DISTANCES) + " |")
        print("|---|" + "---:|" * len(DISTANCES))
        for cell, bias in rows:
            model = make_model(cell, hidden[cell], bias, vocab, args.seed) if source is None else source[cell, bias][1]
            norms = hidden_grad_norms(model, tokens, distances)
            curves.setdefault(title, {})[label(cell, bias)] = norms
            print(f"| {label(cell, bias)} | " + " | ".join(f"{norms[d]:.1e}" for d in DISTANCES) + " |", flush=True)
    if args.plot:
        plot_gradients(curves, Path(args.plot))
        print(f"\nwrote {args.plot}")


def plot_gradients(curves: dict[str, dict[str, dict[int, float]]], out: Path) -> None:
    """One panel per moment (at initialisation, after training): ||d loss / d h_t|| against the
    distance d, log scale, one line per cell."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(curves), sharey=True, squeeze=False)[0]
    for ax, (title, rows) in zip(axes, curves.items()):
        for name, norms in rows.items():
            ax.plot(list(norms), list(norms.values()), label=name, linewidth=1.6)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("distance d from the loss (steps)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("mean ||d loss / d h_t||")
    axes[0].legend(fontsize=8)
    fig.suptitle("The vanishing gradient: how much of a loss reaches the state d steps back", fontsize=11)
    fig.savefig(out)


if __name__ == "__main__":
    main()
