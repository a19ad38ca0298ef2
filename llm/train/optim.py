"""Parameter groups, the AdamW optimizer and learning-rate schedules."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from llm.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: norms, biases and embeddings (a tied LM head included) are not decayed."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.dim() >= 2 and id(param) not in embedding_params:
            decay.append(param)
        else:
            no_decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def use_fused(cfg: OptimConfig, device: torch.device) -> bool:
    if isinstance(cfg.fused, bool):
        return cfg.fused
    # fused AdamW exists for CUDA and (torch >= 2.4) the CPU; on this project's 2-core CPU it made
    # nanoGPT's demo shape train 12% faster than foreach (docs/benchmarks.md)
    return device.type in ("cuda", "cpu")


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    fused = use_fused(cfg, device)
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=fused,
        foreach=None if fused else True,
    )


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "cosine":
        progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))
    # wsd (OptimConfig allows only these three): hold the peak, then decay linearly over the last fraction
    decay_start = total_steps - max(1, round(total_steps * cfg.decay_fraction))
    if step < decay_start:
        return peak
    progress = min((step - decay_start) / max(total_steps - decay_start, 1), 1.0)
    return peak + (floor - peak) * progress
