"""The benchmark suite behind scripts/bench.py: which cases run where, each in a process of its own,
repeated in rounds, the median round kept with every round's figure, and the ratios a reader wants.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from benchmarks import measure as bench
from benchmarks import profile

NANOGPT = "nanogpt_cpu_shape"
# name: (kind, shape, batch size | new tokens, steps | (decode, prompts), overrides); decode "none" = no KV cache
CPU_CASES = {
    f"train/{NANOGPT}/fp32": ("train", NANOGPT, 12, 300, []),  # the defaults: fp32, fused AdamW
    f"train/{NANOGPT}/fp32_foreach_adamw": ("train", NANOGPT, 12, 300, ["optim.fused=false"]),
    f"train/{NANOGPT}/bf16": ("train", NANOGPT, 12, 300, ["train.dtype=bfloat16"]),
    f"train/{NANOGPT}/compile": ("train", NANOGPT, 12, 300, ["train.compile=true"]),
    "train/tiny/fp32": ("train", "tiny", 16, 60, ["train.dtype=float32"]),
    "train/tiny/bf16": ("train", "tiny", 16, 60, ["train.dtype=bfloat16"]),
    # peak memory against fp32 above: the blocks' activations recomputed in backward instead of kept
    "train/tiny/fp32_activation_checkpointing": ("train", "tiny", 16, 60, ["train.dtype=float32", "train.activation_checkpointing=true"]),
    "sample/tiny_ctx512/kv_cache": ("sample", "tiny", 500, ("dynamic", 1), []),
    "sample/tiny_ctx512/no_cache": ("sample", "tiny", 500, ("none", 1), []),
    "sample/tiny_ctx512/static": ("sample", "tiny", 500, ("static", 1), []),
    "sample/tiny_ctx512/kv_cache_batch8": ("sample", "tiny", 500, ("dynamic", 8), []),
    "sample/tiny_ctx512/static_batch8": ("sample", "tiny", 500, ("static", 8), []),
    "data/builtin_corpus": ("data", None, None, None, []),
    # where a step's time goes (batch, profiled steps): operators by kind, and the Python between them
    "profile/tiny/fp32": ("profile", "tiny", 16, 5, ["train.dtype=float32"]),
    # two gloo processes: tokens/s and each process's memory, the whole model replicated against sharded
    "parallel/wide_ctx64/ddp": ("parallel", "wide", 2, 12, ["train.dtype=float32", "train.parallel=ddp"]),
    "parallel/wide_ctx64/fsdp": ("parallel", "wide", 2, 12, ["train.dtype=float32", "train.parallel=fsdp"]),
    "matmul/fp32": ("matmul", "float32", 1024, None, []),
    "matmul/bf16": ("matmul", "bfloat16", 1024, None, []),
    # time to a validation bits per byte with the shipped configs, each round another seed; 2.71 is nanoGPT's
    # CPU demo (1.88 nats per character after 2,000 iterations), 2.0 the tiny config's at about 60% of its run
    "target/shakespeare_2.71/adamw": ("target", "configs/pretrain/shakespeare.yaml", 2.71, None,
                                      [f"data.path={bench.SHAKESPEARE}", "optim.name=adamw"]),
    "target/shakespeare_2.71/muon": ("target", "configs/pretrain/shakespeare.yaml", 2.71, None,
                                     [f"data.path={bench.SHAKESPEARE}", "optim.name=muon"]),
    # on the 500-step schedule both optimizers were first measured on (tiny.yaml now runs Muon for 300)
    "target/tiny_2.0/adamw": ("target", "configs/pretrain/tiny.yaml", 2.0, None, ["optim.name=adamw", "train.max_steps=500"]),
    "target/tiny_2.0/muon": ("target", "configs/pretrain/tiny.yaml", 2.0, None, ["optim.name=muon", "train.max_steps=500"]),
}
# on CUDA the defaults are bf16 autocast and fused AdamW; 16 x 1024 tokens per step as in nanoGPT
GPU_CASES = {
    "train/gpt2_124m/bf16": ("train", "gpt2", 16, 80, []),
    "train/gpt2_124m/bf16_compile": ("train", "gpt2", 16, 80, ["train.compile=true"]),
    "train/gpt2_124m/bf16_foreach_adamw": ("train", "gpt2", 16, 80, ["optim.fused=false"]),
    "train/gpt2_124m/tf32": ("train", "gpt2", 16, 80, ["train.dtype=float32"]),
    "train/gpt2_124m/bf16_compile_activation_checkpointing": ("train", "gpt2", 16, 80,
                                                              ["train.compile=true", "train.activation_checkpointing=true"]),
    "train/gpt2_124m_ours/bf16": ("train", "gpt2_ours", 16, 80, []),
    "train/gpt2_124m_ours/bf16_compile": ("train", "gpt2_ours", 16, 80, ["train.compile=true"]),
    "train/tiny/bf16": ("train", "tiny", 64, 200, []),
    # where a 124M step's time goes: kernels by kind, how busy the GPU is, how often the host waits for it
    "profile/gpt2_124m/bf16_compile": ("profile", "gpt2", 16, 10, ["train.compile=true"]),
    "profile/gpt2_124m/bf16": ("profile", "gpt2", 16, 10, []),
    # kv_cache is the dynamic step (the default before CUDA graphs), cuda_graph the static step replayed
    "sample/tiny_ctx512/kv_cache": ("sample", "tiny", 500, ("dynamic", 1), []),
    "sample/tiny_ctx512/no_cache": ("sample", "tiny", 500, ("none", 1), []),
    "sample/tiny_ctx512/static": ("sample", "tiny", 500, ("static", 1), []),
    "sample/tiny_ctx512/cuda_graph": ("sample", "tiny", 500, ("graph", 1), []),
    "sample/tiny_ctx512/kv_cache_batch64": ("sample", "tiny", 500, ("dynamic", 64), []),
    "sample/tiny_ctx512/cuda_graph_batch64": ("sample", "tiny", 500, ("graph", 64), []),
    "sample/gpt2_124m_ctx512/kv_cache": ("sample", "gpt2", 500, ("dynamic", 1), []),
    "sample/gpt2_124m_ctx512/no_cache": ("sample", "gpt2", 500, ("none", 1), []),
    "sample/gpt2_124m_ctx512/cuda_graph": ("sample", "gpt2", 500, ("graph", 1), []),
    "sample/gpt2_124m_ctx512/kv_cache_batch64": ("sample", "gpt2", 500, ("dynamic", 64), []),
    "sample/gpt2_124m_ctx512/cuda_graph_batch64": ("sample", "gpt2", 500, ("graph", 64), []),
    "data/builtin_corpus": ("data", None, None, None, []),
    # one process per GPU lent, batch 16 x 1024 each; with one GPU, FSDP has nothing to shard over
    "parallel/gpt2_124m/ddp": ("parallel", "gpt2", 16, 40, ["train.compile=true", "train.parallel=ddp"]),
    "parallel/gpt2_124m/fsdp": ("parallel", "gpt2", 16, 40, ["train.compile=true", "train.parallel=fsdp"]),
    "parallel/gpt2_124m/fsdp_activation_checkpointing": ("parallel", "gpt2", 16, 40,
                                                         ["train.compile=true", "train.parallel=fsdp",
                                                          "train.activation_checkpointing=true"]),
    "matmul/bf16": ("matmul", "bfloat16", 8192, None, []),
}


# derived name: (case, against case), each a ratio of tokens/s; cases absent on this device are skipped
SAMPLING_RATIOS = [
    ("kv_cache_speedup", "sample/tiny_ctx512/kv_cache", "sample/tiny_ctx512/no_cache"),
    ("static_decode_speedup", "sample/tiny_ctx512/static", "sample/tiny_ctx512/kv_cache"),
    ("batch8_speedup", "sample/tiny_ctx512/kv_cache_batch8", "sample/tiny_ctx512/kv_cache"),
    ("static_batch8_speedup", "sample/tiny_ctx512/static_batch8", "sample/tiny_ctx512/kv_cache_batch8"),
    ("cuda_graph_speedup", "sample/tiny_ctx512/cuda_graph", "sample/tiny_ctx512/kv_cache"),
    ("cuda_graph_batch64_speedup", "sample/tiny_ctx512/cuda_graph_batch64", "sample/tiny_ctx512/kv_cache_batch64"),
    ("gpt2_cuda_graph_speedup", "sample/gpt2_124m_ctx512/cuda_graph", "sample/gpt2_124m_ctx512/kv_cache"),
    ("gpt2_cuda_graph_batch64_speedup", "sample/gpt2_124m_ctx512/cuda_graph_batch64", "sample/gpt2_124m_ctx512/kv_cache_batch64"),
]


def cases() -> dict:
    return GPU_CASES if torch.cuda.is_available() else CPU_CASES


def run_case(name: str, round_index: int = 0) -> dict:
    kind, shape_name, a, b, overrides = cases()[name]
    if kind == "target":
        if "data.path=" in " ".join(overrides) and not bench.SHAKESPEARE.is_file():
            return {"error": f"{bench.SHAKESPEARE}: not found (the shared data folder beside the repository)"}
        return bench.time_to_target(shape_name, a, 1337 + round_index, overrides)
    shapes = {NANOGPT: bench.NANOGPT_CPU_SHAPE, "tiny": bench.TINY_SHAPE, "gpt2": bench.GPT2_SHAPE, "gpt2_ours": bench.GPT2_OURS_SHAPE,
              "wide": bench.WIDE_CPU_SHAPE}
    if kind == "parallel":
        return bench.parallel_throughput(shapes[shape_name], batch_size=a, steps=b, overrides=overrides)
    if kind == "train":
        result = bench.train_throughput(shapes[shape_name], batch_size=a, steps=b, overrides=overrides)
    elif kind == "profile":
        return profile.profile_train(shapes[shape_name], batch_size=a, active_steps=b, overrides=overrides)
    elif kind == "sample":
        decode, prompts = b
        result = bench.sampling_throughput({**shapes[shape_name], "block_size": 512}, new_tokens=a, decode=decode, batch=prompts)
    elif kind == "data":
        result = bench.data_throughput()
    else:
        result = {"gflops": bench.matmul_peak(getattr(torch, shape_name), size=a) / 1e9, "size": a}
    result["peak_memory_mb"] = bench.peak_memory_mb()
    if torch.cuda.is_available():
        result["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_all(out: Path, only: list[str], repeat: int) -> dict:
    """Every case once per round, `repeat` rounds: interleaving spreads the host's slow spells over all cases."""
    names = [n for n in cases() if not only or any(o in n for o in only)]
    results = {"command": "python " + " ".join(["scripts/bench.py", *sys.argv[1:]]),
               "measured": datetime.now().isoformat(timespec="seconds"), "machine": bench.machine(),
               "nanogpt_cpu_reference_tokens_per_s": bench.NANOGPT_CPU_TOKENS_PER_S, "rounds": repeat, "cases": {}}
    print(f"machine: {results['machine']['line']}", flush=True)
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    for round_index in range(repeat):
        for name in names:
            started = time.perf_counter()
            rounds[name].append(run_subprocess(name, round_index))
            print(f"[round {round_index + 1}/{repeat}] {name}: {summary(rounds[name][-1])} "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
    for name, runs in rounds.items():
        results["cases"][name] = median_run(runs)
    add_derived(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results


def run_subprocess(name: str, round_index: int = 0) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.suite", name, str(round_index)],
                          capture_output=True, text=True, cwd=bench.REPO)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """The run with the median headline figure, plus every round's figure to show the spread."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[-1]
    key = next(k for k in ("tokens_per_s", "gflops", "tokenize_mb_per_s", "train_s", "step_ms") if k in good[0])
    ordered = sorted(good, key=lambda r: r[key])
    chosen = dict(ordered[len(ordered) // 2])
    chosen[f"{key}_rounds"] = [round(r[key], 1) for r in good]
    return chosen


def add_derived(results: dict) -> None:
    """Ratios a reader wants: against nanoGPT's CPU demo, cached vs uncached sampling, CPU MFU."""
    cases, derived = results["cases"], {}
    ours = cases.get(f"train/{NANOGPT}/fp32", {}).get("tokens_per_s")
    best = max((c.get("tokens_per_s", 0) for n, c in cases.items() if n.startswith(f"train/{NANOGPT}")), default=0)
    if ours:
        derived["nanogpt_shape_speedup_default"] = ours / results["nanogpt_cpu_reference_tokens_per_s"]
        derived["nanogpt_shape_speedup_best"] = best / results["nanogpt_cpu_reference_tokens_per_s"]
    for name, faster, slower in SAMPLING_RATIOS:
        a, b = cases.get(faster, {}).get("tokens_per_s"), cases.get(slower, {}).get("tokens_per_s")
        if a and b:
            derived[name] = a / b
    compiled, eager = cases.get("train/gpt2_124m/bf16_compile", {}), cases.get("train/gpt2_124m/bf16", {})
    if compiled.get("tokens_per_s") and eager.get("tokens_per_s"):
        derived["gpt2_compile_speedup"] = compiled["tokens_per_s"] / eager["tokens_per_s"]
    for dtype in ("fp32", "bf16"):
        peak, tiny = cases.get(f"matmul/{dtype}", {}).get("gflops"), cases.get(f"train/tiny/{dtype}", {})
        if peak and tiny.get("achieved_tflops"):
            derived[f"tiny_{dtype}_mfu_vs_measured_matmul_peak"] = tiny["achieved_tflops"] * 1e3 / peak
    results["derived"] = derived


def summary(case: dict) -> str:
    if "error" in case:
        return "error: " + case["error"]
    if "memory_mb_per_process" in case:
        return f"{case['tokens_per_s']:,.1f} tokens/s over {case['processes']} processes, {case['memory_mb_per_process']:,.0f} MB each"
    if "ms_per_step_by_kind" in case:
        kinds = ", ".join(f"{kind} {ms:.1f}" for kind, ms in case["ms_per_step_by_kind"].items())
        busy = (f", device busy {case['device_busy_fraction']:.0%}, {case['host_waits_per_step']:.1f} host waits"
                if case["device_busy_ms"] else "")
        return f"{case['step_ms']:.1f} ms a step{busy}; ms by kind: {kinds}"
    if "train_s" in case:
        reached = "reached" if case["reached"] else "NOT reached"
        return (f"{reached} {case['target_bpb']} bpb at step {case['step']}: {case['train_s']:.1f}s training, "
                f"{case['wall_s']:.1f}s wall (seed {case['seed']})")
    for key, unit in (("tokens_per_s", "tokens/s"), ("gflops", "GFLOP/s"), ("tokenize_mb_per_s", "MB/s tokenized")):
        if key in case:
            return f"{case[key]:,.1f} {unit}, peak {case['peak_memory_mb']:.0f} MB"
    return json.dumps(case)


if __name__ == "__main__":  # one case, for run_subprocess: its peak memory is its own
    print(json.dumps(run_case(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)))
