"""Write a checkpoint as a folder transformers loads with AutoModelForCausalLM (or, for a reward model,
AutoModelForSequenceClassification) and AutoTokenizer, with no custom code.

The folder: config.json, model.safetensors (a tied head stored once, as transformers expects),
generation_config.json (stops at <|end|> and <|eos|>, as llm sample --chat does), and the tokenizer
files with the chat template in tokenizer_config.json. The model is built by transformers from that config
and loaded strictly from our converted tensors, so a name or shape we got wrong fails here, not in a user's
hands. The folder is written beside its destination and renamed into place, so a failure leaves no half of it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.errors import ConfigError
from llm.hf import require_transformers
from llm.hf.adapters import to_peft, write_peft
from llm.hf.configs import architecture_of, transformers_config
from llm.hf.read import SCORE_BIAS
from llm.hf.tokenizer import save_tokenizer
from llm.hf.weights import to_transformers
from llm.load import gpt_from, gpt_weights, read, reward_model_from, tokenizer_of
from llm.lora import is_adapter
from llm.model import GPT
from llm.tokenizer import Tokenizer

CLASSES = {("llama", False): "LlamaForCausalLM", ("gpt2", False): "GPT2LMHeadModel",
           ("llama", True): "LlamaForSequenceClassification", ("gpt2", True): "GPT2ForSequenceClassification"}
ADAPTER_FOLDER = "adapter"  # PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out), out / "adapter")


@dataclass
class Exported:
    folder: Path
    source: Path  # the checkpoint folder read
    kind: str  # the checkpoint's kind: gpt, actor_critic (its policy is exported) or reward
    model_class: str
    params: int


def export_checkpoint(checkpoint: str | Path, out: str | Path, merge: bool = False) -> Exported:
    """Export the best (else newest) checkpoint of a run folder, or a checkpoint folder, to a new folder `out`.

    A checkpoint trained with adapters exports its base model to `out` and the adapters to out/adapter in PEFT's
    format; with `merge`, the adapters folded into the weights instead."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: already exists and is not empty; choose a new folder")
    loaded = read(checkpoint, fold_adapters=merge)
    kind = loaded.meta.get("kind", "gpt")
    lora, adapters = loaded.meta.get("lora"), {}
    if lora and kind == "reward":
        raise ConfigError(f"{loaded.folder}: a reward model's adapters export only folded into its weights; add --merge")
    if lora:
        adapters = {name: t for name, t in gpt_weights(loaded).items() if is_adapter(name)}
        loaded = dataclasses.replace(loaded, weights={name: t for name, t in loaded.weights.items() if not is_adapter(name)})
    if kind == "reward":
        reward = reward_model_from(loaded)
        hf_model = write_folder(reward.trunk, reward.head, tokenizer_of(loaded), out)
    else:
        gpt = gpt_from(loaded)  # a PPO checkpoint's policy
        peft = to_peft(adapters, lora, architecture_of(gpt.config), gpt.config.n_layer, str(out.resolve())) if lora else None
        hf_model = write_folder(gpt, None, tokenizer_of(loaded), out, peft)
    return Exported(out, loaded.folder, kind, type(hf_model).__name__, sum(p.numel() for p in hf_model.parameters()))


def write_folder(gpt: GPT, head: torch.nn.Linear | None, tok: Tokenizer, out: Path, peft: tuple[dict, dict] | None = None):
    """Build the transformers model and write it with its tokenizer (and a PEFT adapter's config and tensors, to
    out/adapter) to `out`; returns the model."""
    hf_model = build(gpt, head, tok)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the export is a folder like any other
    try:
        hf_model.save_pretrained(str(staging))
        save_tokenizer(tok, staging, gpt.config.block_size)
        if peft is not None:
            write_peft(staging / ADAPTER_FOLDER, *peft)
        if out.exists():
            out.rmdir()  # empty, checked by the caller
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return hf_model


def build(gpt: GPT, head: torch.nn.Linear | None, tok: Tokenizer):
    """The transformers model computing what `gpt` (with a reward `head`, or its LM head) computes."""
    transformers = require_transformers()
    cfg = gpt.config
    architecture = architecture_of(cfg)
    ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
    config_class = transformers.LlamaConfig if architecture == "llama" else transformers.GPT2Config
    config = config_class(**transformers_config(cfg, architecture, ids), **({"num_labels": 1} if head is not None else {}))
    hf_model = getattr(transformers, CLASSES[architecture, head is not None])(config)
    tensors = to_transformers(gpt.state_dict(), architecture, cfg.n_layer)
    # GPT-2 always has biases; a model without them computes the same with zeros there
    tensors.update({name: torch.zeros_like(t)
                    for name, t in hf_model.state_dict().items() if name.endswith(".bias") and name not in tensors})
    if head is None:
        tensors["lm_head.weight"] = gpt.lm_head.weight.detach()  # the embedding itself when tied
        hf_model.generation_config = transformers.GenerationConfig(
            bos_token_id=tok.bos_id, eos_token_id=[tok.end_id, tok.eos_id], pad_token_id=tok.pad_id)
    else:
        tensors["score.weight"], bias = reward_head(head, tensors, architecture)
        if bias:
            setattr(config, SCORE_BIAS, bias)
    hf_model.load_state_dict(tensors, strict=True)
    return hf_model.eval()


@torch.no_grad()
def reward_head(head: torch.nn.Linear, tensors: dict[str, torch.Tensor], architecture: str) -> tuple[torch.Tensor, float]:
    """The score layer's weight, and the part of our head's bias it cannot hold (transformers' has no bias).

    GPT-2's final LayerNorm has a bias, which in a classifier feeds only the score: moving b * w / |w|^2 into it
    adds exactly b to every score. Llama's RMSNorm has none, so the bias is written to config.json instead and
    the exported scores are ours minus it: rankings and differences are unchanged."""
    weight, bias = head.weight.detach().clone(), float(head.bias)
    if architecture == "gpt2":
        tensors["transformer.ln_f.bias"] = tensors["transformer.ln_f.bias"] + bias * weight[0] / weight[0].dot(weight[0])
        return weight, 0.0
    if bias:
        warnings.warn(f"LlamaForSequenceClassification's score has no bias: its scores are this model's less the head's bias "
                      f"{bias:.6g}, kept in config.json as {SCORE_BIAS} to add back; rankings and differences are unchanged", stacklevel=2)
    return weight, bias
