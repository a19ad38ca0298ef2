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


def window_rows(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> np.ndarray:
    return np.stack([tokens[s : s + block_size + 1] for s in starts]).astype(np.int64)


def window_batch(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> dict[str, torch.Tensor]:
    return rows_batch(window_rows(tokens, starts, block_size))


def rows_batch(rows: np.ndarray) -> dict[str, torch.Tensor]:
    window = torch.from_numpy(rows)
    return {"input_ids": window[:, :-1], "targets": window[:, 1:]}


MIN_SPAN, MAX_SPAN = 4, 24  # tokens in a repeated span


def repeat_spans(rows: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Rows where, with probability `fraction`, a span of MIN_SPAN..MAX_SPAN tokens is written again later in the
    row, at a random distance.

    Predicting the repeat's tokens after its first takes an induction head (find where the current token occurred
    before, copy the token after it), the circuit that copies a word it was never trained on token by token. A
    tiny model on a small corpus forms none in a short pre-training (measured in docs/design.md); varying the span,
    the distance and the content keeps a fixed-offset shortcut from doing the job instead.
    """
    out = rows.copy()
    width = rows.shape[1]
    longest = min(MAX_SPAN, width // 2 - 1)
    if longest < MIN_SPAN:
        raise ValueError(f"a window of {width} tokens is too short to repeat a span of {MIN_SPAN} in; lower data.repeat_fraction to 0")
    for row, chosen in zip(out, rng.random(len(rows)) < fraction):
        length = int(rng.integers(MIN_SPAN, longest + 1))
        first = int(rng.integers(0, width - 2 * length))
        again = int(rng.integers(first + length, width - length + 1))
        if chosen:
            row[again : again + length] = row[first : first + length]
    return out


class RandomWindows:
    """Training batches of `batch_size` windows at random offsets, with a share of them holding a repeated span
    (`repeat_fraction`, repeat_spans)."""

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 repeat_fraction: float = 0.0):
        if len(tokens) <= block_size + 1:
            raise ValueError(f"the training split has {len(tokens)} tokens, fewer than one window of {block_size + 1}")
        self.tokens = tokens
        self.batch_size = batch_size
        self.block_size = block_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.repeat_fraction = repeat_fraction
        self.batches_drawn = 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, 0, self.batches_drawn])
        starts = rng.integers(0, len(self.tokens) - self.block_size - 1, size=self.batch_size * self.world_size)
        self.batches_drawn += 1
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        if not self.repeat_fraction:
            return window_batch(self.tokens, starts[mine], self.block_size)
        # drawn for the global batch, so each window's repeat does not depend on how many processes share it
        return rows_batch(repeat_spans(window_rows(self.tokens, starts, self.block_size), rng, self.repeat_fraction)[mine])

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
