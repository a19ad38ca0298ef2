"""Tensor names and layouts between this project's GPT and transformers' Llama and GPT-2.

A rule maps one of our tensors to one or more of theirs: our fused q/k/v projection is their three (or
GPT-2's one c_attn), our SwiGLU input projection (gate rows, then value rows, as MLP.forward splits it) is
Llama's gate_proj and up_proj. GPT-2 keeps its linear layers as Conv1D, whose weight is the transpose of
nn.Linear's. Rotary positions need no permutation: our apply_rope rotates the two halves of each head with
the frequencies 1 / theta^(2i / head_dim), which is exactly transformers' rotate_half (Meta's original Llama
checkpoints rotate interleaved pairs instead, which is why transformers' conversion script permutes q and k).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rule:
    ours: str
    theirs: tuple[str, ...]  # several: ours is theirs stacked along the output dimension, in this order
    conv1d: bool = False  # theirs is stored (in, out), GPT-2's Conv1D


@dataclass(frozen=True)
class Layout:
    base: str  # the base model's attribute in a ...ForCausalLM / ...ForSequenceClassification
    layers: str
    top: tuple[Rule, ...]
    layer: tuple[Rule, ...]


LAYOUTS = {
    "llama": Layout("model.", "layers", (Rule("wte", ("embed_tokens",)), Rule("norm_f", ("norm",))), (
        Rule("norm1", ("input_layernorm",)),
        Rule("attn.qkv", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
        Rule("attn.proj", ("self_attn.o_proj",)),
        Rule("norm2", ("post_attention_layernorm",)),
        Rule("mlp.up", ("mlp.gate_proj", "mlp.up_proj")),
        Rule("mlp.down", ("mlp.down_proj",)),
    )),
    "gpt2": Layout("transformer.", "h", (Rule("wte", ("wte",)), Rule("wpe", ("wpe",)), Rule("norm_f", ("ln_f",))), (
        Rule("norm1", ("ln_1",)),
        Rule("attn.qkv", ("attn.c_attn",), conv1d=True),
        Rule("attn.proj", ("attn.c_proj",), conv1d=True),
        Rule("norm2", ("ln_2",)),
        Rule("mlp.up", ("mlp.c_fc",), conv1d=True),
        Rule("mlp.down", ("mlp.c_proj",), conv1d=True),
    )),
}


def rules(architecture: str, n_layer: int) -> list[Rule]:
    """Every rule of a model with `n_layer` blocks, with full names on both sides (no .weight / .bias)."""
    layout = LAYOUTS[architecture]
    out = [Rule(r.ours, tuple(layout.base + t for t in r.theirs), r.conv1d) for r in layout.top]
    for i in range(n_layer):
        prefix = f"{layout.base}{layout.layers}.{i}."
        out += [Rule(f"blocks.{i}.{r.ours}", tuple(prefix + t for t in r.theirs), r.conv1d) for r in layout.layer]
    return out


def flip(tensor: torch.Tensor, rule: Rule) -> torch.Tensor:
    return tensor.t().contiguous() if rule.conv1d and tensor.dim() == 2 else tensor.contiguous()


def to_transformers(ours: dict[str, torch.Tensor], architecture: str, n_layer: int) -> dict[str, torch.Tensor]:
    """Our GPT's tensors as the base model's of `architecture`; the heads (lm_head, score) are the caller's."""
    out = {}
    for rule in rules(architecture, n_layer):
        for suffix in (".weight", ".bias"):
            tensor = ours.get(rule.ours + suffix)
            if tensor is not None:
                for name, piece in zip(rule.theirs, tensor.chunk(len(rule.theirs), dim=0)):
                    out[name + suffix] = flip(piece, rule)
    return out


def from_transformers(theirs: dict[str, torch.Tensor], architecture: str, n_layer: int) -> dict[str, torch.Tensor]:
    """The base model's tensors of `architecture` under our GPT's names; the heads are the caller's."""
    out = {}
    for rule in rules(architecture, n_layer):
        for suffix in (".weight", ".bias"):
            pieces = [theirs.get(name + suffix) for name in rule.theirs]
            if all(p is not None for p in pieces):
                out[rule.ours + suffix] = torch.cat([flip(p, rule) for p in pieces])
    return out


def expand_kv_heads(theirs: dict[str, torch.Tensor], n_layer: int, n_head: int, n_kv_head: int) -> dict[str, torch.Tensor]:
    """Llama's grouped keys and values as one head per query head: exact, since query head j reads kv head
    j // (n_head / n_kv_head) (transformers' repeat_kv), at the cost of the memory grouping saves."""
    if n_kv_head == n_head:
        return theirs
    out = dict(theirs)
    for i in range(n_layer):
        for proj in ("k_proj", "v_proj"):
            for suffix in (".weight", ".bias"):
                name = f"model.layers.{i}.self_attn.{proj}{suffix}"
                if name in theirs:
                    grouped = theirs[name].reshape(n_kv_head, -1, *theirs[name].shape[1:])
                    out[name] = grouped.repeat_interleave(n_head // n_kv_head, dim=0).flatten(0, 1)
    return out
