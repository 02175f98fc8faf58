"""Truncated-BPTT batches: the token stream cut into parallel streams read window by window."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ChargenError


class StreamBatches:
    """Truncated-BPTT batches over ``batch_size`` parallel, contiguous streams.

    The tokens are cut into ``batch_size`` equal streams; batch ``k`` holds tokens
    ``[k*seq_len, (k+1)*seq_len)`` of every stream (targets shifted by one). So row ``r`` of batch
    ``k+1`` continues row ``r`` of batch ``k``, and a model that carries its recurrent state from
    one batch to the next sees context far longer than ``seq_len``. Batch index 0 starts an epoch:
    that is the only place the carried state must be reset.

    Each later epoch starts the streams at a different offset (wrapping around the end of the
    corpus), so the model does not see the very same windows, cut at the same places, every epoch:
    on a small corpus, that repetition is what it learns to memorise. The offset depends only on
    the epoch number, so a batch index always names the same batch (resuming relies on it).

    ``streams`` selects which of the streams this process sees (for data-parallel training).
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int,
                 streams: range | None = None, what: str = "the training split"):
        self.tokens, self.seq_len = tokens, seq_len
        self.stream_len = len(tokens) // batch_size
        if self.stream_len < seq_len + 1:
            raise ChargenError(
                f"{what} has {len(tokens):,} tokens, fewer than one batch needs "
                f"(batch size {batch_size} x (seq len {seq_len} + 1)); use a bigger corpus or "
                f"lower --batch-size / --seq-len")
        self.steps_per_epoch = (self.stream_len - 1) // seq_len
        streams = streams if streams is not None else range(batch_size)
        self._offsets = (np.asarray(streams, dtype=np.int64)[:, None] * self.stream_len
                         + np.arange(seq_len + 1, dtype=np.int64)[None, :])

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch_shift(self, epoch: int) -> int:
        """Where the streams start in ``epoch``, relative to epoch 0 (tokens)."""
        if epoch == 0:
            return 0
        return int(np.random.default_rng([epoch, 0x5EED]).integers(self.stream_len))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of batch ``index`` (any step number), each ``[B, seq_len]``."""
        epoch, index = divmod(index, self.steps_per_epoch)
        positions = self._offsets + (index * self.seq_len + self.epoch_shift(epoch))
        window = torch.from_numpy(self.tokens[positions % len(self.tokens)].astype(np.int64))
        return window[:, :-1], window[:, 1:]
