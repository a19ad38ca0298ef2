"""torchrun support: one process per device, gradients averaged by DistributedDataParallel.

Run with `torchrun --nproc_per_node=N -m llm pretrain ...`; without torchrun's environment every
function here is a no-op for a single process.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llm.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join torchrun's process group: NCCL when the ranks train on CUDA, gloo on the CPU."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    on_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        if on_cuda:
            gpus = torch.cuda.device_count()
            if info.local_rank >= gpus:
                raise ConfigError(
                    f"torchrun started local rank {info.local_rank} but this machine has {gpus} GPU(s): "
                    f"use --nproc_per_node={gpus}, or train.device=cpu for CPU processes"
                )
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    return info


def reduce_across(values: list[float], info: DistInfo, device: torch.device, op: str = "SUM") -> list[float]:
    """Each of `values` combined over every process (`op`: SUM or MAX); a collective call."""
    if not info.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
    return tensor.tolist()


def sum_across(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    return reduce_across(values, info, device, "SUM")


def max_across(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    return reduce_across(values, info, device, "MAX")


def cat_across(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every process's `tensor` (the same shape on each) stacked along the first dimension, in rank order."""
    if not info.enabled:
        return tensor
    wire = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor  # gloo gathers no bools
    parts = [torch.empty_like(wire) for _ in range(info.world_size)]
    dist.all_gather(parts, wire.contiguous())
    return torch.cat(parts).to(tensor.dtype)


def my_block(n: int, info: DistInfo) -> range:
    """This process's contiguous share of `n` items (the later processes take one more when they do not divide)."""
    return range(n * info.rank // info.world_size, n * (info.rank + 1) // info.world_size)


def gather_lists(items: list, info: DistInfo) -> list:
    """Every process's list, concatenated in rank order, on every process (a collective call; pickled in memory)."""
    if not info.enabled:
        return items
    parts = [None] * info.world_size
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def any_across(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if it is true on one: so all ranks stop (or save) together."""
    return sum_across([float(flag)], info, device)[0] > 0


def from_main(value, info: DistInfo):
    """`value` as process 0 has it, on every process (a collective call; other processes pass anything)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_every(value, info: DistInfo) -> list | None:
    """Every process's `value`, in rank order (a collective call); None for a single process."""
    if not info.enabled:
        return None
    values = [None] * info.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_process_first(info: DistInfo):
    """The main process does the work first (e.g. filling a cache); the others then find it done."""
    if not info.is_main:
        barrier(info)
    yield
    if info.is_main:
        barrier(info)


def shutdown(status: int = 0) -> None:
    """After a run that ended well, torchrun's processes leave together, once every one has finished, and
    exit with `status` without tearing the interpreter down. (After an error a process just exits, so that
    torchrun stops the others rather than they wait.)

    Once FSDP has run, torch 2.13 keeps a reference to the process group that destroy_process_group
    cannot drop, so Gloo's worker threads outlive it (seen in /proc/self/task). The group is then
    destroyed during the interpreter's teardown, which aborted a process now and then ("terminate called
    without an active exception", about once in 100 two-process runs here). Every file is written and
    closed by now, so the process leaves at once instead.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
