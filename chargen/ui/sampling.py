"""``chargen sample``: where the prime comes from, and where the samples go (the terminal, a file,
JSON lines), one per temperature of a ``--temp`` list."""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from ..api import Sample, load
from ..errors import ChargenError, describe_chars
from ..fileio import atomic_write_bytes
from ..generation.defaults import DEFAULTS_NAME, NOT_STORED, save_defaults
from ..generation.sampler import make_seed
from ..generation.settings import SamplingSettings
from ..limits import MAX_BEAM, MAX_NUM_SAMPLES
from ..text.unknown import clean_text
from .options import given_settings, sampling_settings, temperatures, unescape


def add_sample_io_arguments(parser: argparse.ArgumentParser) -> None:
    """``chargen sample``'s options for the prime's source and the samples' destination."""
    parser.add_argument("--prime", default=None,
                        help=r"text to start from (printed first); \n is understood; - reads it from standard input")
    parser.add_argument("--prime-file", metavar="FILE", help="read the text to start from from FILE (UTF-8)")
    parser.add_argument("--out", metavar="FILE", help="write the samples to FILE (atomically) instead of the terminal")
    parser.add_argument("--jsonl", action="store_true",
                        help="one JSON object per sample, as each finishes: text, prime, settings, seed, tokens, "
                        "nats_per_char of the generated text, stop_reason (length, stop or time)")
    parser.add_argument("--save-defaults", action="store_true",
                        help=f"store the sampling options given here as the run's defaults (RUN/{DEFAULTS_NAME}), "
                        "which sample, repl and chargen.load start from, and exit")


def read_prime(args, stdin=None) -> tuple[str, str]:
    """The prime and what to call it in messages, from --prime TEXT, --prime - or --prime-file."""
    if args.prime is not None and args.prime_file is not None:
        raise ChargenError("--prime and --prime-file: give one of them")
    if args.prime_file is not None:
        path = Path(args.prime_file)
        try:
            return path.read_text(encoding="utf-8"), f"--prime-file {path}"
        except FileNotFoundError:
            raise ChargenError(f"--prime-file {path}: no such file") from None
        except UnicodeDecodeError:
            raise ChargenError(f"--prime-file {path}: not UTF-8 text") from None
        except OSError as exc:
            raise ChargenError(f"--prime-file {path}: cannot read: {exc.strerror or exc}") from None
    if args.prime == "-":
        stdin = stdin or sys.stdin
        try:
            return stdin.read(), "the prime on standard input"
        except UnicodeDecodeError:
            raise ChargenError("--prime -: standard input is not UTF-8 text") from None
    return unescape(args.prime or ""), "--prime"


def check_sample_options(args) -> None:
    if not 1 <= args.num_samples <= MAX_NUM_SAMPLES:
        raise ChargenError(f"--num-samples {args.num_samples}: must be between 1 and {MAX_NUM_SAMPLES}")
    if not 0 <= args.beam <= MAX_BEAM:
        raise ChargenError(f"--beam {args.beam}: must be between 0 (off) and {MAX_BEAM}")
    if args.beam and (args.jsonl or (args.temp and len(args.temp) > 1)):
        raise ChargenError(f"--beam {args.beam}: --jsonl and several --temp values apply to sampling only")
    if args.save_defaults and args.temp and len(args.temp) > 1:
        raise ChargenError("--save-defaults: store one --temp, not a list")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise ChargenError(f"--out {args.out}: the directory {Path(args.out).parent} does not exist")
    if args.out and Path(args.out).is_dir():
        raise ChargenError(f"--out {args.out}: is a directory; give a file name")


def sample(args) -> int:
    check_sample_options(args)
    sampling_settings(args)  # bad values are reported before a model is loaded
    model = load(args.checkpoint, device=args.device)
    settings = sampling_settings(args, base=model.defaults)
    if args.save_defaults:
        return store_defaults(args, model.path)
    raw, what = read_prime(args)
    prime, unknown = clean_text(raw, model.tokenizer, args.unknown, what)
    if unknown:
        verb = "dropped" if args.unknown == "skip" else "replaced"
        print(f"chargen sample: warning: {verb} characters the model never saw in {what}: "
              f"{describe_chars(unknown)}", file=sys.stderr)
    out = io.StringIO() if args.out else sys.stdout
    if args.beam:
        out.write(prime + model.generate(prime, beam=args.beam, length=settings.length, stop=settings.stop) + "\n")
    elif args.jsonl:
        write_jsonl(model, prime, settings, args, out)
    else:
        write_text(model, prime, settings, args, out)
    out.flush()
    if args.out:
        atomic_write_bytes(Path(args.out), out.getvalue().encode("utf-8"), what="samples")
    return 0


def store_defaults(args, checkpoint: Path) -> int:
    values = {k: v for k, v in given_settings(args).items() if k not in NOT_STORED}
    if not values:
        raise ChargenError("--save-defaults: give the sampling options to store, e.g. --temp 0.7 --top-p 0.9")
    path = save_defaults(checkpoint, values)
    print(f"saved {', '.join(f'{k}={v!r}' for k, v in values.items())} to {path}")
    return 0


def runs(settings: SamplingSettings, args) -> list[tuple[str, SamplingSettings]]:
    """(label, settings) per temperature; one seed for them all, drawn here when none was given."""
    temps = temperatures(args, settings)
    if len(temps) == 1:
        return [("", settings)]
    seed = settings.seed if settings.seed is not None else make_seed()
    return [(f"temp {t:g}", replace(settings, temp=t, seed=seed).validate()) for t in temps]


def write_text(model, prime: str, settings: SamplingSettings, args, out) -> None:
    for label, options in runs(settings, args):
        if args.num_samples == 1 and not label:
            out.write(prime)
            out.flush()
            for piece in model.stream(prime, **asdict(options)):
                out.write(piece)
                out.flush()
            out.write("\n")
            continue
        texts = model.generate(prime, num_samples=args.num_samples, **asdict(options))
        for i, text in enumerate(texts if args.num_samples > 1 else [texts]):
            name = ", ".join(part for part in (label, f"sample {i + 1}" if args.num_samples > 1 else "") if part)
            out.write(f"--- {name} ---\n{prime}{text}\n")
            out.flush()


def write_jsonl(model, prime: str, settings: SamplingSettings, args, out) -> None:
    for _, options in runs(settings, args):
        for sample in model.samples(prime, num_samples=args.num_samples, **asdict(options)):
            out.write(json.dumps(sample_record(sample)) + "\n")
            out.flush()


def sample_record(sample: Sample) -> dict:
    """One ``--jsonl`` line."""
    settings = asdict(sample.settings)
    settings["stop"] = list(sample.settings.stops)
    outcome = sample.outcome
    return {"text": sample.text, "prime": sample.prompt, "sample": sample.index, "settings": settings,
            "seed": sample.settings.seed, "tokens": outcome.tokens, "nats_per_char": outcome.nats_per_char,
            "stop_reason": outcome.stop_reason, "stop_string": outcome.stop_string}
