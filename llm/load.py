"""Rebuild trained models from a run folder or a checkpoint folder, for sampling and for the next stage.

`read` loads a checkpoint (verifying each file once); `gpt_from` and `reward_model_from` build a model from
what it read, so a stage that needs several models from one checkpoint (PPO's policy, reference and critic)
reads and checksums it once. Each call builds an independent copy: its own parameters, loaded from the weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.config import ModelConfig
from llm.errors import CheckpointError
from llm.hf import PREFIX as HF_PREFIX
from llm.lora import AdaptersOff, add_adapters, is_adapter, merged_weights
from llm.model import GPT
from llm.tokenizer import Tokenizer
from llm.train import checkpoint as ckpt

# where each kind of checkpoint keeps the language model's weights
GPT_PREFIX = {"gpt": "", "reward": "trunk.", "actor_critic": "policy."}


@dataclass
class LoadedModel:
    model: GPT
    tokenizer: Tokenizer
    checkpoint: ckpt.LoadedCheckpoint

    @property
    def folder(self) -> Path:
        return self.checkpoint.folder


def read(path: str | Path, prefer: str = "best", fold_adapters: bool = True) -> ckpt.LoadedCheckpoint:
    """A run or checkpoint folder, or with hf:NAME_OR_PATH a transformers model (llm.hf.read).

    A checkpoint trained with adapters reads as the model it computes, each adapter folded into its layer's weight,
    unless `fold_adapters` is false (export keeps them apart)."""
    if str(path).startswith(HF_PREFIX):
        from llm.hf.read import read_hf  # transformers is an optional extra: imported only when asked for

        return read_hf(str(path)[len(HF_PREFIX):])
    loaded = ckpt.load(path, prefer)
    if fold_adapters and loaded.meta.get("lora"):
        loaded = dataclasses.replace(loaded, weights=merged_weights(loaded.weights, loaded.meta["lora"]),
                                     meta={k: v for k, v in loaded.meta.items() if k != "lora"})
    return loaded


def tokenizer_of(loaded: ckpt.LoadedCheckpoint) -> Tokenizer:
    if loaded.tokenizer_json is None:
        raise CheckpointError(f"{loaded.folder}: checkpoint has no tokenizer.json")
    from tokenizers import Tokenizer as HFTokenizer

    return Tokenizer(HFTokenizer.from_str(loaded.tokenizer_json))


def model_config_of(loaded: ckpt.LoadedCheckpoint) -> ModelConfig:
    config = loaded.meta.get("model_config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{loaded.folder / 'meta.json'}: no model_config")
    return ModelConfig(**config)


def gpt_weights(loaded: ckpt.LoadedCheckpoint) -> dict[str, torch.Tensor]:
    kind = loaded.meta.get("kind", "gpt")
    if kind not in GPT_PREFIX:
        raise CheckpointError(f"{loaded.folder}: unknown model kind {kind!r}")
    prefix = GPT_PREFIX[kind]
    return {name[len(prefix) :]: t for name, t in loaded.weights.items() if name.startswith(prefix)}


def gpt_from(loaded: ckpt.LoadedCheckpoint, dropout: float | None = None) -> GPT:
    """A new GPT (on the CPU, in train mode) with the language model weights of a read checkpoint.

    `dropout` replaces the checkpoint's dropout rate, for a stage that fine-tunes with its own.
    """
    config = model_config_of(loaded)
    if dropout is not None:
        config = dataclasses.replace(config, dropout=dropout)
    model = GPT(config)
    model.load_state_dict(gpt_weights(loaded))  # copies: models built from one checkpoint share no tensors
    return model


def reward_model_from(loaded: ckpt.LoadedCheckpoint):
    """A new RewardModel (on the CPU, in train mode) from a read reward checkpoint."""
    from llm.reward_model import RewardModel

    if loaded.meta.get("kind") != "reward":
        raise CheckpointError(f"{loaded.folder}: a {loaded.meta.get('kind', '?')} checkpoint, not a reward model "
                              "(train one with llm reward)")
    model = RewardModel(GPT(model_config_of(loaded)))
    model.load_state_dict(loaded.weights)
    return model


def load_gpt(path: str | Path | ckpt.LoadedCheckpoint, device: torch.device | str = "cpu", prefer: str = "best",
             dropout: float | None = None) -> LoadedModel:
    """The language model of any checkpoint: a pre-trained or SFT GPT, a PPO policy, a reward model's trunk.

    `path` may be a checkpoint `read` already returned, to build a second copy without reading it again.
    `dropout` replaces the checkpoint's dropout rate, for a stage that fine-tunes with its own.
    """
    loaded = path if isinstance(path, ckpt.LoadedCheckpoint) else read(path, prefer)
    return LoadedModel(gpt_from(loaded, dropout).to(device).eval(), tokenizer_of(loaded), loaded)


def load_reward_model(path: str | Path, device: torch.device | str = "cpu", prefer: str = "best"):
    """A trained reward model and its tokenizer, for scoring or as a frozen judge."""
    loaded = read(path, prefer)
    return reward_model_from(loaded).to(device).eval(), tokenizer_of(loaded), loaded


def load_for_finetuning(cfg, device) -> tuple[LoadedModel, object]:
    """The model to fine-tune (with adapters under lora.rank > 0), and the config with its model section taken from that checkpoint."""
    base = load_gpt(cfg.init_from, device, dropout=cfg.model.dropout)
    with_adapters(base.model, cfg)
    return base, dataclasses.replace(cfg, model=base.model.config)


def with_adapters(model: GPT, cfg) -> GPT:
    """`model` with adapters on the layers cfg.lora targets, its own weights frozen; unchanged when lora.rank is 0."""
    return add_adapters(model, cfg.lora, cfg.train.seed) if cfg.lora.rank else model


def frozen_reference(policy: GPT, loaded: ckpt.LoadedCheckpoint, device) -> GPT | AdaptersOff:
    """PPO's and DPO's frozen reference: the policy with its adapters off, sharing its weights, when it has adapters;
    else a second copy of the checkpoint's model."""
    if any(is_adapter(name) for name, _ in policy.named_parameters()):
        policy.to(device)  # the reference runs before the loop moves the policy (PPO's edge of competence, DPO's sampled pairs)
        return AdaptersOff(policy)
    return gpt_from(loaded).to(device).eval().requires_grad_(False)
