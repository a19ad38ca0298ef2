"""What a stage runs in: the device, precision and process group, and the run folder it writes to.

Set up once per stage before any model loads; the training loop and the stages read it.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.config import RunConfig
from llm.device import Precision, pick_device, pick_precision, seed_everything
from llm.distributed import DistInfo, init_distributed
from llm.errors import LLMError
from llm.train import checkpoint as ckpt
from llm.train import trackers


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: Precision
    dist: DistInfo

    def say(self, text: str) -> None:
        """Print once per job, from the main process."""
        if self.dist.is_main:
            print(text, flush=True)


def setup_runtime(cfg: RunConfig) -> Runtime:
    info = init_distributed(cfg.train.device)
    device = pick_device(cfg.train.device)
    if device.type == "cuda":
        # float32 matrix products on tensor cores (TF32): several times faster, and the loss curve holds
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(cfg.train.seed + info.rank)
    if info.is_main:
        trackers.require(cfg.log)  # a tracker asked for and not installed fails here, before any model loads
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    runtime = Runtime(device, pick_precision(device, cfg.train.dtype), info)
    runtime.say(f"precision: {runtime.precision.name} ({runtime.precision.reason})")
    return runtime


class SignalGuard:
    """The first SIGINT/SIGTERM asks the loop to save and stop after this step; a second SIGINT aborts."""

    def __init__(self):
        self.received: str | None = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self.handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def prepare_run_dir(run_dir: Path, resume: bool, fresh: bool) -> None:
    has_checkpoints = bool(ckpt.step_dirs(run_dir / "checkpoints"))
    if has_checkpoints and not resume and not fresh:
        raise LLMError(f"{run_dir} already holds checkpoints: pass --resume to continue it, or --fresh to start it over")
    # under torchrun only process 0 clears it; the others cannot write before it joins the process group
    if fresh and run_dir.exists() and os.environ.get("RANK", "0") == "0":
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
