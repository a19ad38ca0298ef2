"""Device, precision and seeding: the one place that knows about CUDA, MPS and the CPU."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import random
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from llm.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

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
    reason: str = ""  # why this dtype: recorded in meta.json and the report

    @property
    def name(self) -> str:
        return str(self.dtype).replace("torch.", "")

    def describe(self) -> dict:
        return {"dtype": self.name, "reason": self.reason}

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
        return auto_precision(device)
    if dtype_name not in DTYPES:
        raise ConfigError(f"key 'train.dtype' must be auto, {', '.join(DTYPES)}; got {dtype_name!r}")
    dtype = DTYPES[dtype_name]
    if device.type == "cpu" and dtype != torch.float32 and not cpu_has_native_bf16():
        warn_slow_cpu_half(dtype)
    return Precision(device, dtype, f"train.dtype={dtype_name}")


def auto_precision(device: torch.device) -> Precision:
    """bf16 autocast only where the hardware runs it fast; float32 everywhere else."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(device, torch.bfloat16, "auto: this GPU supports bf16")
        return Precision(device, torch.float32, "auto: this GPU has no bf16")
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return Precision(device, torch.bfloat16, "auto: this CPU has native bf16 (AVX512-BF16 or AMX)")
        return Precision(device, torch.float32, "auto: this CPU has no native bf16, where bf16 matrix products are emulated and slow")
    return Precision(device, torch.float32, f"auto: float32 on {device.type}")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """The CPU has bf16 matrix instructions (AVX512-BF16 or AMX) and oneDNN is allowed to use them.

    Both are needed: the first is what the silicon has, the second respects ONEDNN_MAX_CPU_ISA, which
    can cap oneDNN below what the silicon has. Without both, oneDNN emulates bf16 products, which ran
    35x slower than fp32 on an AVX2-only EPYC (docs/design.md).
    """
    try:
        silicon = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        onednn = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # another torch build or platform: assume emulation
        return False
    return bool(silicon and onednn)


@functools.cache
def warn_slow_cpu_half(dtype: torch.dtype) -> None:
    """Once per process: the measured cost of an explicit half-precision dtype on this CPU."""
    slowdown = half_matmul_slowdown(dtype)
    name = str(dtype).replace("torch.", "")
    warnings.warn(f"train.dtype={name} on a CPU without native {name}: its matrix products ran {slowdown:.1f}x slower than "
                  f"float32 here; train.dtype=auto or float32 is faster", stacklevel=3)


def half_matmul_slowdown(dtype: torch.dtype, size: int = 256, repeats: int = 3) -> float:
    """Time of a size^3 matrix product in `dtype` over its time in float32 (best of `repeats`)."""

    def best_time(dt: torch.dtype) -> float:
        a = torch.ones(size, size, dtype=dt)
        a @ a
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - started)
        return min(times)

    return best_time(dtype) / max(best_time(torch.float32), 1e-9)


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


def cpu_model() -> str:
    """The processor's marketing name (Linux's /proc/cpuinfo), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device: torch.device | None = None) -> str:
    """One line naming the hardware a figure came from; the report, the pipeline and `make bench` write it."""
    device = device or pick_device("auto")
    torch_text = f"torch {torch.__version__}"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({torch.cuda.device_count()} visible), {torch_text}"
    cpu = f"{cpu_model()}, {os.cpu_count()} cores, CPU capability {torch.backends.cpu.get_cpu_capability()}, " \
          f"native bf16 {'yes' if cpu_has_native_bf16() else 'no'}"
    if device.type == "cpu":
        return f"{cpu}, {torch_text}"
    return f"{device.type} on {cpu}, {torch_text}"
