"""Device, precision and seeding: the one place that knows about CUDA, MPS and the CPU."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from llm.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Dense bf16 tensor-core peaks from the vendors' datasheets (no sparsity), matched by substring of
# torch.cuda.get_device_name(). MFU is only reported where the peak is known: never a guess.
CUDA_PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("A10G", 125e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


@dataclass(frozen=True)
class Precision:
    device: torch.device
    dtype: torch.dtype  # the autocast dtype; float32 means no autocast

    @property
    def autocast_enabled(self) -> bool:
        return self.dtype != torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.autocast_enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"key 'train.device': unknown device {name!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("key 'train.device' asks for cuda, but no CUDA device is available (use auto or cpu)")
    return device


def pick_precision(device: torch.device, dtype_name: str = "auto") -> Precision:
    if dtype_name == "auto":
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return Precision(device, torch.bfloat16 if bf16_ok else torch.float32)
    if dtype_name not in DTYPES:
        raise ConfigError(f"key 'train.dtype' must be auto, {', '.join(DTYPES)}; got {dtype_name!r}")
    return Precision(device, DTYPES[dtype_name])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's peak FLOP/s for MFU, or None where it is not known."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    for marker, flops in CUDA_PEAK_BF16_FLOPS:
        if marker in name:
            return flops
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
