import errno
import json
import random
import warnings

import numpy as np

import pytest
import torch

from llm.config import ModelConfig
from llm.errors import CheckpointError, TrainingError
from llm.model import GPT
from llm.train import checkpoint as ckpt


def contents(model, step=1, extra=None):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": ckpt.rng_state(), "step": step, "extra": extra or {}}
    return ckpt.CheckpointContents(model, state, {"kind": "gpt"}, "name: x\n", '{"fake": "tokenizer"}')


def tiny_model(tie=True):
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=16, tie_embeddings=tie))


def test_round_trip_weights_optimizer_and_rng(tmp_path):
    model = tiny_model()
    saved = contents(model, extra={"nested": [torch.arange(3), {"a": 1.5}]})
    draws = (random.random(), np.random.rand(), torch.rand(3))
    folder = ckpt.save_checkpoint(tmp_path, 5, saved)
    assert folder.name == "step_0000005"
    loaded = ckpt.load_checkpoint(folder)
    again = tiny_model()
    again.load_state_dict(loaded.weights)
    assert again.lm_head.weight is again.wte.weight
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    state = loaded.trainer_state()
    assert torch.equal(state["extra"]["nested"][0], torch.arange(3)) and state["extra"]["nested"][1] == {"a": 1.5}
    assert set(state["optimizer"]["state"]) == set(range(len(list(model.parameters()))))
    opt = torch.optim.AdamW(again.parameters(), lr=1e-3)
    opt.load_state_dict(state["optimizer"])
    ckpt.set_rng_state(state["rng"])
    assert random.random() == draws[0] and np.random.rand() == draws[1] and torch.equal(torch.rand(3), draws[2])


def test_corrupt_checkpoint_is_detected_and_resume_falls_back(tmp_path):
    model = tiny_model()
    ckpt.save_checkpoint(tmp_path, 1, contents(model))
    newest = ckpt.save_checkpoint(tmp_path, 2, contents(model))
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors: checksum differs"):
        ckpt.load_checkpoint(newest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ckpt.newest_valid(tmp_path).name == "step_0000001"
    assert any("step_0000002" in str(w.message) for w in caught)
    older = tmp_path / "step_0000001"
    (older / "trainer.json").write_text("truncated")
    with pytest.raises(CheckpointError, match="trainer.json: size"):
        ckpt.verify(older)


def test_incomplete_checkpoint_without_manifest(tmp_path):
    folder = tmp_path / "step_0000003"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        ckpt.verify(folder)


def test_full_disk_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = tiny_model()
    good = ckpt.save_checkpoint(tmp_path, 1, contents(model))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_weights", no_space)
    with pytest.raises(TrainingError, match="no space left on device; the last good checkpoint step_0000001 is intact"):
        ckpt.save_checkpoint(tmp_path, 2, contents(model))
    assert [p.name for p in tmp_path.iterdir()] == [good.name]
    ckpt.verify(good)


def test_prune_keeps_last_and_best(tmp_path):
    model = tiny_model(tie=False)
    for step in range(1, 6):
        ckpt.save_checkpoint(tmp_path, step, contents(model))
    ckpt.prune(tmp_path, keep_last=2, protect={"step_0000002"})
    assert [p.name for p in ckpt.step_dirs(tmp_path)] == ["step_0000002", "step_0000004", "step_0000005"]


def test_resolve_prefers_best_of_a_run(tmp_path):
    model = tiny_model()
    run = tmp_path / "run"
    ckpt.save_checkpoint(run / "checkpoints", 1, contents(model))
    ckpt.save_checkpoint(run / "checkpoints", 2, contents(model))
    assert ckpt.resolve(run).name == "step_0000002"
    (run / "best.json").write_text(json.dumps({"checkpoint": "step_0000001"}))
    assert ckpt.resolve(run).name == "step_0000001"
    assert ckpt.resolve(run / "checkpoints" / "step_0000002").name == "step_0000002"
    with pytest.raises(CheckpointError, match="no such run"):
        ckpt.resolve(tmp_path / "missing")


def test_checkpoint_files_load_without_pickle(tmp_path):
    folder = ckpt.save_checkpoint(tmp_path, 1, contents(tiny_model()))
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.yaml", "manifest.json", "meta.json", "model.safetensors", "tokenizer.json", "trainer.json", "trainer.safetensors",
    ]
    json.loads((folder / "trainer.json").read_text())
