"""One process of make bench's parallel/* cases: DDP against FSDP2 on synthetic tokens.

measure.parallel_throughput starts it under torchrun with the run's overrides as arguments; each process
trains its slice of the global batch through the one training loop, and process 0's metrics.jsonl has
the tokens per second and its memory (SyntheticLM.log_extras)."""

from __future__ import annotations

import sys

from benchmarks.measure import SyntheticLM
from llm.config import RunConfig, load_config
from llm.train.loop import train
from llm.train.runtime import setup_runtime


def main(overrides: list[str]) -> None:
    cfg = load_config(RunConfig, None, overrides)
    runtime = setup_runtime(cfg)
    train(SyntheticLM(cfg, rank=runtime.dist.rank, world_size=runtime.dist.world_size), cfg, runtime)


if __name__ == "__main__":
    from llm.cli import main as guarded

    guarded(lambda: main(sys.argv[1:]))
