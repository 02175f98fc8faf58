"""The recurrent state a model carries between calls, and helpers over it."""

from __future__ import annotations

from typing import Callable, Union

import torch

# LSTM state is (h, c); GRU and plain RNN state is h. Each tensor is [layers, batch, hidden].
State = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor], None]


def map_state(state: State, fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
    """Apply ``fn`` to every tensor of a recurrent state (LSTM's (h, c) or a single h)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(fn(t) for t in state)
    return fn(state)


def detach_state(state: State) -> State:
    """Cut the autograd history of a carried state (the "truncated" in truncated BPTT)."""
    return map_state(state, torch.Tensor.detach)
