"""Rebuild trained models from a run folder or a checkpoint folder, for sampling and for the next stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.config import ModelConfig
from llm.errors import CheckpointError, ConfigError
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


def read(path: str | Path, prefer: str = "best") -> ckpt.LoadedCheckpoint:
    return ckpt.load_checkpoint(ckpt.resolve(path, prefer))


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


def load_gpt(path: str | Path, device: torch.device | str = "cpu", prefer: str = "best", dropout: float | None = None) -> LoadedModel:
    """The language model of any checkpoint: a pre-trained or SFT GPT, a PPO policy, a reward model's trunk.

    `dropout` replaces the checkpoint's dropout rate, for a stage that fine-tunes with its own.
    """
    loaded = read(path, prefer)
    config = model_config_of(loaded)
    if dropout is not None:
        config = dataclasses.replace(config, dropout=dropout)
    model = GPT(config)
    model.load_state_dict(gpt_weights(loaded))
    return LoadedModel(model.to(device).eval(), tokenizer_of(loaded), loaded)


def load_reward_model(path: str | Path, device: torch.device | str = "cpu", prefer: str = "best"):
    """A trained reward model and its tokenizer, for scoring or as a frozen judge."""
    from llm.reward_model import RewardModel

    loaded = read(path, prefer)
    if loaded.meta.get("kind") != "reward":
        raise CheckpointError(f"{loaded.folder}: a {loaded.meta.get('kind', '?')} checkpoint, not a reward model (train one with scripts/reward.py)")
    model = RewardModel(GPT(model_config_of(loaded)))
    model.load_state_dict(loaded.weights)
    return model.to(device).eval(), tokenizer_of(loaded), loaded


def load_for_finetuning(cfg, device) -> tuple[LoadedModel, object]:
    """The model to fine-tune, and the config with its model section taken from that checkpoint."""
    if not cfg.init_from:
        raise ConfigError("key 'init_from' is required: a run folder or checkpoint to start from (e.g. init_from=runs/pretrain-tiny)")
    base = load_gpt(cfg.init_from, device, dropout=cfg.model.dropout)
    return base, dataclasses.replace(cfg, model=base.model.config)
