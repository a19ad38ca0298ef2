"""Muon: momentum orthogonalised by a Newton-Schulz iteration, for 2-D weight matrices.

The same update as torch.optim.Muon (Keller Jordan's: an exponential moving average of the gradient,
Nesterov's look-ahead, five quintic Newton-Schulz steps from X / ||X||_F, the step scaled by
sqrt(max(1, rows / cols)), decoupled weight decay), with one difference: the iteration runs in a
dtype the caller picks. torch's always casts to bf16, which costs nothing on a GPU or a CPU with
native bf16 and is ruinous on one without (AVX2 only: bf16 matrix products 80x slower than fp32 here),
so the loop passes the precision it trains in.

The orthogonalisation needs the whole matrix. Under FSDP a parameter is a DTensor holding some of its
rows on each process: the update is gathered whole (one all-gather per matrix), every process
orthogonalises it, and each applies the rows it holds. The momentum stays sharded.
"""

from __future__ import annotations

import math

import torch

COEFFICIENTS = (3.4445, -4.775, 2.0315)


def orthogonalise(update: torch.Tensor, dtype: torch.dtype, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Newton-Schulz's approximation of U V^T for update = U S V^T (singular values land near 0.7-1.2)."""
    a, b, c = COEFFICIENTS
    x = update.to(dtype)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x  # iterate on the wide orientation: the Gram matrix is the small one
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + torch.addmm(gram, gram, gram, beta=b, alpha=c) @ x
    return (x.T if tall else x).to(update.dtype)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0,
                 nesterov: bool = True, ns_dtype: torch.dtype = torch.float32):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov})
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.dim() != 2:
                    raise ValueError(f"Muon trains 2-D matrices; got a parameter of shape {tuple(param.shape)}")
                self.update(param, group)

    def update(self, param: torch.Tensor, group: dict) -> None:
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param)
        buffer, momentum = state["momentum_buffer"], group["momentum"]
        buffer.lerp_(param.grad, 1 - momentum)
        direction = param.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
        rows, cols = param.shape
        param.mul_(1 - group["lr"] * group["weight_decay"])
        param.add_(self.orthogonal_update(direction), alpha=-group["lr"] * math.sqrt(max(1.0, rows / cols)))

    def orthogonal_update(self, direction: torch.Tensor) -> torch.Tensor:
        if not hasattr(direction, "full_tensor"):
            return orthogonalise(direction, self.ns_dtype)
        from torch.distributed.tensor import distribute_tensor

        whole = orthogonalise(direction.full_tensor(), self.ns_dtype)
        # src_data_rank=None: each process cuts its own rows from its identical copy, no communication
        return distribute_tensor(whole, direction.device_mesh, direction.placements, src_data_rank=None)
