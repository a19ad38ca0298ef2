"""Our adapters in PEFT's LoRA format, and a PEFT LoRA folder read back onto its base model.

PEFT saves a LoRA as adapter_config.json and adapter_model.safetensors, each tensor named
`base_model.model.<module of the transformers model>.lora_A.weight` (rank, in) or `.lora_B.weight` (out, rank),
scaled by lora_alpha / r. Our adapter on a fused layer shares A among its parts (llm/lora.py), so Llama's
q_proj, k_proj and v_proj (and gate_proj, up_proj) each get that A and their rows of B, cut as
llm/hf/weights.py cuts the base weight. GPT-2's Conv1D layers keep A and B as they are: PEFT's
fan_in_fan_out transposes only the merged delta, never the adapters.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llm.errors import CheckpointError
from llm.hf.weights import rules

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def to_peft(ours: dict[str, torch.Tensor], lora: dict, architecture: str, n_layer: int, base: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """adapter_config.json's settings and the adapter tensors under the names of the exported transformers model."""
    tensors, modules = {}, []
    for rule in rules(architecture, n_layer):
        A, B = ours.get(rule.ours + ".lora_A"), ours.get(rule.ours + ".lora_B")
        if A is None:
            continue
        for name, piece in zip(rule.theirs, B.chunk(len(rule.theirs), dim=0)):
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = A.detach().clone()  # a copy each: PEFT keeps one A per layer
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = piece.detach().contiguous()
            modules.append(name)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "r": lora["rank"],
              "lora_alpha": lora["alpha"], "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": architecture == "gpt2",
              "target_modules": sorted(modules), "use_rslora": False, "inference_mode": True}  # full names: GPT-2 has two c_proj
    return config, tensors


def write_peft(folder: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})


def is_peft_folder(source: str) -> bool:
    return (Path(source) / CONFIG_FILE).is_file()


def peft_base(source: str) -> str:
    """The base model a PEFT adapter folder names (a path relative to the adapter folder is taken from there)."""
    base = json.loads((Path(source) / CONFIG_FILE).read_text()).get("base_model_name_or_path") or ""
    if not base:
        raise CheckpointError(f"{Path(source) / CONFIG_FILE}: no base_model_name_or_path, the model the adapter goes on")
    relative = Path(source) / base
    return str(relative) if not Path(base).is_absolute() and relative.exists() else base


@torch.no_grad()
def fold_peft(theirs: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The base model's tensors with a PEFT LoRA folder's adapters folded in: W + (lora_alpha / r) B A."""
    from safetensors.torch import load_file

    where = Path(source) / CONFIG_FILE
    config = json.loads(where.read_text())
    if config.get("peft_type") != "LORA" or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise CheckpointError(f"{where}: only a LoRA adapter with one r and lora_alpha for every layer is read")
    rank, alpha = config["r"], config["lora_alpha"]
    scaling = alpha / rank ** 0.5 if config.get("use_rslora") else alpha / rank
    adapters = load_file(str(Path(source) / WEIGHTS_FILE))
    out = dict(theirs)
    for name, A in adapters.items():
        if not name.endswith(".lora_A.weight"):
            continue
        module = name[len(PEFT_PREFIX) : -len(".lora_A.weight")]
        if module + ".weight" not in out:
            raise CheckpointError(f"{where}: its adapter on {module} names no layer of the base model")
        delta = scaling * (adapters[name.replace(".lora_A.", ".lora_B.")].float() @ A.float())
        out[module + ".weight"] = out[module + ".weight"] + (delta.t() if config.get("fan_in_fan_out") else delta)
    return out
