"""Atomic checkpoints that load without executing pickled code.

A checkpoint is a folder `<run>/checkpoints/step_NNNNNNN/`:

    model.safetensors      weights (tied weights stored once, their aliases in the metadata)
    trainer.safetensors    every tensor of the training state: optimizer moments, RNG states, ...
    trainer.json           the rest of that state (step, sampler position, schedule, RNG, ...)
    meta.json              what the weights are (model kind, model config, stage, metrics)
    config.yaml            the run's resolved config
    tokenizer.json         the tokenizer, so the folder is self-contained
    manifest.json          the format version, and size and sha256 of each file above, written last

A sharded run (train.parallel=fsdp) adds `shards/` and `shards.json`: its model and optimizer state as
each process wrote it (llm/train/sharded_checkpoint.py), and leaves the optimizer out of trainer.*.
That layout is format 2; every other checkpoint is format 1.

A run that trains adapters on a frozen base (lora.rank > 0) keeps the frozen weights apart, in
`frozen.safetensors`, and only what trains in `model.safetensors` (format 3): the frozen file is written
once per run into the checkpoints folder (`.frozen-*.safetensors`) and hard-linked into every checkpoint,
so each folder is still whole on its own while a 124M model's checkpoint costs its adapters' megabytes,
not the base's 500 MB again. Nothing ever writes into a linked file: a new run writes a new one.

It is written into a hidden temporary folder and renamed into place, so a crash or a full disk never
leaves a half-written checkpoint under a real name, and the previous ones stay intact.

The manifest's "format" (FORMAT_VERSION) says how the folder is laid out. Loading refuses a format this
code does not read (READS_FORMATS) rather than guessing; a manifest without the field is read as format 1,
the only layout written before the field was checked (every checkpoint written so far records it anyway).
A checkpoint's files are hashed once per load: `load` verifies the folder it picks and then reads it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llm.errors import CheckpointError, TrainingError

FORMAT_VERSION = 1  # written to manifest.json as "format"
SHARDED_FORMAT = 2  # format 1 plus shards/ (sharded runs)
FROZEN_FORMAT = 3  # format 1 or 2 with the frozen weights in frozen.safetensors
READS_FORMATS = (1, 2, 3)  # the formats this code can load
FORMAT_WHEN_ABSENT = 1  # a manifest without "format" is read as this one
STEP_PREFIX = "step_"
WEIGHTS_FILE, FROZEN_FILE = "model.safetensors", "frozen.safetensors"
FROZEN_STORE_PREFIX = ".frozen-"


class UnreadableFormat(CheckpointError):
    """A checkpoint in a format this code does not read: refused, never skipped like a corrupt one."""


# --- state trees: nested dicts/lists with tensors -> JSON + a flat tensor dict ---------------------


def to_cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().cpu().contiguous()


def flatten_state(tree: Any, tensors: dict[str, torch.Tensor] | None = None, path: str = "",
                  prepare=to_cpu) -> tuple[Any, dict[str, torch.Tensor]]:
    """Replace every tensor in `tree` by a reference {"__tensor__": key}; return (json tree, tensors),
    each tensor passed through `prepare`."""
    tensors = {} if tensors is None else tensors
    if isinstance(tree, torch.Tensor):
        key = path or "root"
        tensors[key] = prepare(tree)
        return {"__tensor__": key}, tensors
    if isinstance(tree, dict):
        int_keys = bool(tree) and all(isinstance(k, int) for k in tree)
        out = {str(k): flatten_state(v, tensors, f"{path}.{k}" if path else str(k), prepare)[0] for k, v in tree.items()}
        return ({"__int_keys__": out} if int_keys else out), tensors
    if isinstance(tree, (list, tuple)):
        return [flatten_state(v, tensors, f"{path}.{i}", prepare)[0] for i, v in enumerate(tree)], tensors
    if isinstance(tree, (np.integer, np.floating)):
        return tree.item(), tensors
    return tree, tensors


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        if set(tree) == {"__int_keys__"}:
            return {int(k): unflatten_state(v, tensors) for k, v in tree["__int_keys__"].items()}
        return {k: unflatten_state(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree


# --- RNG -----------------------------------------------------------------------------------------


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- weights -------------------------------------------------------------------------------------


def weights_and_aliases(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict with each shared tensor kept once, and {alias: stored name} for the others."""
    weights, aliases, first_name = {}, {}, {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride()) if tensor.numel() else None
        if key is not None and key in first_name:
            aliases[name] = first_name[key]
            continue
        if key is not None:
            first_name[key] = name
        weights[name] = tensor.detach().cpu().contiguous()
    return weights, aliases


def write_weights(weights: dict[str, torch.Tensor], aliases: dict[str, str], path: Path) -> None:
    save_file(weights, str(path), metadata={"aliases": json.dumps(aliases)})


def read_folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's whole state dict: model.safetensors and, where the run had a frozen base, frozen.safetensors."""
    weights = read_weights(folder / WEIGHTS_FILE)
    if (folder / FROZEN_FILE).is_file():
        weights.update(read_weights(folder / FROZEN_FILE))
    return weights


def split_weights(weights: dict[str, torch.Tensor], aliases: dict[str, str], names: frozenset[str]) -> tuple[tuple, tuple]:
    """(weights, aliases) cut in two: those `names` holds and the rest, each alias beside the tensor it names."""
    def part(inside: bool) -> tuple[dict, dict]:
        return ({n: t for n, t in weights.items() if (n in names) == inside},
                {a: n for a, n in aliases.items() if (n in names) == inside})
    return part(True), part(False)


class FrozenStore:
    """The weights a run never changes, written once into the checkpoints folder and hard-linked into each checkpoint.

    A store belongs to one Trainer: a resumed or restarted run writes a file of its own rather than trusting one
    left by another (its base may differ), and prune() deletes a stored file once no checkpoint links it."""

    def __init__(self, checkpoints_dir: Path, names: frozenset[str]):
        self.checkpoints_dir, self.names = checkpoints_dir, names
        self.path: Path | None = None
        self.record: dict | None = None  # its size and sha256, hashed once: every checkpoint's manifest lists the same file

    def put(self, folder: Path, weights: tuple[dict, dict]) -> tuple[dict, dict]:
        """Link the frozen part of `weights` into `folder`; what is left to write there."""
        if not self.names:
            return weights
        frozen, rest = split_weights(*weights, self.names)
        if self.path is None or not self.path.is_file():
            handle, name = tempfile.mkstemp(prefix=FROZEN_STORE_PREFIX, suffix=".safetensors", dir=self.checkpoints_dir)
            os.close(handle)
            try:
                write_weights(*frozen, Path(name))
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
            self.path, self.record = Path(name), file_record(Path(name))
        try:
            os.link(self.path, folder / FROZEN_FILE)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
            shutil.copyfile(self.path, folder / FROZEN_FILE)  # a filesystem without hard links: a copy, as before
        return rest


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors by state-dict name, aliases of tied weights filled back in."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read weights ({exc})") from None
    for alias, name in json.loads(metadata.get("aliases", "{}")).items():
        weights[alias] = weights[name]
    return weights


# --- saving --------------------------------------------------------------------------------------


@dataclass
class CheckpointContents:
    model: nn.Module | None  # None: `weights` holds them
    trainer_state: dict  # may hold tensors anywhere
    meta: dict
    config_yaml: str
    tokenizer_json: str | None
    weights: tuple[dict[str, torch.Tensor], dict[str, str]] | None = None  # (weights, aliases) gathered from shards
    frozen: FrozenStore | None = None  # where the weights that never change go


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:07d}"


def save_checkpoint(checkpoints_dir: Path, step: int, contents: CheckpointContents) -> Path:
    """Write a checkpoint atomically; on failure remove the partial folder and raise one clear error."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / step_dir_name(step)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=checkpoints_dir))
    try:
        write_files(staging, contents)
        swap_into_place(staging, final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise save_failed(checkpoints_dir, final, exc) from None
    return final


def save_failed(checkpoints_dir: Path, final: Path, exc: BaseException | None) -> TrainingError:
    """The one-line error of a failed save, naming the checkpoint kept."""
    cause = os_error_in(exc)
    if cause is not None:
        reason = "no space left on device" if cause.errno == errno.ENOSPC else (cause.strerror or str(cause))
    else:
        reason = str(exc).splitlines()[0] if exc is not None else "another process could not write its part"
    previous = latest_step_dir(checkpoints_dir)
    kept = f"; the last good checkpoint {previous} is intact" if previous else ""
    return TrainingError(f"saving checkpoint {final} failed: {reason}{kept}")


def os_error_in(exc: BaseException | None) -> OSError | None:
    """The OSError behind `exc`: itself, its cause, or one a process reported to torch.distributed.checkpoint."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        failures = getattr(exc, "failures", None)  # DCP's CheckpointException: {rank: wrapped exception}
        if failures:
            wrapped = next(iter(failures.values()))
            exc = getattr(wrapped, "exception", wrapped)
        else:
            exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def write_files(folder: Path, contents: CheckpointContents) -> None:
    weights = contents.weights if contents.weights is not None else weights_and_aliases(contents.model)
    if contents.frozen is not None:
        weights = contents.frozen.put(folder, weights)
    write_weights(*weights, folder / WEIGHTS_FILE)
    json_tree, tensors = flatten_state(contents.trainer_state)
    save_file(tensors, str(folder / "trainer.safetensors"))
    write_text(folder / "trainer.json", json.dumps(json_tree))
    write_text(folder / "meta.json", json.dumps(contents.meta, indent=2))
    write_text(folder / "config.yaml", contents.config_yaml)
    if contents.tokenizer_json is not None:
        write_text(folder / "tokenizer.json", contents.tokenizer_json)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    version = FROZEN_FORMAT if (folder / FROZEN_FILE).is_file() else SHARDED_FORMAT if (folder / "shards").is_dir() else FORMAT_VERSION
    known = {FROZEN_FILE: contents.frozen.record} if contents.frozen is not None and contents.frozen.record else {}
    manifest = {"format": version, "files": {name: known.get(name) or file_record(folder / name) for name in files}}
    write_text(folder / "manifest.json", json.dumps(manifest, indent=2))
    fsync_dir(folder)


def write_text(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_dir():
            fsync_dir(path)
            continue
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap_into_place(staging: Path, final: Path) -> None:
    if final.exists():  # the same step saved again (e.g. the final save after a resume)
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- finding and loading -------------------------------------------------------------------------


def step_dirs(checkpoints_dir: Path) -> list[Path]:
    """Checkpoint folders, oldest first (hidden temporary folders are never listed)."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)]
    return sorted(found, key=lambda p: p.name)


def latest_step_dir(checkpoints_dir: Path) -> str | None:
    dirs = step_dirs(checkpoints_dir)
    return dirs[-1].name if dirs else None


def verify(folder: Path) -> dict:
    """Check every file against the manifest; return the manifest or raise naming the bad file."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"{folder}: incomplete checkpoint (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
        version = manifest.get("format", FORMAT_WHEN_ABSENT)
    except (json.JSONDecodeError, AttributeError):
        raise CheckpointError(f"{manifest_path}: corrupt manifest") from None
    if version not in READS_FORMATS or isinstance(version, bool):
        reads = ", ".join(str(v) for v in READS_FORMATS[:-1]) + f" and {READS_FORMATS[-1]}"
        raise UnreadableFormat(f"{manifest_path}: checkpoint format {version!r}, but this code reads formats {reads} "
                               f"(written by another version of this code?)")
    try:
        files = manifest["files"]
        items = list(files.items())
    except (KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{manifest_path}: corrupt manifest") from None
    for name, record in items:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing file listed in the manifest")
        if path.stat().st_size != record["bytes"]:
            raise CheckpointError(f"{path}: size {path.stat().st_size} differs from the manifest's {record['bytes']} "
                                  "(corrupt or truncated)")
        if sha256_file(path) != record["sha256"]:
            raise CheckpointError(f"{path}: checksum differs from the manifest (corrupt)")
    return manifest


def newest_valid(checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint that passes verification, warning about each corrupt one passed over.

    One in a format this code does not read stops the search (UnreadableFormat): falling back to an older
    checkpoint would resume or fine-tune from the wrong one.
    """
    for folder in reversed(step_dirs(checkpoints_dir)):
        try:
            verify(folder)
            return folder
        except UnreadableFormat:
            raise
        except CheckpointError as exc:
            warnings.warn(f"skipping checkpoint: {exc}", stacklevel=2)
    return None


@dataclass
class LoadedCheckpoint:
    folder: Path
    weights: dict[str, torch.Tensor]
    meta: dict
    config_yaml: str
    tokenizer_json: str | None

    def trainer_state(self) -> dict:
        return read_trainer_state(self.folder)


def read_trainer_state(folder: Path) -> dict:
    """The loop's saved state (and, in format 1, the optimizer's), without the weights."""
    tensors = load_file(str(folder / "trainer.safetensors"))
    return unflatten_state(json.loads((folder / "trainer.json").read_text()), tensors)


def load_checkpoint(folder: Path) -> LoadedCheckpoint:
    """Verify a checkpoint folder against its manifest, then read it."""
    verify(folder)
    return read_verified(folder)


def read_verified(folder: Path) -> LoadedCheckpoint:
    """Read a checkpoint folder that verify() has just passed, without hashing its files again."""
    tokenizer_path = folder / "tokenizer.json"
    return LoadedCheckpoint(
        folder=folder,
        weights=read_folder_weights(folder),
        meta=json.loads((folder / "meta.json").read_text()),
        config_yaml=(folder / "config.yaml").read_text(),
        tokenizer_json=tokenizer_path.read_text() if tokenizer_path.is_file() else None,
    )


def load(path: str | Path, prefer: str = "best") -> LoadedCheckpoint:
    """The checkpoint resolve() picks, read with each of its files hashed once."""
    folder, verified = locate(path, prefer)
    return read_verified(folder) if verified else load_checkpoint(folder)


def resolve(path: str | Path, prefer: str = "best") -> Path:
    """A checkpoint folder from a checkpoint folder or a run folder (its best, else its newest valid)."""
    return locate(path, prefer)[0]


def locate(path: str | Path, prefer: str = "best") -> tuple[Path, bool]:
    """resolve()'s folder, and whether it was verified on the way (a run folder's are; a named checkpoint folder is not)."""
    path = Path(path)
    if (path / "manifest.json").is_file() or path.name.startswith(STEP_PREFIX):
        if not path.is_dir():
            raise CheckpointError(f"{path}: checkpoint folder not found")
        return path, False
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run or checkpoint folder")
    checkpoints = path / "checkpoints"
    if prefer == "best" and (path / "best.json").is_file():
        best = checkpoints / json.loads((path / "best.json").read_text())["checkpoint"]
        try:
            verify(best)
            return best, True
        except UnreadableFormat:
            raise
        except CheckpointError as exc:
            warnings.warn(f"best checkpoint unusable ({exc}); using the newest valid one", stacklevel=2)
    found = newest_valid(checkpoints)
    if found is None:
        raise CheckpointError(f"{path}: no valid checkpoint in {checkpoints}")
    return found, True


def prune(checkpoints_dir: Path, keep_last: int, protect: set[str]) -> None:
    """Delete all but the newest `keep_last` checkpoints, never one named in `protect` (the best)."""
    dirs = step_dirs(checkpoints_dir)
    for folder in dirs[: max(len(dirs) - keep_last, 0)]:
        if folder.name not in protect:
            shutil.rmtree(folder, ignore_errors=True)
    for stale in checkpoints_dir.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stored in checkpoints_dir.glob(f"{FROZEN_STORE_PREFIX}*"):
        if stored.stat().st_nlink == 1:  # no checkpoint links it any more (the current store is linked by the newest)
            stored.unlink(missing_ok=True)
