"""Parameter groups, the optimizers (AdamW, or Muon with AdamW) and learning-rate schedules.

Muon (Jordan et al. 2024; llm/train/muon.py) orthogonalises each 2-D weight matrix's momentum with a few
Newton-Schulz iterations, so every direction of the update moves at about the same rate. It is meant
for the hidden matrices only: embeddings, the output head, norms and biases stay with AdamW, as in
modded-nanogpt and nanochat. Under DDP every rank holds whole gradients after the all-reduce, so each
computes the same orthogonalisation. Under FSDP a rank holds rows of each matrix: Muon gathers the whole
momentum matrix, orthogonalises it on every rank and keeps its own rows (llm/train/muon.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from llm.config import OptimConfig
from llm.errors import CheckpointError, ConfigError
from llm.train.muon import Muon


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


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device, compute_dtype: torch.dtype = torch.float32):
    """`compute_dtype`: the precision the model trains in, which Muon's orthogonalisation also uses."""
    if cfg.name == "muon":
        return MuonWithAdamW(model, cfg, device, compute_dtype)
    return adamw(param_groups(model, cfg.weight_decay), cfg, device)


def adamw(groups: list[dict], cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    fused = use_fused(cfg, device)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused,
                             foreach=None if fused else True)


def muon_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The transformer blocks' 2-D weights (attention and MLP); not embeddings, heads, norms or biases."""
    return [p for name, p in model.named_parameters() if p.requires_grad and p.dim() == 2 and ".blocks." in f".{name}"]


class MuonWithAdamW:
    """Muon for the blocks' matrices and AdamW for every other parameter, stepped together.

    Looks like one optimizer to the loop: `param_groups` lists both (each with its `lr_scale`, the ratio of
    its peak to `optim.lr`, which the schedule multiplies), and the state dict holds both under their names."""

    def __init__(self, model: nn.Module, cfg: OptimConfig, device: torch.device, compute_dtype: torch.dtype):
        matrices = muon_matrices(model)
        if not matrices:
            raise ConfigError("optim.name=muon: this model has no transformer-block matrices for Muon to train")
        chosen = {id(p) for p in matrices}
        rest = []
        for group in param_groups(model, cfg.weight_decay):
            params = [p for p in group["params"] if id(p) not in chosen]
            if params:
                rest.append({**group, "params": params})
        self.adamw = adamw(rest, cfg, device)
        self.muon = Muon(matrices, lr=cfg.muon_lr, momentum=cfg.muon_momentum, weight_decay=cfg.muon_weight_decay,
                         ns_dtype=compute_dtype)
        for group in self.muon.param_groups:
            group["lr_scale"] = cfg.muon_lr / cfg.lr

    @property
    def param_groups(self) -> list[dict]:
        return self.adamw.param_groups + self.muon.param_groups

    @property
    def parts(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return self.adamw, self.muon

    def step(self) -> None:
        self.adamw.step()
        self.muon.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"adamw", "muon"}:
            raise CheckpointError("the checkpoint's optimizer state is not Muon's (optim.name must match the run it resumes)")
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])


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
