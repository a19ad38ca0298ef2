"""Sharded checkpoints written and read by one process: the layout, the round trip, a full disk.

The same code with two processes is exercised through torchrun in test_sharding.py."""

import errno
import json

import pytest
import torch

from llm.config import ModelConfig
from llm.distributed import DistInfo
from llm.errors import CheckpointError, TrainingError
from llm.model import GPT
from llm.train import checkpoint as ckpt
from llm.train import sharded_checkpoint
from llm.train.optim import MuonWithAdamW

CPU = torch.device("cpu")


def trained(seed: int, muon: bool = False):
    from llm.config import OptimConfig

    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=30, block_size=8, n_layer=2, n_head=2, n_embd=16))
    cfg = OptimConfig(name="muon" if muon else "adamw", lr=1e-2)
    optimizer = MuonWithAdamW(model, cfg, CPU, torch.float32) if muon else torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        model(torch.randint(0, 30, (2, 8))).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def save(tmp_path, model, optimizer, step=1):
    def contents(weights):
        return ckpt.CheckpointContents(None, {"loop": {"step": step}}, {"kind": "gpt"}, "name: x\n", None, weights=weights)

    return sharded_checkpoint.save(tmp_path / "checkpoints", step, model, optimizer, DistInfo(), CPU, contents)


def optimizer_tensors(optimizer) -> list[torch.Tensor]:
    parts = sharded_checkpoint.optimizers_of(optimizer)
    return [t for part in parts for state in part.state.values() for t in state.values() if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("muon", [False, True], ids=["adamw", "muon"])
def test_round_trip_into_a_fresh_model_and_optimizer(tmp_path, muon):
    model, optimizer = trained(0, muon)
    folder = save(tmp_path, model, optimizer)
    manifest = ckpt.verify(folder)
    assert manifest["format"] == ckpt.SHARDED_FORMAT and any(name.startswith("shards/") for name in manifest["files"])
    whole = ckpt.read_weights(folder / "model.safetensors")  # the whole model beside the shards, tied head included
    assert all(torch.equal(whole[name], tensor) for name, tensor in model.state_dict().items())
    fresh, fresh_optimizer = trained(1, muon)
    sharded_checkpoint.read_shards(folder, fresh, fresh_optimizer)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    saved, loaded = optimizer_tensors(optimizer), optimizer_tensors(fresh_optimizer)
    assert len(saved) == len(loaded) > 0 and all(torch.equal(a, b) for a, b in zip(saved, loaded))
    assert fresh.lm_head.weight is fresh.wte.weight  # still tied after loading


def test_a_different_optimizer_is_refused_naming_a_tensor(tmp_path):
    model, optimizer = trained(0, muon=False)
    folder = save(tmp_path, model, optimizer)
    other, muon = trained(1, muon=True)
    with pytest.raises(CheckpointError, match=r"does not match this run's .* resume with the model and optim.name it was saved with"):
        sharded_checkpoint.read_shards(folder, other, muon)


def test_a_full_disk_while_writing_shards_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    model, optimizer = trained(0)
    save(tmp_path, model, optimizer, step=1)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sharded_checkpoint, "write_shards", no_space)
    with pytest.raises(TrainingError) as caught:
        save(tmp_path, model, optimizer, step=2)
    assert str(caught.value).endswith("failed: no space left on device; the last good checkpoint step_0000001 is intact")
    checkpoints = tmp_path / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["step_0000001"]  # the partial folder is gone
    ckpt.verify(checkpoints / "step_0000001")


def test_shard_files_load_without_pickle(tmp_path):
    model, optimizer = trained(0)
    folder = save(tmp_path, model, optimizer)
    json.loads((folder / "shards.json").read_text())
    from safetensors import safe_open

    for shard in (folder / "shards").iterdir():
        with safe_open(str(shard), framework="pt") as handle:  # safetensors: a JSON header and raw bytes
            assert list(handle.keys())
    assert not list(folder.rglob("*.metadata")) and not list(folder.rglob("*.pt"))
