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

from . import __version__
from .errors import ChargenError
from .model import CELLS, CharLM, ModelConfig
from .tokenizers import MAX_VOCAB_SIZE, Tokenizer, tokenizer_from_dict

FORMAT_VERSION = 1
METADATA_KEY = "chargen"
BEST_NAME, LAST_NAME = "best.safetensors", "last.safetensors"
MAX_HEADER_BYTES = 100 << 20
MAX_PARAMETERS = 4 << 30  # refuse configs that would allocate absurd amounts of memory


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
    path = Path(path)
    if path.is_dir():
        for name in (BEST_NAME, LAST_NAME):
            if (path / name).is_file():
                return path / name
        raise ChargenError(f"{path}: no checkpoint in this directory (expected {BEST_NAME} or {LAST_NAME})")
    if not path.exists():
        raise ChargenError(f"{path}: no such checkpoint file or run directory")
    return path


def save_checkpoint(path: str | os.PathLike, model: CharLM, tokenizer: Tokenizer, summary: dict,
                    training_state: dict[str, torch.Tensor] | None = None) -> None:
    """Write a checkpoint atomically: a crash at any moment leaves the old file or the new one."""
    path = Path(path)
    tensors = {f"model.{name}": t for name, t in _state_dict_untied(model).items()}
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise ChargenError(f"{path}: cannot save checkpoint: {exc.strerror or exc}; "
                           "earlier checkpoints are untouched") from None


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    summary = metadata.get("summary", {})
    if not isinstance(summary, dict):
        raise ChargenError(f"{path}: checkpoint metadata 'summary' must be an object")

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
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = path.stat().st_size
    except OSError as exc:
        raise ChargenError(f"{path}: cannot read checkpoint: {exc.strerror or exc}") from None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise ChargenError(f"{path}: this is a pickle/torch.save file; chargen only loads the "
                           ".safetensors checkpoints it writes and never unpickles files")
    if len(head) < 8:
        raise ChargenError(f"{path}: not a chargen checkpoint (file is empty or truncated)")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > MAX_HEADER_BYTES or header_len + 8 > size:
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
    except json.JSONDecodeError:
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

    def field_of(name, kind, low=None, high=None):
        value = data.get(name)
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if ok and isinstance(value, float):
            ok = math.isfinite(value)
        if ok and low is not None:
            ok = low <= value <= high
        if not ok:
            bounds = f" in [{low}, {high}]" if low is not None else ""
            expected = getattr(kind, "__name__", "a number")
            raise ChargenError(f"{path}: model config '{name}' is {value!r}, expected {expected}{bounds}")
        return value

    config = ModelConfig(
        vocab_size=field_of("vocab_size", int, 1, MAX_VOCAB_SIZE),
        cell=data.get("cell"),
        layers=field_of("layers", int, 1, 64),
        hidden=field_of("hidden", int, 1, 1 << 16),
        dropout=float(field_of("dropout", (int, float), 0, 0.99)),
        tie_weights=field_of("tie_weights", bool),
    )
    if config.cell not in CELLS:
        raise ChargenError(f"{path}: model config 'cell' is {config.cell!r}, expected one of {', '.join(CELLS)}")
    approx = config.vocab_size * config.hidden * 2 + config.layers * 8 * config.hidden ** 2
    if approx > MAX_PARAMETERS:
        raise ChargenError(f"{path}: model config describes ~{approx:,} parameters; refusing absurd sizes")
    return config


def _load_tokenizer(data, path: Path) -> Tokenizer:
    try:
        return tokenizer_from_dict(data)
    except ChargenError as exc:
        raise ChargenError(f"{path}: {exc}") from None
