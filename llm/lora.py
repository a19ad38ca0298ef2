"""Low-rank adapters (LoRA, Hu et al. 2021) for the stages after pre-training, in our own few lines.

A targeted nn.Linear becomes a LoRALinear that keeps the very same `weight` and `bias` (frozen) and adds
lora_A (rank, in) and lora_B (out, rank), B zero at first, so the model starts as exactly the base:
    y = x W^T + b + (alpha / rank) * dropout(x) A^T B^T
Our attention's q, k and v are one fused layer, and SwiGLU's gate and value one `up`: one adapter on a fused
layer is an adapter per part that share A (delta W_q = B_q A), so each exports exactly to PEFT's q_proj,
k_proj, v_proj (or GPT-2's fused c_attn) by cutting B, as the base weights are cut (llm/hf/adapters.py).
PEFT itself would wrap our layers under its own names and ask for a transformers-style config; these lines
keep our state dict's names (`...qkv.weight` stays), so checkpoints, resume and DDP work unchanged.

Checkpoints hold the adapters beside the base weights (`...qkv.lora_A`) and meta.json's "lora" settings;
a next stage, sampling and evaluation read them folded into the weights (`merged_weights`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm.config import LoRAConfig
from llm.errors import ConfigError
from llm.model import GPT
from llm.settings_checks import LORA_TARGETS

ADAPTER_SUFFIXES = (".lora_A", ".lora_B")


class LoRALinear(nn.Linear):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float, generator: torch.Generator | None = None):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the same parameters: a tied or shared weight stays so
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)  # PEFT's (and nn.Linear's) initialisation of A
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        return out + F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.scaling


def add_adapters(model: GPT, settings: LoRAConfig, seed: int = 0) -> GPT:
    """Freeze every weight of `model` and put adapters on the targeted layers of each block, in place. A is drawn
    from its own generator, `seed`ed: a run and its restart from scratch draw the same adapters whatever ran before."""
    model.requires_grad_(False)
    wanted = sorted({name for target in settings.targets for name in LORA_TARGETS[target]})  # a set's order varies by process
    generator = torch.Generator(device=model.wte.weight.device).manual_seed(seed)
    found = 0
    for block in model.blocks:
        for name in wanted:
            owner_name, _, leaf = name.rpartition(".")
            owner = block.get_submodule(owner_name)
            layer = getattr(owner, leaf, None)
            if isinstance(layer, nn.Linear) and not isinstance(layer, LoRALinear):
                setattr(owner, leaf, LoRALinear(layer, settings.rank, settings.alpha, settings.dropout, generator))
                found += 1
    if not found:
        raise ConfigError(f"lora.targets={settings.targets} matches no linear layer of the model")
    return model


def adapter_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def describe(model: nn.Module) -> dict | None:
    """The adapters' settings for meta.json (None without adapters): what folds them back or exports them."""
    layers = adapter_layers(model)
    if not layers:
        return None
    first = next(iter(layers.values()))
    return {"rank": first.rank, "alpha": first.alpha, "layers": sorted(layers)}


def is_adapter(name: str) -> bool:
    return name.endswith(ADAPTER_SUFFIXES)


@torch.no_grad()
def merged_weights(weights: dict[str, torch.Tensor], lora: dict) -> dict[str, torch.Tensor]:
    """A checkpoint's weights with each adapter folded into its layer's weight: W + (alpha / rank) B A."""
    scaling = lora["alpha"] / lora["rank"]
    out = {name: t for name, t in weights.items() if not is_adapter(name)}
    for name in weights:
        if name.endswith(".lora_A"):
            layer = name[: -len(".lora_A")]
            delta = weights[layer + ".lora_B"].float() @ weights[name].float()
            base = out[layer + ".weight"]
            out[layer + ".weight"] = (base.float() + scaling * delta).to(base.dtype)
    return out


def base_model(model: GPT) -> GPT:
    """A GPT that shares `model`'s base weights (the same Parameter objects) and has no adapters: the model with
    its adapters switched off, as a frozen reference that costs no second copy (TRL's reference for PEFT models).
    It follows the model's weights through .to(), which moves a parameter's data in place."""
    with torch.device("meta"):
        view = GPT(model.config)
    shared = {name: p for name, p in model.state_dict(keep_vars=True).items() if not is_adapter(name)}
    view.load_state_dict(shared, assign=True)
    view.requires_grad_(False)  # assign gives the shared parameters the new model's requires_grad: frozen again
    for name, buffer in model.named_buffers():  # rope's table is not in the state dict
        owner, _, leaf = name.rpartition(".")
        view.get_submodule(owner).register_buffer(leaf, buffer.clone(), persistent=False)
    return view.eval()
