"""Precision is chosen by what the hardware does well, and every figure can name its machine."""

import subprocess
import warnings

import pytest
import torch

from conftest_helpers import PYTHON, REPO
from llm import device as dev
from llm.errors import ConfigError


@pytest.fixture
def native_bf16(monkeypatch):
    def set_native(value: bool):
        monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: value)
        dev.warn_slow_cpu_half.cache_clear()

    yield set_native
    dev.warn_slow_cpu_half.cache_clear()


def test_auto_picks_bf16_only_on_a_cpu_with_native_bf16(native_bf16):
    cpu = torch.device("cpu")
    native_bf16(True)
    picked = dev.pick_precision(cpu, "auto")
    assert picked.dtype == torch.bfloat16 and "native bf16" in picked.reason
    native_bf16(False)
    picked = dev.pick_precision(cpu, "auto")
    assert picked.dtype == torch.float32 and "no native bf16" in picked.reason
    assert picked.describe() == {"dtype": "float32", "reason": picked.reason}


def test_explicit_bf16_without_native_support_runs_but_warns_once_with_the_slowdown(native_bf16, monkeypatch):
    native_bf16(False)
    monkeypatch.setattr(dev, "half_matmul_slowdown", lambda dtype: 35.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = dev.pick_precision(torch.device("cpu"), "bfloat16")
        dev.pick_precision(torch.device("cpu"), "bfloat16")
    assert first.dtype == torch.bfloat16 and first.reason == "train.dtype=bfloat16"
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "35.0x slower than float32" in messages[0] and "train.dtype=auto" in messages[0]


def test_explicit_bf16_with_native_support_does_not_warn(native_bf16):
    native_bf16(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dev.pick_precision(torch.device("cpu"), "bfloat16").dtype == torch.bfloat16


def test_unknown_dtype_is_a_config_error():
    with pytest.raises(ConfigError, match="train.dtype"):
        dev.pick_precision(torch.device("cpu"), "float8")


def test_slowdown_probe_measures_a_ratio():
    assert dev.half_matmul_slowdown(torch.float32, size=32, repeats=1) > 0


def test_onednn_capped_to_avx2_has_no_native_bf16():
    """The environment that reproduces an AVX2-only CPU: oneDNN may not use bf16 instructions there."""
    code = "from llm.device import cpu_has_native_bf16, machine_line; print(cpu_has_native_bf16()); print(machine_line())"
    env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([PYTHON, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    native, line = done.stdout.splitlines()
    assert native == "False"
    assert "CPU capability AVX2" in line and "native bf16 no" in line and f"torch {torch.__version__}" in line


def test_machine_line_names_the_cpu_and_its_capability():
    line = dev.machine_line(torch.device("cpu"))
    assert dev.cpu_model() in line and torch.backends.cpu.get_cpu_capability() in line and "cores" in line
