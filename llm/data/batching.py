"""Epochs over a finite list of examples, batched by similar length so little of a batch is padding.

Each epoch's batches are a pure function of (seed, epoch): shuffle, cut into pools of
`pool_batches` batches, sort each pool by length, cut it into batches, shuffle the batches. The
sampler's state is therefore just (epoch, index), and resume continues with the very next batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def bucketed_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, pool_batches: int = 64) -> list[list[int]]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool].tolist(), key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


class EpochBatches:
    """Training batches over `examples`, epoch after epoch; `collate` turns a list of examples into tensors."""

    def __init__(self, examples: Sequence[Any], lengths: Sequence[int], batch_size: int, seed: int,
                 collate: Callable[[list[Any]], dict[str, torch.Tensor]], rank: int = 0, world_size: int = 1):
        if not examples:
            raise ValueError("no training examples")
        self.examples, self.lengths = examples, lengths
        self.batch_size, self.seed, self.collate = batch_size, seed, collate
        self.rank, self.world_size = rank, world_size
        self.epoch_index, self.index = 0, 0
        self._order: list[list[int]] | None = None

    def order(self) -> list[list[int]]:
        if self._order is None:
            batches = bucketed_order(self.lengths, self.batch_size, self.seed, self.epoch_index)
            # each rank takes every world_size-th batch, so ranks never see the same examples in one epoch
            self._order = batches[self.rank :: self.world_size] or batches[:1]
        return self._order

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self.index >= len(self.order()):
            self.epoch_index, self.index, self._order = self.epoch_index + 1, 0, None
        batch = [self.examples[i] for i in self.order()[self.index]]
        self.index += 1
        return self.collate(batch)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.order())

    @property
    def epoch(self) -> float:
        return self.epoch_index + self.index / len(self.order())

    def state_dict(self) -> dict:
        return {"epoch": self.epoch_index, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_index, self.index, self._order = int(state["epoch"]), int(state["index"]), None


def fixed_batches(examples: Sequence[Any], lengths: Sequence[int], batch_size: int, collate) -> list[dict[str, torch.Tensor]]:
    """Evaluation batches: every example once, sorted by length, the same every time."""
    order = sorted(range(len(examples)), key=lambda i: lengths[i])
    return [collate([examples[i] for i in order[s : s + batch_size]]) for s in range(0, len(order), batch_size)]


def pad_right(rows: Sequence[Sequence[int]], value: int, width: int | None = None) -> torch.Tensor:
    width = width or max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the token slots in these batches that are padding: what length bucketing saves."""
    slots = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 1.0 - real / slots if slots else 0.0
