"""Training throughput: tokens per second between log lines, with evaluation and saving left out."""

from __future__ import annotations

import time

import torch

from llm.device import synchronize


class Interval:
    """Tokens per second over the steps since the last log, not counting evaluation and saving time."""

    def __init__(self, device: torch.device, tokens: int):
        self.device = device
        self.tokens = 0
        self.started = time.perf_counter()
        self.paused_at: float | None = None
        self.excluded = 0.0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started - self.excluded
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def measure(self) -> float:
        synchronize(self.device)
        rate = self.rate()
        self.tokens, self.excluded, self.started = 0, 0.0, time.perf_counter()
        return rate

    def pause(self) -> None:
        synchronize(self.device)
        self.paused_at = time.perf_counter()

    def resume(self) -> None:
        if self.paused_at is not None:
            self.excluded += time.perf_counter() - self.paused_at
            self.paused_at = None
