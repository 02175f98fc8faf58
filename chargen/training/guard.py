"""The NaN/inf guard, kept on the device: a bad step is skipped without the host waiting for it.

Reading a loss back (``.item()``) makes the host wait until the accelerator has run every queued
kernel, so the next step's kernels cannot be queued ahead: on a GPU that per-step stall costs a
visible share of the speed. So each step's verdict (is the loss and the gradient norm finite?)
and the values to log are accumulated in device tensors, and read back only every
``sync_every`` steps. The update of a bad step is skipped inside the fused AdamW kernel through
its found-inf input, as ``GradScaler`` does; an optimizer without that input is checked on the
host at every step instead, as before. Either way a skipped step leaves weights and optimizer
state exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..compat import optimizer_skips_on_found_inf, set_found_inf


@dataclass
class GuardReading:
    """What the steps since the last reading did, read back in one transfer."""

    good_steps: int  # applied steps
    loss_sum: float  # their summed loss per token
    last_loss: float  # the newest applied step's loss per token
    last_grad_norm: float  # and its gradient norm, before clipping
    skipped_steps: int  # every skipped step of the run so far
    worst_bad_run: int  # the longest run of skipped steps in a row since the last reading


def sync_interval(device: torch.device, log_every: int) -> int:
    """Steps between readings: every step on a CPU, which computes the step itself, so nothing
    waits; on an accelerator once per metrics line, which needs the values anyway."""
    return 1 if device.type == "cpu" else log_every


class StepGuard:
    """Applies or skips each optimizer step by the finiteness of its loss and gradient norm."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, sync_every: int,
                 skipped_before: int = 0):
        self.optimizer = optimizer
        self.on_device = optimizer_skips_on_found_inf(optimizer)
        self.sync_every = sync_every if self.on_device else 1
        counts = torch.zeros(3, dtype=torch.int64, device=device)  # skipped, bad run, worst bad run
        counts[0] = skipped_before
        self.counts = counts
        self.values = torch.zeros(4, dtype=torch.float64, device=device)  # good, loss sum, last loss, grad norm

    def step(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """Run the optimizer step unless ``loss`` or ``grad_norm`` is not finite; returns the
        verdict as a device bool tensor (for masking the carried state)."""
        finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
        if self.on_device:
            set_found_inf(self.optimizer, (~finite).float())
            self.optimizer.step()
        elif finite.item():
            self.optimizer.step()
        bad = (~finite).long()
        run = (self.counts[1] + 1) * bad
        self.counts = torch.stack([self.counts[0] + bad, run, torch.maximum(self.counts[2], run)])
        kept = finite.double()
        loss, grad_norm = loss.detach().double(), grad_norm.detach().double()
        self.values = torch.stack([
            self.values[0] + kept,
            self.values[1] + torch.where(finite, loss, 0.0),
            torch.where(finite, loss, self.values[2]),
            torch.where(finite, grad_norm, self.values[3])])
        return finite

    def skipped_steps(self) -> int:
        return int(self.counts[0])

    def due(self, step: int) -> bool:
        return step % self.sync_every == 0

    def read(self) -> GuardReading:
        """The steps since the last reading (one device-to-host copy); starts a new window."""
        skipped, _, worst = self.counts.tolist()
        good, loss_sum, last_loss, grad_norm = self.values.tolist()
        self.values = torch.stack([self.values[0] * 0, self.values[1] * 0, self.values[2], self.values[3]])
        self.counts = torch.stack([self.counts[0], self.counts[1], self.counts[1]])
        return GuardReading(int(good), loss_sum, last_loss, grad_norm, skipped, worst)
