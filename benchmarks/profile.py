"""Where a training step's time goes: steps of the real training loop under torch.profiler, summed by kind.

What to look at before making a step faster: how much of a step the GPU spends running kernels, which
kinds of work take that time (matrix products, attention, the optimizer, the loss, the element-wise work
between them), and how often the host stops to wait for the device. On the CPU the same summary is made
of the operators' own times.
"""

from __future__ import annotations

import tempfile
from collections import Counter, defaultdict

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

from benchmarks.measure import SyntheticLM, synthetic_run
from llm.config import RunConfig, load_config
from llm.train.loop import train
from llm.train.runtime import setup_runtime

# first match wins, against the lower-cased name of a kernel (GPU) or an operator (CPU)
CATEGORIES = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "_efficient_attention")),
    ("matmul", ("gemm", "matmul", "cutlass", "xmma", "nvjet", "aten::mm", "aten::addmm", "aten::bmm", "aten::linear")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "muon", "newton_schulz")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss", "logsumexp")),
    ("copy", ("memcpy", "memset", "aten::copy_", "aten::to", "aten::index", "aten::fill_", "aten::zero_")),
)
# the host waits for the device: after .item(), .tolist(), float() of a device tensor, or an explicit sync
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


STEP_MARK = "ProfilerStep"  # the profiler's span of each step ("ProfilerStep#7", or "ProfilerStep*" in recent torch)
HOST = "host: outside any operator"  # on the CPU: the Python of the loop, the model and the optimizer


def category(name: str) -> str:
    if name == HOST:
        return HOST
    low = name.lower()
    return next((kind for kind, marks in CATEGORIES if any(mark in low for mark in marks)), "elementwise and other")


class MarkedSource:
    """The stage's batch source, telling the profiler that a step begins whenever the loop draws a batch."""

    def __init__(self, source, profiler):
        self.source, self.profiler = source, profiler

    def next_batch(self):
        self.profiler.step()
        return self.source.next_batch()

    def __getattr__(self, name):
        return getattr(self.source, name)


def summarise(events, active_steps: int, on_gpu: bool, top: int = 12) -> dict:
    """Per step: wall time, the time of each kind of work, the host's waits, and the costliest kernels or operators."""
    steps = [e for e in events if e.name.startswith(STEP_MARK)]
    step_ms = sum(e.time_range.elapsed_us() for e in steps) / max(len(steps), 1) / 1e3
    if on_gpu:
        work = [(e.name, e.time_range.elapsed_us()) for e in events if e.device_type == DeviceType.CUDA]
    else:  # operators' own time, so that a call inside another is not counted twice; the step's own is Python's
        work = [(HOST if e.name.startswith(STEP_MARK) else e.name, e.self_cpu_time_total)
                 for e in events if e.device_type == DeviceType.CPU]
    by_kind, by_name, calls = defaultdict(float), defaultdict(float), Counter()
    for name, us in work:
        by_kind[category(name)] += us
        by_name[name] += us
        calls[name] += 1
    per_step = max(active_steps, 1)
    busy_ms = sum(by_kind.values()) / per_step / 1e3
    waits = sum(1 for e in events if e.device_type == DeviceType.CPU and e.name in SYNC_CALLS)
    costliest = sorted(by_name.items(), key=lambda item: -item[1])[:top]
    return {
        "step_ms": step_ms,
        "device_busy_ms": busy_ms if on_gpu else None,
        "device_busy_fraction": busy_ms / step_ms if on_gpu and step_ms else None,
        "ms_per_step_by_kind": {kind: us / per_step / 1e3 for kind, us in sorted(by_kind.items(), key=lambda item: -item[1])},
        "host_waits_per_step": waits / per_step if on_gpu else None,
        "costliest": [{"name": name[:120], "ms_per_step": us / per_step / 1e3, "calls_per_step": calls[name] / per_step}
                      for name, us in costliest],
    }


def profile_train(shape: dict, batch_size: int, active_steps: int, overrides: list[str], warm_steps: int = 5) -> dict:
    """`active_steps` steps of the synthetic pre-training run profiled, after `warm_steps` (compilation, allocator warm-up)."""
    with tempfile.TemporaryDirectory() as out:
        # the profiler's first step is the set-up before the first batch, and its window closes at the step after
        steps = warm_steps + active_steps + 1
        cfg = load_config(RunConfig, None, synthetic_run(out, shape, batch_size, steps, steps, overrides))
        runtime = setup_runtime(cfg)
        stage = SyntheticLM(cfg)
        on_gpu = runtime.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        with profile(activities=activities, schedule=schedule(wait=warm_steps, warmup=1, active=active_steps, repeat=1)) as prof:
            stage.source = MarkedSource(stage.source, prof)
            train(stage, cfg, runtime)
        events = prof.events()
    summary = summarise(events, active_steps, on_gpu)
    summary.update(profiled_steps=active_steps, device=str(runtime.device), dtype=str(runtime.precision.dtype).replace("torch.", ""))
    if on_gpu:
        summary["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return summary
