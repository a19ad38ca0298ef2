"""Batches of token windows for next-token prediction.

Training batch i is drawn from a generator seeded with (seed, 0, i), so the sampler's whole state is
the number of batches drawn: resume restores one integer and continues with exactly the batches an
uninterrupted run would have seen. Under torchrun every process draws the global batch of all processes'
windows and keeps its own slice: N processes of batch B see the same windows as one process of N * B,
so a run's data does not depend on how it is spread (and resumes on another number of processes with it).
"""

from __future__ import annotations

import numpy as np
import torch


def window_batch(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> dict[str, torch.Tensor]:
    rows = np.stack([tokens[s : s + block_size + 1] for s in starts]).astype(np.int64)
    window = torch.from_numpy(rows)
    return {"input_ids": window[:, :-1], "targets": window[:, 1:]}


class RandomWindows:
    """Training batches of `batch_size` windows at random offsets."""

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if len(tokens) <= block_size + 1:
            raise ValueError(f"the training split has {len(tokens)} tokens, fewer than one window of {block_size + 1}")
        self.tokens = tokens
        self.batch_size = batch_size
        self.block_size = block_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.batches_drawn = 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, 0, self.batches_drawn])
        starts = rng.integers(0, len(self.tokens) - self.block_size - 1, size=self.batch_size * self.world_size)
        self.batches_drawn += 1
        mine = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return window_batch(self.tokens, mine, self.block_size)

    @property
    def epoch(self) -> float:
        """Passes over the training tokens so far (windows overlap at random, so this is an average)."""
        return self.batches_drawn * self.batch_size * self.block_size / len(self.tokens)

    def state_dict(self) -> dict:
        return {"batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.batches_drawn = int(state["batches_drawn"])


def eval_windows(tokens: np.ndarray, batch_size: int, block_size: int, max_batches: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive non-overlapping windows from the start of the validation split: the same every evaluation."""
    n_windows = (len(tokens) - 1) // block_size
    if n_windows < 1:
        raise ValueError(f"the validation split has {len(tokens)} tokens, fewer than one window of {block_size + 1}")
    n_windows = min(n_windows, batch_size * max_batches)
    starts = np.arange(n_windows) * block_size
    return [window_batch(tokens, starts[i : i + batch_size], block_size) for i in range(0, n_windows, batch_size)]
