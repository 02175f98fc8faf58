"""Continuing a run where it stopped: what a ``last`` checkpoint holds and how it is put back.

A resumed run must continue bit-exactly: same weights, optimizer moments, RNG streams, carried
recurrent state and data position. Everything read back is checked first, because a checkpoint
may have been altered; a problem is one ChargenError that says what can still be done.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import LAST_NAME, Checkpoint, load_checkpoint
from ..errors import ChargenError
from ..limits import MAX_ACTIVATION_PENALTY, MAX_LR
from ..model import ModelConfig, State
from .config import BEFORE_OPTION, RESUME_OVERRIDABLE, TrainConfig, flag_name


def load_resumable(resume: str | os.PathLike) -> Checkpoint:
    """The checkpoint ``--resume`` continues from: a run directory's last one, or a file."""
    path = Path(resume)
    if path.is_dir():
        if not (path / LAST_NAME).is_file():
            raise ChargenError(f"--resume {path}: no {LAST_NAME} in this directory, nothing to resume "
                               "(a run that never saved one starts over; --init-from takes a best checkpoint)")
        path = path / LAST_NAME
    resumed = load_checkpoint(path, training_state=True)
    if not any(name.startswith("optim.") for name in resumed.training_state) or \
            not isinstance(resumed.summary.get("train_config"), dict):
        raise ChargenError(f"--resume {path}: this checkpoint has no optimizer state (only 'last' "
                           f"checkpoints do); resume from the run directory, or fine-tune from it with "
                           f"--init-from {path}")
    return resumed


def recorded_corpus(resumed: Checkpoint, resume: str) -> list[str]:
    """The corpus files a resumed run trained on, with a way forward if they are gone."""
    corpus_paths = resumed.summary.get("corpus", [])
    if not corpus_paths:
        raise ChargenError(f"--resume {resume}: the checkpoint does not record its corpus; "
                           f"give it: chargen train CORPUS --resume {resume}")
    gone = [p for p in corpus_paths if not Path(p).exists()]
    if gone:
        others = f" (and {len(gone) - 1} more of its files)" if len(gone) > 1 else ""
        raise ChargenError(
            f"{gone[0]}: this run's corpus is no longer there{others}; if it moved, give its "
            f"new place: chargen train NEW_PATH --resume {resume}; if it is gone, train a new "
            f"run from these weights: chargen train CORPUS --init-from {resumed.path}")
    return corpus_paths


def config_for_resume(config: TrainConfig, resumed: Checkpoint, resume: str) -> TrainConfig:
    """The run's saved config, with the options the user may change on resume taken from ``config``.

    An option the user set (it differs from the default) overrides the saved one if it may change
    (train longer, another device); otherwise it must agree with the run.
    """
    saved = resumed.summary.get("train_config")
    if not isinstance(saved, dict):
        raise ChargenError(f"{resume}: checkpoint has no training state to resume (is it a 'last' checkpoint?)")
    known = {f.name for f in fields(TrainConfig)}
    saved = {**BEFORE_OPTION, **saved}  # runs from before an option trained without it, whatever today's default
    try:
        merged = TrainConfig(**{k: v for k, v in saved.items() if k in known}).validate()
    except ChargenError as exc:
        raise ChargenError(f"{resume}: the saved training config is invalid ({exc}); "
                           "the checkpoint metadata was altered") from None
    if "auto" in (merged.hidden, merged.seq_len):  # a run records the numbers it chose
        raise ChargenError(f"{resume}: the saved training config is invalid (hidden and seq_len "
                           "must be numbers); the checkpoint metadata was altered")
    for f in fields(TrainConfig):
        given = getattr(config, f.name)
        if f.name in ("out", "init_from", "extend_vocab") or given == f.default:
            continue
        if f.name in RESUME_OVERRIDABLE:
            setattr(merged, f.name, given)
        elif given != getattr(merged, f.name):
            flag = flag_name(f.name)
            raise ChargenError(f"{flag} {given}: this run was trained with {flag} "
                               f"{getattr(merged, f.name)} and a resumed run must keep it; only "
                               f"{', '.join(flag_name(n) for n in RESUME_OVERRIDABLE)} "
                               "may change. Start a new run (or --init-from) to change it")
    return merged


def check_same_corpus(resumed: Checkpoint, files: list[Path], train_tokens: int, fingerprint: str) -> None:
    """A resumed run must see the very tokens it was trained on, or its data position means nothing."""
    summary = resumed.summary
    want = summary.get("corpus_fingerprint")
    if summary.get("train_tokens") in (None, train_tokens) and want in (None, fingerprint):
        return
    raise ChargenError(
        f"{', '.join(str(p) for p in files)}: not the text this run was trained on "
        f"(it had {summary.get('train_tokens', '?'):,} training tokens, this has "
        f"{train_tokens:,}); resume with the original corpus, or start a new run from "
        f"these weights with --init-from {resumed.path}")


def altered(path: Path, what: str) -> ChargenError:
    return ChargenError(f"{path}: {what}; the checkpoint was altered, resume is impossible "
                        "(the weights can still be used with --init-from)")


def saved_peak_lr(resumed: Checkpoint) -> float:
    """The learning rate a run with ``--lr auto`` chose: a resumed run keeps it."""
    peak_lr = resumed.summary.get("peak_lr")
    if not isinstance(peak_lr, (int, float)) or not 0 < peak_lr <= MAX_LR:
        raise altered(resumed.path, "its peak learning rate is missing or invalid")
    return float(peak_lr)


def saved_penalty(resumed: Checkpoint, name: str) -> float:
    """The activation penalty (``ar`` or ``tar``) a run with ``--ar``/``--tar auto`` chose: a resumed run keeps it."""
    value = resumed.summary.get(name)
    if not isinstance(value, (int, float)) or not 0 <= value <= MAX_ACTIVATION_PENALTY:
        raise altered(resumed.path, f"its activation penalty ({name}) is missing or invalid")
    return float(value)


def restore_optimizer(optimizer: torch.optim.Optimizer, resumed: Checkpoint) -> None:
    """Load the saved AdamW moments and settings into ``optimizer``, checking every tensor."""
    tensors, path = resumed.training_state, resumed.path
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups = resumed.summary.get("optimizer_param_groups")
    if not groups or len(groups) != len(optimizer.param_groups) or any(
            not isinstance(g.get("params"), list) or len(g["params"]) != len(own["params"])
            for g, own in zip(groups, optimizer.param_groups)):
        raise altered(path, "its optimizer settings do not match the model")
    state = {"state": {}, "param_groups": groups}
    for name, tensor in tensors.items():
        if not name.startswith("optim."):
            continue
        _, index, key = (name.split(".", 2) + ["", ""])[:3]
        if not index.isdigit() or int(index) >= len(params) or key not in ("step", "exp_avg", "exp_avg_sq"):
            raise altered(path, f"unexpected optimizer tensor {name}")
        want = () if key == "step" else tuple(params[int(index)].shape)
        if tuple(tensor.shape) != want or not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise altered(path, f"optimizer tensor {name} has the wrong shape, type or non-finite values")
        state["state"].setdefault(int(index), {})[key] = tensor
    try:
        optimizer.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise altered(path, f"its optimizer or RNG state does not load ({exc})") from None


def restore_rng(resumed: Checkpoint, device: torch.device) -> None:
    tensors = resumed.training_state
    try:
        if "rng.torch" in tensors:
            torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise altered(resumed.path, f"its optimizer or RNG state does not load ({exc})") from None


def saved_rnn_state(resumed: Checkpoint, config: ModelConfig, batch_size: int) -> State:
    """The recurrent state carried at the saved step (all streams), or None at an epoch's start."""
    tensors = resumed.training_state
    if "rnn_state.h" not in tensors:
        return None
    h, cell = tensors["rnn_state.h"], tensors.get("rnn_state.c")
    want = (config.layers, batch_size, config.hidden)
    for t in (h, cell) if cell is not None else (h,):
        if tuple(t.shape) != want or not t.is_floating_point() or not torch.isfinite(t).all():
            raise altered(resumed.path, "its carried recurrent state has the wrong shape or non-finite values")
    if (cell is not None) != config.cell.startswith("lstm"):  # LSTMs carry (h, c), others h
        raise altered(resumed.path, "its carried recurrent state does not fit the cell")
    return (h, cell) if cell is not None else h


def training_state(optimizer: torch.optim.Optimizer, device: torch.device, dist, state: State) -> dict:
    """The tensors a ``last`` checkpoint carries besides the weights (every rank must call this)."""
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    for index, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    if dist.enabled:  # each rank's own generator, so a resumed run draws the same masks
        tensors["rng.torch.ranks"] = dist.gather_rng(torch.get_rng_state())
    state = dist.gather_state(state)  # all streams, in order, from every rank
    if state is not None:
        h, c = state if isinstance(state, tuple) else (state, None)
        tensors["rnn_state.h"] = h
        if c is not None:
            tensors["rnn_state.c"] = c
    return tensors


def corpus_fingerprint(tokens: np.ndarray) -> str:
    """A cheap identity of the training tokens: their count and 16 evenly spaced runs of 65536.

    Few long runs rather than every n-th token: on a memory-mapped corpus each place touched maps
    up to a 2 MB page-cache folio, so a strided sample would read the whole token file (seconds
    for a big corpus, and all of it counted as resident memory) where 16 runs map about 32 MB.
    """
    runs, run = 16, 1 << 16
    if len(tokens) <= runs * run:
        sample = np.ascontiguousarray(tokens, dtype=np.uint32)
    else:
        starts = np.linspace(0, len(tokens) - run, runs).astype(np.int64)
        sample = np.concatenate([np.asarray(tokens[i:i + run], dtype=np.uint32) for i in starts])
    return f"{len(tokens)}:" + hashlib.sha256(sample.tobytes()).hexdigest()[:16]
