"""``chargen viz``: one self-contained HTML page showing what a model holds at every character.

The page (``viz_page.py``: inline JS and CSS, nothing fetched) colours a text one character per
cell by a chosen quantity: a layer's cell state, hidden state or gates (one unit at a time, or the
norm over units), or the model's surprisal, with its top-5 predictions on hover. To stay small
and fast, activations are stored as one byte per character and unit (a per-unit affine scale), and
only as many units as ``--max-mb`` allows: the most interpretable first (chargen.model.interpret),
then the others of every layer and kind in turn.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..devices import one_thread_for_single_steps
from ..errors import ChargenError, check_known_chars
from ..fileio import atomic_write_bytes
from ..limits import MAX_VIZ_CHARS, MAX_VIZ_MB, VIZ_DEFAULT_MB
from ..model.inspect import Trace, trace_text
from ..model.interpret import FEATURES, UnitScore, rank_units
from .viz_page import render_page

DEFAULT_CHARS = 20_000
FEATURED_UNITS = 20  # the interpretable units the page lists
PER_FEATURE = 3  # of which at least this many per feature, where a unit follows it best
KIND_LABELS = {"c": "cell state c", "h": "hidden state h", "i": "input gate", "f": "forget gate", "o": "output gate"}
# What the fixed part of a page costs: the template, the text, top-5 predictions (bytes per char).
PAGE_BASE_BYTES = 64_000
TEXT_BYTES_PER_CHAR = 24
UNIT_JSON_BYTES = 120  # a stored unit's entry besides its bytes: number, scale, note


def add_viz_arguments(parser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="a run directory (its best checkpoint) or a checkpoint file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", metavar="FILE", help="show the model reading this text file")
    source.add_argument("--generate", type=int, metavar="N", help="show the model reading N characters it generates")
    parser.add_argument("--out", default="viz.html", help="the HTML file to write (default: viz.html)")
    parser.add_argument("--max-chars", type=int, default=DEFAULT_CHARS,
                        help=f"show at most this many characters of --text, 1 to {MAX_VIZ_CHARS:,} "
                        f"(default: {DEFAULT_CHARS:,})")
    parser.add_argument("--max-mb", type=float, default=VIZ_DEFAULT_MB,
                        help=f"size cap of the page in MB; units beyond it are left out (default: {VIZ_DEFAULT_MB:g})")
    parser.add_argument("--prime", default="", help="--generate: text to start from (shown too)")
    parser.add_argument("--temp", type=float, default=0.8, help="--generate: sampling temperature (default: 0.8)")
    parser.add_argument("--seed", type=int, default=0, help="--generate: random seed (default: 0)")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of --text (default: utf-8)")


def quantize(values: np.ndarray) -> tuple[float, float, bytes]:
    """``values`` as one byte each, ``lo + q * (hi - lo) / 255``: (lo, hi, bytes). NaN reads as lo."""
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    span = hi - lo if hi > lo else 1.0
    q = np.clip(np.rint((finite - lo) / span * 255), 0, 255).astype(np.uint8)
    return lo, hi, q.tobytes()


def dequantize(lo: float, hi: float, data: bytes) -> np.ndarray:
    return lo + np.frombuffer(data, dtype=np.uint8).astype(np.float64) * ((hi - lo) / 255 if hi > lo else 0.0)


def select_units(rankings: dict[tuple[int, str], list[UnitScore]], slots: int,
                 featured: list[tuple[tuple[int, str], UnitScore]]) -> dict[tuple[int, str], list[int]]:
    """Which units of each (layer, kind) fit in ``slots``: the ``featured`` ones first, then every
    group's units in rank order, one group after another in turn, so that every kind is there."""
    chosen: dict[tuple[int, str], list[int]] = {group: [] for group in rankings}
    taken = set()

    def take(group, unit) -> None:
        if len(taken) < slots and (group, unit) not in taken:
            taken.add((group, unit))
            chosen[group].append(unit)

    for group, score in featured:
        take(group, score.unit)
    depth = 0
    while len(taken) < slots and any(depth < len(ranked) for ranked in rankings.values()):
        for group, ranked in rankings.items():
            if depth < len(ranked):
                take(group, ranked[depth].unit)
        depth += 1
    return chosen


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def token_labels(tokenizer) -> list[str]:
    """How the page names each token id in the top-5 list (whitespace made visible)."""
    visible = {"\n": "↵", " ": "␣", "\t": "⇥", "\r": "␍"}
    if tokenizer.kind == "byte":
        return [visible.get(chr(b), chr(b)) if 32 <= b < 127 or chr(b) in visible else f"\\x{b:02x}"
                for b in range(tokenizer.vocab_size)]
    return [visible.get(ch, ch) for ch in tokenizer.chars]


def scalar_quantity(label: str, kind: str, values: np.ndarray, note: str = "") -> dict:
    lo, hi, data = quantize(values)
    return {"label": label, "kind": kind, "note": note, "lo": lo, "hi": hi, "q": b64(data)}


def featured_units(everything: list[tuple[tuple[int, str], UnitScore]]) -> list[tuple[tuple[int, str], UnitScore]]:
    """The units the page lists: the best few for each feature (so a quote cell shows even where
    many units follow word boundaries better), then the best of the rest, best first."""
    ranked = sorted(everything, key=lambda item: -item[1].score)
    picked = []
    for feature in FEATURES:
        picked += [item for item in ranked if item[1].feature == feature][:PER_FEATURE]
    picked += [item for item in ranked if item not in picked][:max(FEATURED_UNITS - len(picked), 0)]
    return sorted(picked, key=lambda item: -item[1].score)


@dataclass
class PagePlan:
    rankings: dict[tuple[int, str], list[UnitScore]]
    featured: list[tuple[tuple[int, str], UnitScore]]
    chosen: dict[tuple[int, str], list[int]]
    total_units: int


def plan_page(trace: Trace, max_bytes: float) -> PagePlan:
    """Rank every group's units, pick the featured ones and what fits in ``max_bytes``."""
    T = len(trace.text)
    rankings = {}
    for kind, values in trace.states.items():
        for layer in range(values.shape[1]):
            rankings[(layer, kind)] = rank_units(values[:, layer], trace.text)
    everything = [(group, score) for group, ranked in rankings.items() for score in ranked]
    featured = featured_units(everything)
    scalars = 1 + sum(values.shape[1] for kind, values in trace.states.items() if kind in ("c", "h"))
    per_series = math.ceil(T / 3) * 4 + UNIT_JSON_BYTES  # base64 of one byte per character, and its entry
    room = max_bytes - PAGE_BASE_BYTES - TEXT_BYTES_PER_CHAR * T - scalars * per_series
    if room < per_series:
        need = (PAGE_BASE_BYTES + TEXT_BYTES_PER_CHAR * T + (scalars + 1) * per_series) / 1e6
        raise ChargenError(f"--max-mb {max_bytes / 1e6:g}: too small for {T:,} characters (at least "
                           f"{math.ceil(need * 10) / 10:g} MB); raise --max-mb or show fewer characters")
    slots = int(room // per_series)
    return PagePlan(rankings, featured, select_units(rankings, slots, featured), len(everything))


def page_data(trace: Trace, tokenizer, title: str, max_bytes: float) -> dict:
    """Everything the page shows, quantized, as the JSON the page's script reads."""
    plan = plan_page(trace, max_bytes)
    quantities = [scalar_quantity("surprisal (nats)", "surprisal", trace.surprisal,
                                  "-log p(character) given the text before it")]
    index = {}
    for kind, values in trace.states.items():
        for layer in range(values.shape[1]):
            if kind in ("c", "h"):
                quantities.append(scalar_quantity(f"layer {layer + 1} ‖{kind}‖", "norm",
                                                  np.linalg.norm(values[:, layer], axis=1),
                                                  f"the norm of the {KIND_LABELS[kind]} over all units"))
            scores = {s.unit: s for s in plan.rankings[(layer, kind)]}
            units = []
            for unit in plan.chosen[(layer, kind)]:
                lo, hi, data = quantize(values[:, layer, unit])
                s = scores[unit]
                units.append({"unit": unit, "lo": lo, "hi": hi, "q": b64(data),
                              "note": f"{s.feature} r={s.correlation:+.2f}"})
            if units:
                index[(layer, kind)] = len(quantities)
                quantities.append({"label": f"layer {layer + 1} {KIND_LABELS[kind]}", "kind": kind, "units": units,
                                   "total": values.shape[2], "note": f"{len(units)} of {values.shape[2]} units stored"})
    wide = tokenizer.vocab_size > 256
    ids = trace.top_ids.astype("<u2" if wide else np.uint8)
    probs = np.rint(np.clip(trace.top_probs, 0, 1) * 255).astype(np.uint8)
    featured = [{"quantity": index[group], "unit": s.unit, "feature": s.feature, "r": round(s.correlation, 3)}
                for group, s in plan.featured if group in index]
    return {"title": title, "text": trace.text, "cell": trace.cell, "vocab": token_labels(tokenizer),
            "top": {"k": int(ids.shape[1]), "wide": wide, "ids": b64(ids.tobytes()), "probs": b64(probs.tobytes())},
            "quantities": quantities, "featured": featured, "features": FEATURES,
            "stored_units": sum(len(u) for u in plan.chosen.values()), "total_units": plan.total_units}


def read_viz_text(args, model) -> str:
    """The text to show: --text FILE (its first --max-chars) or --generate N characters."""
    if not 1 <= args.max_chars <= MAX_VIZ_CHARS:
        raise ChargenError(f"--max-chars {args.max_chars}: must be between 1 and {MAX_VIZ_CHARS:,}")
    if args.generate is not None:
        if not 1 <= args.generate <= MAX_VIZ_CHARS:
            raise ChargenError(f"--generate {args.generate}: must be between 1 and {MAX_VIZ_CHARS:,} characters")
        check_known_chars(model.tokenizer, args.prime, "--prime")
        return args.prime + model.generate(args.prime, length=args.generate, temp=args.temp, seed=args.seed)
    path = Path(args.text)
    if not path.is_file():
        raise ChargenError(f"--text {path}: no such file; give a text file to show the model reading")
    try:
        with open(path, encoding=args.encoding, newline="") as f:
            text = f.read(args.max_chars)
    except UnicodeDecodeError:
        raise ChargenError(f"--text {path}: not {args.encoding} text; pass its --encoding") from None
    except LookupError:
        raise ChargenError(f"--encoding {args.encoding}: unknown text encoding") from None
    if not text:
        raise ChargenError(f"--text {path}: the file is empty; give a text to show")
    check_known_chars(model.tokenizer, text, f"--text {path}")
    return text


def viz(args) -> int:
    from ..api import load

    if not (math.isfinite(args.max_mb) and 0 < args.max_mb <= MAX_VIZ_MB):
        raise ChargenError(f"--max-mb {args.max_mb}: must be a number > 0 and at most {MAX_VIZ_MB:g}")
    model = load(args.checkpoint)
    one_thread_for_single_steps(model.device)
    if model.tokenizer.kind == "sentencepiece":
        raise ChargenError(f"{args.checkpoint}: chargen viz shows one model step per character, and this "
                           "model reads sentencepiece pieces; use a model trained with --tokenizer char or byte")
    text = read_viz_text(args, model)
    trace = trace_text(model.model, model.tokenizer, text)
    data = page_data(trace, model.tokenizer, f"{model.path} · {model.describe()}", args.max_mb * 1e6)
    page = render_page(data).encode("utf-8")
    out = Path(args.out)
    atomic_write_bytes(out, page, "page")
    best = data["featured"][0] if data["featured"] else None
    top = (f"; best unit: {data['quantities'][best['quantity']]['label']} {best['unit']} "
           f"({best['feature']}, r={best['r']:+.2f})" if best else "")
    print(f"wrote {out} ({len(page) / 1e6:.1f} MB): {len(trace.text):,} characters, "
          f"{data['stored_units']:,} of {data['total_units']:,} units stored{top}")
    return 0

