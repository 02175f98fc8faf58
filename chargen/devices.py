"""Where and in what precision to compute: device choice, bf16 support, malloc tuning."""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import nullcontext

import torch

from .compat import cpu_has_native_bf16
from .errors import ChargenError

DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N
PRECISIONS = ("auto", "fp32", "bf16")
# Where bf16 is a candidate, it is taken only if timed at least this many times faster than fp32:
# the margin keeps a near tie from flipping the choice from one run to the next.
BF16_MIN_SPEEDUP = 1.1
# --precision auto on a CPU with native bf16 times a few training steps in both precisions: bf16
# autocast is much faster on some such CPUs and slower on others (bench/HISTORY.md).
PRECISIONS_TO_TIME = ("fp32", "bf16")


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(requested: str) -> torch.device:
    """``auto`` takes CUDA, then Apple's MPS, then the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if requested not in DEVICES and not requested.startswith("cuda:"):
        raise ChargenError(f"--device {requested}: choose auto, cpu, cuda or mps")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ChargenError(f"--device {requested}: no CUDA GPU is available here; use --device cpu")
    if requested == "mps" and not mps_available():
        raise ChargenError("--device mps: Apple MPS is not available here; use --device cpu")
    return torch.device(requested)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device``; to a GPU through pinned memory, so that the copy does not block."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto`` uses bf16 autocast where the hardware computes bf16 natively, fp32 elsewhere.

    That is GPUs that support it, and CPUs with AVX512-BF16 or AMX. Other CPUs only emulate bf16,
    which is slower than fp32. On a CPU with native bf16 this is only the candidate: the trainer
    times both precisions and keeps bf16 only where it is faster (``faster_precision``).
    """
    if requested == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if requested == "bf16" and device.type == "mps":
        raise ChargenError("--precision bf16: not supported on MPS; use fp32")
    return requested


def faster_precision(speeds: dict[str, float]) -> str:
    """"bf16" if its timed speed beats fp32's by BF16_MIN_SPEEDUP, else "fp32" (also exact)."""
    return "bf16" if speeds["bf16"] >= BF16_MIN_SPEEDUP * speeds["fp32"] else "fp32"


def autocast_for(device: torch.device, precision: str):
    """A zero-argument context factory: bf16 autocast or nothing."""
    if precision != "bf16":
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# Each training step frees its activations and allocates them again. By default glibc's malloc
# serves big blocks with mmap and returns freed memory at the top of its heap to the kernel, so
# the next step page-faults the memory in again, each page zeroed by the kernel: up to a quarter
# of a step's time (bench/malloc.py measures it). Serving every block from the heap (M_MMAP_MAX 0)
# and keeping up to MALLOC_KEEP of freed memory at its top takes that to a few dozen faults a step.
MALLOC_KEEP = 1 << 30
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt() parameter numbers


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse the memory a training step frees for the next step, instead of
    handing it back to the kernel. Process-wide; memory in use peaks as before, but what was freed
    stays with the process. True if applied (Linux with glibc), else False and nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, MALLOC_KEEP) == 1


def one_thread_for_single_steps(device: torch.device) -> None:
    """Let torch use one CPU thread where a command steps a model one token at a time (chat,
    serving, viz), unless OMP_NUM_THREADS says otherwise. Such a step is a chain of small
    matrix-vector products: extra threads buy little, and on a busy machine a spinning thread pool
    can make every step many times slower."""
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
