"""Checkpoints: safetensors weights plus JSON metadata, written atomically, loaded without pickle.

One file holds everything needed to use the model: the weights (``model.*`` tensors), the model
config, the tokenizer (a SentencePiece model included) and a training summary. ``last`` checkpoints
also carry the optimizer and RNG state (other tensor prefixes) so training can resume.

Loading validates the metadata against the format below before any of it is used, because a
checkpoint may come from anywhere: every problem is one ChargenError, never a crash.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .version import __version__
from .errors import ChargenError
from .fileio import atomic_write_bytes
from .limits import MAX_DROPOUT, MAX_HIDDEN, MAX_LAYERS, MAX_PARAMETERS, MAX_VOCAB_SIZE
from .model import BEFORE_OPTION, CELLS, CharLM, ModelConfig
from .pretrained import available_names, resolve_name
from .text.tokenizers import Tokenizer, tokenizer_from_dict

FORMAT_VERSION = 1
METADATA_KEY = "chargen"
BEST_NAME, LAST_NAME = "best.safetensors", "last.safetensors"
MAX_HEADER_BYTES = 100 << 20


@dataclass
class Checkpoint:
    """A loaded checkpoint: the ready model, its tokenizer and what training recorded."""

    path: Path
    model: CharLM
    tokenizer: Tokenizer
    summary: dict
    training_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory's best (else last) checkpoint."""
    path = resolve_name(path)  # a built-in model's name, unless a file or directory of that name exists
    if path.is_dir():
        for name in (BEST_NAME, LAST_NAME):
            if (path / name).is_file():
                return path / name
        raise ChargenError(f"{path}: no checkpoint in this directory (expected {BEST_NAME} or {LAST_NAME})")
    if not path.exists():
        names = available_names()
        known = (f", run directory or built-in model ({', '.join(names)}; see chargen models)" if names
                 else " or run directory")
        raise ChargenError(f"{path}: no such checkpoint file{known}")
    return path


def save_checkpoint(path: str | os.PathLike, model: CharLM, tokenizer: Tokenizer, summary: dict,
                    training_state: dict[str, torch.Tensor] | None = None,
                    weights_dtype: torch.dtype | None = None) -> None:
    """Write a checkpoint atomically: a crash at any moment leaves the old file or the new one.

    ``weights_dtype`` (e.g. bf16) stores the weights narrower; loading turns them back to fp32."""
    path = Path(path)
    tensors = {f"model.{name}": t if weights_dtype is None else t.to(weights_dtype)
               for name, t in _state_dict_untied(model).items()}
    for name, tensor in (training_state or {}).items():
        tensors[name] = tensor
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {
        "format_version": FORMAT_VERSION,
        "chargen_version": __version__,
        "model": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "summary": summary,
    }
    data = safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(metadata)})
    atomic_write_bytes(path, data)


def export_checkpoint(source: str | os.PathLike, target: str | os.PathLike,
                      weights_dtype: torch.dtype = torch.bfloat16) -> Checkpoint:
    """Write the weights of ``source`` (a checkpoint or run directory's best) to ``target``, compact:
    no training state, weights in ``weights_dtype``. What ships as a built-in model."""
    checkpoint = load_checkpoint(source)
    save_checkpoint(target, checkpoint.model, checkpoint.tokenizer, checkpoint.summary,
                    weights_dtype=weights_dtype)
    return checkpoint


def _state_dict_untied(model: CharLM) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; a tied head is restored from the embedding on load.
    state = model.state_dict()
    if model.config.tie_weights:
        state.pop("head.weight", None)
    return state


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    training_state: bool = False) -> Checkpoint:
    """Load and validate a checkpoint (file or run directory) onto ``device``.

    Never unpickles anything. With ``training_state`` also returns the optimizer/RNG tensors.
    """
    path = resolve_checkpoint(path)
    metadata = _read_metadata(path)
    config = _validate_model_config(metadata.get("model"), path)
    tokenizer = _load_tokenizer(metadata.get("tokenizer"), path)
    if tokenizer.vocab_size != config.vocab_size:
        raise ChargenError(f"{path}: tokenizer has {tokenizer.vocab_size} symbols but the model "
                           f"expects {config.vocab_size}; the checkpoint metadata was altered")
    summary = _validate_summary(metadata.get("summary"), path)

    with torch.device("meta"):
        expected = _state_dict_untied(CharLM(config))
    weights: dict[str, torch.Tensor] = {}
    extra: dict[str, torch.Tensor] = {}
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            names = set(f.keys())
            for name, want in expected.items():
                key = f"model.{name}"
                if key not in names:
                    raise ChargenError(f"{path}: tensor {key} is missing; the checkpoint is incomplete")
                shape = tuple(f.get_slice(key).get_shape())
                if shape != tuple(want.shape):
                    raise ChargenError(f"{path}: tensor {key} has shape {list(shape)} but the config "
                                       f"implies {list(want.shape)}; the checkpoint was altered")
                weights[name] = f.get_tensor(key)
            if training_state:
                extra = {k: f.get_tensor(k) for k in names if not k.startswith("model.")}
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ChargenError(f"{path}: checkpoint is corrupt or truncated ({exc})") from None

    for name, tensor in weights.items():
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise ChargenError(f"{path}: tensor model.{name} holds non-finite or non-float values")
    model = CharLM(config)
    if config.tie_weights:
        weights["head.weight"] = weights["embed.weight"]
    model.load_state_dict(weights)
    model.to(device).eval()
    return Checkpoint(path, model, tokenizer, summary, extra)


def read_metadata(path: str | os.PathLike) -> dict:
    """The validated metadata of a checkpoint without loading its tensors."""
    return _read_metadata(resolve_checkpoint(path))


def _read_metadata(path: Path) -> dict:
    if not path.is_file():
        raise ChargenError(f"{path}: not a regular file; give a checkpoint file or a run directory")
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
            f.seek(max(size - 1, 0))
            last = f.read(1)
    except OSError as exc:
        raise ChargenError(f"{path}: cannot read checkpoint: {exc.strerror or exc}") from None
    # safetensors: an 8-byte little-endian header length, then the JSON header itself.
    header_len = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
    looks_like_safetensors = len(head) == 9 and head[8:9] == b"{" and header_len + 8 <= size
    # A pickle (protocol 2 on) opens with PROTO (0x80, its version) and ends with STOP ('.');
    # torch.save writes a zip. Both byte checks, so that a safetensors file cut short after a header
    # length that happens to start with 0x80 is called truncated, not a pickle.
    pickled = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and last == b"."
    if not looks_like_safetensors and (head.startswith(b"PK\x03\x04") or pickled):
        raise ChargenError(f"{path}: this is a pickle/torch.save file; chargen only loads the "
                           ".safetensors checkpoints it writes and never unpickles files")
    if len(head) < 9:
        raise ChargenError(f"{path}: not a chargen checkpoint (file is empty or truncated)")
    if not looks_like_safetensors or header_len > MAX_HEADER_BYTES:
        raise ChargenError(f"{path}: not a chargen checkpoint (bad safetensors header; truncated or another format)")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ChargenError(f"{path}: checkpoint is corrupt or truncated ({exc})") from None
    if raw is None:
        raise ChargenError(f"{path}: a safetensors file, but not a chargen checkpoint (no chargen metadata)")
    try:
        metadata = json.loads(raw)
    except (ValueError, RecursionError):  # bad JSON, absurdly long numbers or nesting
        raise ChargenError(f"{path}: checkpoint metadata is not valid JSON; the file was altered") from None
    if not isinstance(metadata, dict):
        raise ChargenError(f"{path}: checkpoint metadata must be a JSON object")
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ChargenError(f"{path}: checkpoint metadata lacks an integer format_version")
    if version > FORMAT_VERSION:
        raise ChargenError(f"{path}: checkpoint format {version} is newer than this chargen "
                           f"understands ({FORMAT_VERSION}); upgrade chargen")
    if version < 1:
        raise ChargenError(f"{path}: checkpoint format {version} is not supported")
    return metadata


def _validate_model_config(data, path: Path) -> ModelConfig:
    if not isinstance(data, dict):
        raise ChargenError(f"{path}: checkpoint metadata lacks the model config")

    def field_of(name, kind, low=None, high=None, high_included=True):
        value = data.get(name, BEFORE_OPTION.get(name))
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if ok and isinstance(value, float):
            ok = math.isfinite(value)
        if ok and low is not None:
            ok = low <= value <= high and (high_included or value < high)
        if not ok:
            bounds = f" in [{low}, {high}{']' if high_included else ')'}" if low is not None else ""
            expected = getattr(kind, "__name__", "a number")
            raise ChargenError(f"{path}: model config '{name}' is {_short(value)}, expected {expected}{bounds}")
        return value

    config = ModelConfig(
        vocab_size=field_of("vocab_size", int, 1, MAX_VOCAB_SIZE),
        cell=data.get("cell"),
        layers=field_of("layers", int, 1, MAX_LAYERS),
        hidden=field_of("hidden", int, 1, MAX_HIDDEN),
        dropout=float(field_of("dropout", (int, float), 0, MAX_DROPOUT, high_included=False)),
        tie_weights=field_of("tie_weights", bool),
        # A checkpoint written before an option existed was trained without it (BEFORE_OPTION).
        skip_connections=field_of("skip_connections", bool),
        weight_drop=float(field_of("weight_drop", (int, float), 0, MAX_DROPOUT, high_included=False)),
        locked_dropout=field_of("locked_dropout", bool),
        embed_dropout=float(field_of("embed_dropout", (int, float), 0, MAX_DROPOUT, high_included=False)),
    )
    if config.cell not in CELLS:
        raise ChargenError(f"{path}: model config 'cell' is {config.cell!r}, expected one of {', '.join(CELLS)}")
    approx = config.vocab_size * config.hidden * 2 + config.layers * 8 * config.hidden ** 2
    if approx > MAX_PARAMETERS:
        raise ChargenError(f"{path}: model config describes ~{approx:,} parameters; refusing absurd sizes")
    return config


# What training records in a checkpoint: key -> (check, description). Other keys are ignored.
def _count(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 62


def _amount(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


SUMMARY_SCHEMA = {
    "step": (_count, "a whole number >= 0"),
    "epoch": (_amount, "a number >= 0"),
    "elapsed": (_amount, "a number of seconds >= 0"),
    "skipped_steps": (_count, "a whole number >= 0"),
    "best_val_loss": (lambda v: v is None or (_amount(v)), "null or a number >= 0"),
    "train_tokens": (_count, "a whole number >= 0"),
    "val_tokens": (_count, "a whole number >= 0"),
    "corpus": (lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v), "a list of paths"),
    "corpus_fingerprint": (lambda v: isinstance(v, str), "a string"),
    "train_config": (lambda v: isinstance(v, dict), "an object"),
    "optimizer_param_groups": (lambda v: isinstance(v, list) and all(isinstance(g, dict) for g in v),
                               "a list of objects"),
    "precision": (lambda v: isinstance(v, str), "a string"),
    "saved_at": (lambda v: isinstance(v, str), "a string"),
}
REQUIRED_SUMMARY_KEYS = ("step",)


def _validate_summary(summary, path: Path) -> dict:
    if not isinstance(summary, dict):
        raise ChargenError(f"{path}: checkpoint metadata lacks the training summary object")
    for key in REQUIRED_SUMMARY_KEYS:
        if key not in summary:
            raise ChargenError(f"{path}: checkpoint summary lacks '{key}'; the metadata was altered")
    for key, (check, description) in SUMMARY_SCHEMA.items():
        if key in summary and not check(summary[key]):
            raise ChargenError(f"{path}: checkpoint summary '{key}' is {_short(summary[key])}, "
                               f"expected {description}; the metadata was altered")
    return summary


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _load_tokenizer(data, path: Path) -> Tokenizer:
    try:
        return tokenizer_from_dict(data)
    except ChargenError as exc:
        raise ChargenError(f"{path}: {exc}") from None
