"""What a training step minimizes: the next-token cross-entropy, plus AWD-LSTM's activation penalties.

Merity et al. (2017), "Regularizing and Optimizing LSTM Language Models": activation regularization
(AR) penalizes large outputs of the top layer (as the head reads them, after dropout), temporal
activation regularization (TAR) penalizes how much that output changes from one step to the next
(before dropout). Both are L2 terms on activations the forward pass computes anyway, so they keep
the fused recurrent kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import TopOutput


class _ActivationPenalty(torch.autograd.Function):
    """``activation_penalty`` with its gradient written out. Autograd's version of these few
    element-wise terms makes about twice as many passes over the ``[batch, time, hidden]``
    activations (casts, squares, slices and their backward), a visible share of a CPU step
    (bench/train_speed.py --dropout 0 --ar 2 --tar 1 times a run with them)."""

    @staticmethod
    def forward(ctx, raw: torch.Tensor, dropped: torch.Tensor, ar: float, tar: float) -> torch.Tensor:
        ctx.ar, ctx.tar = ar, tar
        ctx.save_for_backward(raw, dropped)
        dtype = torch.promote_types(raw.dtype, torch.float32)  # sums of squares in float32 at least
        penalty = torch.zeros((), dtype=dtype, device=raw.device)
        if ar:
            flat = dropped.reshape(-1).to(dtype)
            penalty += ar * torch.dot(flat, flat) / flat.numel()
        if tar and raw.size(1) > 1:
            change = (raw[:, 1:] - raw[:, :-1]).reshape(-1).to(dtype)
            penalty += tar * torch.dot(change, change) / change.numel()
        return penalty

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        raw, dropped = ctx.saved_tensors
        grad_raw = grad_dropped = None
        if ctx.ar:
            # The scale stays a float32 0-dim tensor: kernels apply such a scalar at float precision.
            grad_dropped = dropped * (2 * ctx.ar / dropped.numel() * grad)
        if ctx.tar and raw.size(1) > 1:
            # d/draw[t] of sum((raw[t+1] - raw[t])^2): 2(raw[t] - raw[t-1]) - 2(raw[t+1] - raw[t]).
            change = raw[:, 1:] - raw[:, :-1]
            change *= 2 * ctx.tar / change.numel() * grad
            grad_raw = F.pad(change, (0, 0, 1, 0)) - F.pad(change, (0, 0, 0, 1))
        return grad_raw, grad_dropped, None, None


def activation_penalty(top: TopOutput, ar: float, tar: float) -> torch.Tensor:
    """``ar`` × mean(dropped²) + ``tar`` × mean((raw[t+1] − raw[t])²) over a ``[batch, time, hidden]``
    window; 0 for what is off. TAR needs two steps: a one-step window has no change to penalize."""
    return _ActivationPenalty.apply(top.raw, top.dropped, float(ar), float(tar))


def training_loss(logits: torch.Tensor, targets: torch.Tensor, top: TopOutput, ar: float,
                  tar: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, objective)``: the cross-entropy in nats per token (what the run reports) and what
    the step differentiates (the loss plus the penalties)."""
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
    if not (ar or tar):
        return loss, loss
    return loss, loss + activation_penalty(top, ar, tar)
