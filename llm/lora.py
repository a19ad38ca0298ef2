"""Low-rank adapters (LoRA, Hu et al. 2021) for the stages after pre-training, in our own few lines.

A targeted nn.Linear becomes a LoRALinear that keeps the very same `weight` and `bias` (frozen) and adds
lora_A (rank, in) and lora_B (out, rank), B zero at first, so the model starts as exactly the base:
    y = x W^T + b + (alpha / rank) * dropout(x) A^T B^T
Our attention's q, k and v are one fused layer, and SwiGLU's gate and value one `up`: one adapter on a fused
layer is an adapter per part that share A (delta W_q = B_q A), so each exports exactly to PEFT's q_proj,
k_proj, v_proj (or GPT-2's fused c_attn) by cutting B, as the base weights are cut (llm/hf/adapters.py).
PEFT itself would wrap our layers under its own names and ask for a transformers-style config; these lines
keep our state dict's names (`...qkv.weight` stays), so checkpoints, resume and DDP work unchanged.

A checkpoint's model.safetensors holds the adapters (`...qkv.lora_A`) and whatever else trains, its
frozen.safetensors the base, linked from one copy per run (llm/train/checkpoint.py), and meta.json the "lora"
settings; a next stage, sampling and evaluation read them folded into the weights (`merged_weights`).

PPO's and DPO's frozen reference is the policy itself with its adapters switched off (`AdaptersOff`, as
TRL's `disable_adapter()`): no second copy of the weights, and under FSDP the reference's forward is the
policy's own sharded forward, gathering the same units, where a second model sharing the policy's
parameters would hold the full tensors FSDP has replaced with shards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

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
        self.active = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if not self.active:
            return out
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


@contextlib.contextmanager
def adapters_off(layers: list[LoRALinear]) -> Iterator[None]:
    """Each of `layers` computes as its base layer, its adapter skipped, until the block ends."""
    for layer in layers:
        layer.active = False
    try:
        yield
    finally:
        for layer in layers:
            layer.active = True


class AdaptersOff(nn.Module):
    """A frozen reference that is `policy` with its adapters off, in eval mode and without gradients: it holds
    no weights and no submodule of its own, so moving, sharding or checkpointing the policy is all it needs.
    Its parameters() are the policy's base weights (for their device and a weight comparison), never the adapters."""

    def __init__(self, policy: GPT):
        super().__init__()
        object.__setattr__(self, "policy", policy)  # not registered: the policy is trained, saved and sharded as itself
        self.config = policy.config
        self.layers = list(adapter_layers(policy).values())  # found once: a reference decodes token by token

    @contextlib.contextmanager
    def as_base(self) -> Iterator[None]:
        training = self.policy.training
        self.policy.eval()  # no dropout in a reference
        try:
            with torch.no_grad(), adapters_off(self.layers):
                yield
        finally:
            self.policy.train(training)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        with self.as_base():
            return self.policy(*args, **kwargs)

    def decode_step(self, token: torch.Tensor, cache) -> torch.Tensor:
        with self.as_base():
            return self.policy.decode_step(token, cache)

    def new_cache(self, batch_size: int, max_len: int | None = None):
        return self.policy.new_cache(batch_size, max_len)

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        for name, param in self.policy.named_parameters(prefix, recurse, remove_duplicate):
            if not is_adapter(name):
                yield name, param
