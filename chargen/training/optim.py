"""The optimizer, the learning-rate schedule and the memory check before a model is built."""

from __future__ import annotations

import math
import os

import torch

from ..errors import ChargenError
from ..model import CharLM
from .config import TrainConfig

ADAM_BETAS = (0.9, 0.99)  # a shorter memory for the second moment than Adam's 0.999: steadier on small batches


def make_optimizer(model: CharLM, weight_decay: float, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only, in the first group (biases and the embedding
    table are exempt).

    The fused kernel where torch has one for the device (CUDA; the CPU from torch 2.4 on): the
    default multi-tensor update is several times slower, a visible share of a CPU training step.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.dim() >= 2 and not name.startswith("embed") else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, fused=True)
    except RuntimeError:  # no fused kernel for this device in this torch
        return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS)


def lr_at(step: int, progress: float, peak_lr: float, warmup_steps: int, min_lr_frac: float, schedule: str) -> float:
    """The learning rate at ``step``: a linear warm-up, then down to ``peak_lr * min_lr_frac`` along
    a cosine or a line as ``progress`` (the fraction of the budget used) goes from 0 to 1."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    floor = peak_lr * min_lr_frac
    if schedule == "linear":
        return floor + (peak_lr - floor) * (1 - progress)
    return floor + (peak_lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def check_model_fits(config: TrainConfig, vocab_size: int, device: torch.device) -> None:
    """Refuse, with a clear message, a model whose training state cannot fit in memory at all."""
    with torch.device("meta"):
        parameters = CharLM(config.model_config(vocab_size, 0.0)).num_parameters()
    # Weights, gradients and AdamW's two moments in fp32, plus the activations BPTT keeps.
    needed = parameters * 16 + config.batch_size * config.seq_len * (
        config.layers * config.hidden * 12 + vocab_size * 3) * 4
    try:
        if device.type == "cuda":
            available = torch.cuda.get_device_properties(device).total_memory
        else:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError, RuntimeError):
        return  # cannot tell here (e.g. Windows): let the allocator decide
    if needed > available:
        raise ChargenError(
            f"--layers {config.layers} --hidden {config.hidden}: a {parameters:,}-parameter model needs "
            f"about {needed / 1e9:,.1f} GB to train, but this {device.type} has {available / 1e9:.1f} GB; "
            "lower --hidden, --layers, --batch-size or --seq-len")
