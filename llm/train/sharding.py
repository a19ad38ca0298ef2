"""FSDP2 (`train.parallel=fsdp`): parameters, gradients and optimizer state sharded across processes.

Each transformer block is its own unit, then the model as a whole (its embeddings, head and norms):
a block's full weights exist only while it runs forward or backward, so a process holds 1/N of the
model's state plus one block at a time, where DDP holds all of it. On CUDA in bf16 the units gather
their weights in bf16 and reduce gradients in fp32 (FSDP2's MixedPrecisionPolicy) over fp32 master
weights; elsewhere weights stay fp32 and the loop's autocast does the rest.

Frozen models (PPO's reference and reward model, DPO's reference) are sharded the same way: they never
need a whole copy per process, and their forward passes gather one block at a time like the policy's.

Generation calls the model thousands of times with shapes that differ by process. `gathered()` all-gathers
every unit's weights once and keeps them whole while it lasts, so decoding makes no collective calls
and each process may decode what it likes (ZeRO-3 users know this as gathering for generation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn as nn

from llm.model import Block


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def models_to_shard(trained: nn.Module, frozen: Iterable[nn.Module]) -> list[nn.Module]:
    """The trained model and each frozen one once, less any frozen one that runs on the trained model's own weights
    (a reference that is the policy with its adapters off): sharding the trained model shards it."""
    own = {id(p) for p in trained.parameters()}
    models = {id(trained): trained}
    for model in frozen:
        if not any(id(p) in own for p in model.parameters()):
            models.setdefault(id(model), model)
    return list(models.values())


def mixed_precision(device: torch.device, dtype: torch.dtype):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_model(model: nn.Module, world_size: int, device: torch.device, dtype: torch.dtype, compile_blocks: bool = False) -> nn.Module:
    """Shard `model` in place: each Block, then the root, each moved to `device` just before it is
    sharded, so the device never holds more than the shards and one block whole. With `compile_blocks`,
    each block is compiled first (in place, so parameter names and checkpoints do not change), as
    torchtitan does."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    policy = mixed_precision(device, dtype)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        broadcast_from_first(block.to(device))
        if compile_blocks:
            block.compile()
        fully_shard(block, mesh=mesh, mp_policy=policy)
    broadcast_from_first(model.to(device))  # the rest: embeddings, head, norms
    fully_shard(model, mesh=mesh, mp_policy=policy)
    # FSDP makes the first unit to run forward the root. PPO's first call may be the policy's blocks
    # alone (rollouts, evaluation), which would leave the wrapping model unable to run afterwards: make
    # the model's root state now, as its own first forward would.
    model._get_fsdp_state()._lazy_init()
    return model


@torch.no_grad()
def broadcast_from_first(model: nn.Module) -> None:
    """Process 0's weights on every process, as DDP does on wrapping: each process initialised its own
    (seeded by rank), and each keeps only its slice of what it holds when sharded. Tensors already
    sharded (the blocks', when the root comes) were broadcast before."""
    import torch.distributed as dist

    for tensor in [*model.parameters(), *model.buffers()]:
        if not hasattr(tensor, "to_local"):
            dist.broadcast(tensor.data, src=0)


@contextlib.contextmanager
def gathered(models: Iterable[nn.Module]) -> Iterator[None]:
    """Every FSDP unit of `models` whole until the block ends (all processes must enter it together)."""
    units = [unit for model in models for unit in fsdp_units(model)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    handles = [unit.unshard(async_op=True) for unit in units]
    for handle in handles:
        if handle is not None:
            handle.wait()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor; a plain tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def first_nonfinite(model: nn.Module) -> str | None:
    """The first parameter with a NaN or infinity in this process's shard of it."""
    for name, param in model.named_parameters():
        if not torch.isfinite(local(param.detach())).all():
            return name
    return None


def as_number(value: torch.Tensor) -> float:
    """A scalar that may be a replicated DTensor (a gradient norm over sharded gradients)."""
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)
