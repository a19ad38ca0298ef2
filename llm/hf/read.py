"""A transformers model as a checkpoint this project reads: `init_from=hf:NAME_OR_PATH`.

`read_hf` returns what llm.load.read returns for a run folder, so every stage starts from it unchanged: the
weights under our GPT's names, a meta.json-like record with the model config, and the tokenizer with this
project's special tokens added. A token the model has no row for gets one, set to the mean of the existing
rows: its logit then starts as an average token's, rather than a random row's, which can dominate the softmax
(Hewitt, "Initializing new word embeddings for pretrained language models", 2021).

A folder exported by llm export as a reward model (...ForSequenceClassification with one label) reads
back as a reward checkpoint, its score head and the bias kept beside it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from llm.errors import CheckpointError
from llm.hf import PREFIX, require_transformers
from llm.hf.adapters import fold_peft, is_peft_folder, peft_base
from llm.hf.configs import model_config_from
from llm.hf.tokenizer import first_line, load_tokenizer
from llm.hf.weights import expand_kv_heads, from_transformers
from llm.train.checkpoint import LoadedCheckpoint

SCORE_BIAS = "score_bias"  # config.json key: our reward head's bias, which transformers' score layer has no room for


def read_hf(source: str) -> LoadedCheckpoint:
    """Read a local transformers folder, or a hub name (from the cache, or downloaded where HF_HUB_OFFLINE=0), or a
    PEFT LoRA folder as its base model (adapter_config.json's base_model_name_or_path) with the adapters folded in."""
    where = PREFIX + source
    adapter = source if is_peft_folder(source) else None
    if adapter is not None:
        source = peft_base(adapter)
    config = load_config(source, where)
    cfg = model_config_from(config, where)
    reward = is_reward_model(config, where)
    tok, added_ids = load_tokenizer(source, where)
    theirs = load_tensors(source, reward, where)
    if adapter is not None:
        theirs = fold_peft(theirs, adapter)
    theirs = expand_kv_heads(theirs, cfg.n_layer, cfg.n_head, getattr(config, "num_key_value_heads", None) or cfg.n_head)
    weights = from_transformers(theirs, config.model_type, cfg.n_layer)
    vocab_size = max(cfg.vocab_size, tok.vocab_size)
    weights["wte.weight"] = with_new_rows(weights["wte.weight"], vocab_size, added_ids)
    if cfg.tie_embeddings:
        weights["lm_head.weight"] = weights["wte.weight"]
    elif reward:  # a classifier has no LM head; the trunk's is never read when scoring
        weights["lm_head.weight"] = weights["wte.weight"].clone()
    else:
        weights["lm_head.weight"] = with_new_rows(theirs["lm_head.weight"], vocab_size, added_ids)
    cfg = dataclasses.replace(cfg, vocab_size=vocab_size)
    if reward:
        weights = {"trunk." + name: tensor for name, tensor in weights.items()}
        weights["head.weight"] = theirs["score.weight"]
        weights["head.bias"] = torch.tensor([float(getattr(config, SCORE_BIAS, 0.0))])
    meta = {"kind": "reward" if reward else "gpt", "model_config": dataclasses.asdict(cfg), "stage": "hf", "step": 0,
            "source": where, "added_tokens": added_ids}
    return LoadedCheckpoint(folder=Path(source), weights=weights, meta=meta, config_yaml="", tokenizer_json=tok.to_json())


def load_config(source: str, where: str):
    transformers = require_transformers()
    try:
        return transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        if not Path(source).exists():
            raise CheckpointError(f"{where}: no such folder, and not a hub model in the local cache (downloads are off "
                                  f"unless HF_HUB_OFFLINE=0)") from None
        raise CheckpointError(f"{where}: not a transformers model folder ({first_line(exc)})") from None


def is_reward_model(config, where: str) -> bool:
    architectures = getattr(config, "architectures", None) or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        return False
    if config.num_labels != 1:
        raise CheckpointError(f"{where}: a classifier with {config.num_labels} labels; a reward model has one (num_labels=1)")
    return True


def load_tensors(source: str, reward: bool, where: str) -> dict[str, torch.Tensor]:
    """The model's tensors in float32, loaded by transformers (sharded, .bin or old-style names alike)."""
    transformers = require_transformers()
    auto = transformers.AutoModelForSequenceClassification if reward else transformers.AutoModelForCausalLM
    try:
        model = auto.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{where}: its weights could not be loaded ({first_line(exc)})") from None
    # clone: a tied lm_head shares its embedding's storage, and the rows added later must not reach the original
    return {name: tensor.detach().float().clone() for name, tensor in model.state_dict().items()}


@torch.no_grad()
def with_new_rows(matrix: torch.Tensor, rows: int, new_ids: list[int]) -> torch.Tensor:
    """`matrix` grown to `rows` rows, the rows of `new_ids` set to the mean of the rows the model learned."""
    learned = matrix.shape[0]
    out = torch.cat([matrix, matrix.new_zeros(rows - learned, matrix.shape[1])])
    out[new_ids] = matrix.mean(dim=0)
    return out
