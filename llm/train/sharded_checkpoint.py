"""Checkpoints of sharded runs (`train.parallel=fsdp`): each process writes its own shards.

The folder is an ordinary checkpoint (llm/train/checkpoint.py) with one more part, `shards/`: the model's
and the optimizer's tensors as torch.distributed.checkpoint wrote them, one safetensors file per process,
each tensor's place in the whole recorded in the file's JSON header. `shards.json` holds the rest of that
state (the optimizer's hyper-parameters, the tree the tensors hang in). Nothing in it loads through
pickle: the reader builds its plan from the safetensors headers (DCP's default `.metadata` file is a
pickle, which is why the Hugging Face storage layer is used).

Because every shard says which slice of which tensor it holds, a checkpoint saved by N processes loads
into M: each process reads the slices its own shards cover. `model.safetensors` still holds the whole
model, gathered to process 0, so sampling, the report, init_from and the Hugging Face export read these
checkpoints like any other. The manifest covers every file, shards included, and is written last by
process 0 once all of them have finished; the folder is renamed into place only then, so a kill at any
point of the save leaves the previous checkpoint the newest valid one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from llm.distributed import DistInfo, any_across, from_main
from llm.errors import CheckpointError
from llm.train import checkpoint as ckpt

SHARDS = "shards"
SHARDS_INDEX = "shards.json"


def optimizers_of(optimizer) -> list[torch.optim.Optimizer]:
    """The torch optimizers inside ours (Muon with AdamW is two)."""
    return list(getattr(optimizer, "parts", None) or [optimizer])


def training_state(model: nn.Module, optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON tree, tensors by key) of the model's and optimizer's state, keyed by parameter name, so the
    keys do not depend on how the parameters are sharded. A fresh optimizer's state is created first."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizers_of(optimizer))
    aliases = tied_aliases(model)  # safetensors stores a shared tensor once
    model_state = {name: value for name, value in model_state.items() if name not in aliases}
    return ckpt.flatten_state({"model": model_state, "optimizer": optim_state}, prepare=lambda t: t.detach())


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """{name: the first name of the same parameter} for each parameter reached by a second name (a tied head)."""
    first_name, aliases = {}, {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first_name:
            aliases[name] = first_name[id(param)]
        else:
            first_name[id(param)] = name
    return aliases


def write_shards(folder: Path, model: nn.Module, optimizer) -> dict:
    """Every process writes the shards it holds (a collective call); returns the JSON tree."""
    import torch.distributed.checkpoint as dcp

    tree, tensors = training_state(model, optimizer)
    with single_process_quietly():
        dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(str(folder), save_distributed=True), no_dist=alone())
    return tree


def read_shards(checkpoint: Path, model: nn.Module, optimizer) -> None:
    """Load a sharded checkpoint into `model` and `optimizer`, sharded over any number of processes (or none)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    saved = json.loads((checkpoint / SHARDS_INDEX).read_text())
    _, tensors = training_state(model, optimizer)
    wanted, present = tensor_keys(saved), set(tensors)
    if wanted != present:
        differ = sorted(wanted ^ present)
        raise CheckpointError(f"{checkpoint}: its model or optimizer state does not match this run's ({len(differ)} tensors differ, "
                              f"e.g. {differ[0]}): resume with the model and optim.name it was saved with")
    with single_process_quietly():
        dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(checkpoint / SHARDS)), no_dist=alone())
    state = ckpt.unflatten_state(saved, tensors)
    for alias, name in tied_aliases(model).items():
        state["model"][alias] = state["model"][name]
    set_state_dict(model, optimizers_of(optimizer), model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def alone() -> bool:
    """No process group: one process reads or writes every shard."""
    return not (dist.is_available() and dist.is_initialized())


@contextlib.contextmanager
def single_process_quietly():
    """DCP warns on every call without a process group, even when told it has none on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def tensor_keys(tree) -> set[str]:
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return {tree["__tensor__"]}
        return set().union(*(tensor_keys(v) for v in tree.values())) if tree else set()
    if isinstance(tree, list):
        return set().union(*(tensor_keys(v) for v in tree)) if tree else set()
    return set()


def full_weights(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The whole model on process 0's CPU (a collective call; other processes get nothing), each tied
    weight stored once with its other names as aliases, as checkpoint.weights_and_aliases gives them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    aliases = tied_aliases(model)
    weights = {name: tensor.contiguous() for name, tensor in full.items() if name not in aliases}
    return weights, aliases


def staging_folder(checkpoints_dir: Path, final: Path, info: DistInfo) -> Path:
    """A hidden temporary folder process 0 makes, whose name every process learns."""
    name = None
    if info.is_main:
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        name = tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=checkpoints_dir)
    return Path(from_main(name, info))


def save(checkpoints_dir: Path, step: int, model: nn.Module, optimizer, info: DistInfo, device: torch.device,
         contents: Callable[[tuple[dict, dict]], ckpt.CheckpointContents]) -> Path:
    """Every process calls this. `contents(weights)` makes the rest of the checkpoint on process 0."""
    final = checkpoints_dir / ckpt.step_dir_name(step)
    staging = staging_folder(checkpoints_dir, final, info)
    error = None
    try:
        tree = write_shards(staging / SHARDS, model, optimizer)
        weights = full_weights(model)
    except Exception as exc:  # noqa: BLE001 - DCP raises its own CheckpointException around the OSError
        error = exc
    if error is None and info.is_main:
        try:
            ckpt.write_text(staging / SHARDS_INDEX, json.dumps(tree))
            ckpt.write_files(staging, contents(weights))
            ckpt.swap_into_place(staging, final)
        except OSError as exc:
            error = exc
    if any_across(error is not None, info, device):
        if info.is_main:
            shutil.rmtree(staging, ignore_errors=True)
        raise ckpt.save_failed(checkpoints_dir, final, error)
    return final
