"""Data-parallel training with torch.distributed, started by ``torchrun``.

``torchrun --nproc_per_node=N -m chargen train ...`` starts N copies of the training command with
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in their environment. ``setup`` sees
those, joins the process group (NCCL on GPUs, gloo on CPU) and returns a ``Distributed`` that the
trainer asks the few questions data parallelism raises: which TBPTT streams are mine, what is the
global loss, who writes files. Without torchrun it returns a single-process ``Distributed`` whose
methods do nothing, so the trainer has one code path.

The split of work: ``--batch-size`` is the total across ranks; rank r trains streams
r, r+N, r+2N, ... of the batch, so the ranks' streams are disjoint and together exactly the
single-process batch. DistributedDataParallel averages the gradients, which makes a step the
same step a single process would take on the whole batch.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ChargenError
from ..model import State, map_state


@dataclass
class Distributed:
    """This process's place in the job. ``world_size == 1`` means not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we called init_process_group, so we tear it down

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and the dashboard."""
        return self.rank == 0

    def streams(self, batch_size: int) -> range:
        """The TBPTT streams (rows of the full batch) this rank trains."""
        return range(self.rank, batch_size, self.world_size)

    def wrap_model(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module the training step calls: DDP around ``model`` when distributed."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def agree(self, elapsed: float, stop: bool) -> tuple[float, bool]:
        """Rank 0's clock, and whether any rank was asked to stop.

        Every rank must take the same decisions (stop now? which learning rate?) or the
        collectives stop matching and the job hangs; the schedule depends on elapsed time when
        --max-time is given, so all ranks use rank 0's.
        """
        if not self.enabled:
            return elapsed, stop
        flags = torch.tensor([elapsed if self.is_main else 0.0, float(stop)], dtype=torch.float64,
                             device=self._device)
        dist.all_reduce(flags)
        return float(flags[0]), bool(flags[1] > 0)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The average of a scalar over ranks (the training loss of the whole batch)."""
        if not self.enabled:
            return value
        value = value.detach().clone().float()
        dist.all_reduce(value)
        return value / self.world_size

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (evaluation totals)."""
        if self.enabled:
            values = values.clone()
            dist.all_reduce(values)
        return values

    def main_says(self, value: bool) -> bool:
        """Rank 0's answer to a yes/no question, on every rank (e.g. "does a file exist?")."""
        if not self.enabled:
            return value
        flag = torch.tensor([float(value)], device=self._device)
        dist.broadcast(flag, 0)
        return bool(flag[0] > 0)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (e.g. the run directory's generated name)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, 0)
        return box[0]

    def gather_streams(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """Reassemble a per-stream tensor of the full batch from every rank's rows along ``dim``.

        Rank r holds streams r, r+N, ...; the result is in stream order, exactly what a single
        process would hold, so a checkpoint does not depend on how many ranks wrote it.
        """
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        stacked = torch.stack(parts, dim=dim + 1)  # [..., rows per rank, ranks, ...]
        shape = list(tensor.shape)
        shape[dim] *= self.world_size
        return stacked.reshape(shape)

    def gather_state(self, state: State) -> State:
        """The carried recurrent state of all streams (each tensor is [layers, batch, hidden])."""
        return map_state(state, lambda t: self.gather_streams(t, dim=1))

    def my_state(self, state: State, batch_size: int) -> State:
        """This rank's rows of a full-batch recurrent state (from a checkpoint)."""
        if not self.enabled:
            return state
        rows = list(self.streams(batch_size))
        return map_state(state, lambda t: t[:, rows].contiguous())

    def gather_rng(self, rng: torch.Tensor) -> torch.Tensor:
        """Every rank's RNG state, one row per rank (RNG states have the same size everywhere)."""
        if not self.enabled:
            return rng[None]
        parts = [torch.empty_like(rng) for _ in range(self.world_size)]
        dist.all_gather_object(parts, rng)
        return torch.stack(parts)

    @contextmanager
    def local_main_first(self):
        """Local rank 0 runs the block first (e.g. builds the token cache), then the others.

        The other ranks of the machine then find the cache ready instead of all encoding the
        corpus at once. Each machine does this for itself: the cache is on local disk.
        """
        if self.enabled and self.local_rank != 0:
            dist.barrier()
        yield
        if self.enabled and self.local_rank == 0:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (only if we joined it)."""
        if self.owns_group and dist.is_initialized():
            # The caller dropped its DDP wrapper: collect it now. A DDP module freed after the
            # group is destroyed tears the group down itself while holding the GIL, and can
            # deadlock with gloo's worker thread.
            gc.collect()
            dist.barrier()  # leave together: rank 0 may still be writing its last checkpoint
            dist.destroy_process_group()
            self.owns_group = False

    @property
    def _device(self) -> torch.device:
        # NCCL only moves CUDA tensors; gloo only CPU ones.
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the torchrun job if there is one; returns it and the device this rank uses.

    On CUDA each rank takes the GPU numbered by its LOCAL_RANK and NCCL; on CPU gloo.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Distributed(), device  # one process: nothing to coordinate
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ChargenError(f"LOCAL_RANK {local_rank}: this machine has only "
                               f"{torch.cuda.device_count()} GPU(s); lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ChargenError(f"--device {device.type}: distributed training runs on CUDA (NCCL) "
                           "or the CPU (gloo); use --device cuda or --device cpu")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return Distributed(rank, world_size, local_rank, owns), device


def is_main_process() -> bool:
    """True outside torchrun and on rank 0 inside it (for the CLI, before any group exists)."""
    return os.environ.get("RANK", "0") == "0"
