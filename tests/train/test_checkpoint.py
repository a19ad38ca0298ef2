import dataclasses
import errno
import json
import random
import shutil
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

    monkeypatch.setattr(ckpt, "write_weights", no_space)
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


def counting_sha256(monkeypatch) -> dict:
    """Replace ckpt.sha256_file by a wrapper counting the hashes of each file."""
    counts: dict = {}
    real = ckpt.sha256_file

    def count(path):
        counts[path] = counts.get(path, 0) + 1
        return real(path)

    monkeypatch.setattr(ckpt, "sha256_file", count)
    return counts


@pytest.mark.parametrize("best", [True, False], ids=["best", "newest"])
def test_a_run_folder_load_hashes_each_file_once(tmp_path, monkeypatch, best):
    from llm.load import read

    run = tmp_path / "run"
    for step in (1, 2):
        ckpt.save_checkpoint(run / "checkpoints", step, contents(tiny_model()))
    if best:
        (run / "best.json").write_text(json.dumps({"checkpoint": "step_0000001"}))
    counts = counting_sha256(monkeypatch)
    loaded = read(run)
    assert loaded.folder.name == ("step_0000001" if best else "step_0000002")
    listed = json.loads((loaded.folder / "manifest.json").read_text())["files"]
    assert counts == {loaded.folder / name: 1 for name in listed}


def test_a_corrupt_newest_is_hashed_once_and_skipped(tmp_path, monkeypatch):
    run = tmp_path / "run"
    older = ckpt.save_checkpoint(run / "checkpoints", 1, contents(tiny_model()))
    newest = ckpt.save_checkpoint(run / "checkpoints", 2, contents(tiny_model()))
    data = bytearray((newest / "trainer.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (newest / "trainer.safetensors").write_bytes(bytes(data))
    counts = counting_sha256(monkeypatch)
    with pytest.warns(UserWarning, match=r"step_0000002/trainer.safetensors: checksum differs"):
        loaded = ckpt.load(run)
    assert loaded.folder == older
    assert all(n == 1 for n in counts.values()) and newest / "trainer.safetensors" in counts
    assert {p for p in counts if p.parent == older} == {older / name for name in json.loads((older / "manifest.json").read_text())["files"]}
    counts.clear()
    with pytest.warns(UserWarning, match="step_0000002"):
        assert ckpt.newest_valid(run / "checkpoints") == older  # what a resume picks, before it reads the trainer state
    assert all(n == 1 for p, n in counts.items() if p.parent == older)


def set_format(folder, version):
    manifest = json.loads((folder / "manifest.json").read_text())
    if version is None:
        del manifest["format"]
    else:
        manifest["format"] = version
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_checkpoints_record_their_format(tmp_path):
    folder = ckpt.save_checkpoint(tmp_path, 1, contents(tiny_model()))
    assert json.loads((folder / "manifest.json").read_text())["format"] == ckpt.FORMAT_VERSION
    assert ckpt.FORMAT_VERSION in ckpt.READS_FORMATS


@pytest.mark.parametrize("version", [99, "1", True])
def test_an_unknown_format_is_refused_naming_the_file_and_versions(tmp_path, version):
    folder = ckpt.save_checkpoint(tmp_path, 1, contents(tiny_model()))
    set_format(folder, version)
    with pytest.raises(CheckpointError) as caught:
        ckpt.load_checkpoint(folder)
    message = str(caught.value)
    assert message == (f"{folder / 'manifest.json'}: checkpoint format {version!r}, but this code reads formats 1, 2 and 3 "
                       "(written by another version of this code?)")
    assert "\n" not in message


def test_an_unknown_format_in_a_run_is_refused_not_skipped(tmp_path):
    from llm.load import read

    run = tmp_path / "run"
    ckpt.save_checkpoint(run / "checkpoints", 1, contents(tiny_model()))
    newest = ckpt.save_checkpoint(run / "checkpoints", 2, contents(tiny_model()))
    set_format(newest, 99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not passed over with a warning: resuming from an older one would be wrong
        refused = r"step_0000002/manifest.json: checkpoint format 99, but this code reads formats 1, 2 and 3"
        with pytest.raises(CheckpointError, match=refused):
            read(run)
        with pytest.raises(CheckpointError, match="checkpoint format 99"):
            ckpt.newest_valid(run / "checkpoints")
        (run / "best.json").write_text(json.dumps({"checkpoint": "step_0000002"}))
        with pytest.raises(CheckpointError, match="checkpoint format 99"):
            ckpt.resolve(run)


def test_a_checkpoint_without_a_format_field_loads_as_format_1(tmp_path):
    model = tiny_model()
    folder = ckpt.save_checkpoint(tmp_path / "run" / "checkpoints", 1, contents(model))
    set_format(folder, None)  # as a manifest written without the field would be
    loaded = ckpt.load_checkpoint(folder)
    assert all(torch.equal(loaded.weights[name], t) for name, t in model.state_dict().items())
    assert ckpt.load(tmp_path / "run").folder == folder


def test_frozen_weights_are_written_once_and_linked_into_every_checkpoint(tmp_path):
    from llm.config import LoRAConfig
    from llm.lora import add_adapters

    model = add_adapters(tiny_model(), LoRAConfig(rank=2))
    frozen = frozenset(n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad)
    store = ckpt.FrozenStore(tmp_path, frozen)
    folders = []
    for step in (1, 2, 3):
        saved = contents(model, step)
        folders.append(ckpt.save_checkpoint(tmp_path, step, dataclasses.replace(saved, frozen=store)))
    first, second = (folder / ckpt.FROZEN_FILE for folder in folders[:2])
    assert first.stat().st_ino == second.stat().st_ino == store.path.stat().st_ino  # one file on disk, linked
    assert set(ckpt.read_weights(folders[0] / ckpt.WEIGHTS_FILE)) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert json.loads((folders[0] / "manifest.json").read_text())["format"] == ckpt.FROZEN_FORMAT
    loaded = ckpt.load_checkpoint(folders[-1])
    again = add_adapters(tiny_model(), LoRAConfig(rank=2))
    again.load_state_dict(loaded.weights)  # whole: the frozen part and the adapters, tied head included
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    data = bytearray(first.read_bytes())  # the one file is every checkpoint's: a flipped byte is caught in each
    data[-10] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="frozen.safetensors: checksum differs"):
        ckpt.load_checkpoint(folders[-1])
    for folder in folders:
        shutil.rmtree(folder)
    ckpt.prune(tmp_path, keep_last=2, protect=set())
    assert not list(tmp_path.glob(".frozen-*"))  # no checkpoint links it any more
