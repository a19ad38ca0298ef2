"""Benchmarks: training and sampling throughput, data preparation speed, peak memory, MFU.

Every training figure is measured through the real training loop (`llm.train.loop.train`), on
synthetic tokens so that no data file is needed, as the median over logging windows after a warm-up.
Each case runs in its own process so its peak memory is its own.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llm.config import ModelConfig, PretrainConfig, RunConfig, load_config
from llm.data.windows import RandomWindows
from llm.device import describe, machine_line, peak_flops, pick_device, synchronize
from llm.model import GPT, model_size
from llm.stages.pretrain import lm_loss
from llm.train.loop import Stage, train
from llm.train.runtime import setup_runtime

REPO = Path(__file__).resolve().parents[1]

# nanoGPT's CPU demo: config/train_shakespeare_char.py with --device=cpu --compile=False --block_size=64
# --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --dropout=0.0 (LayerNorm, GELU, learned positions)
NANOGPT_CPU_SHAPE = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False,
                         norm="layernorm", mlp="gelu", position="learned")
NANOGPT_CPU_TOKENS_PER_S = 16_700  # measured on this 2-core CPU (46 ms per 768-token step)
TINY_SHAPE = dict(vocab_size=4096, block_size=128, n_layer=4, n_head=4, n_embd=192)
# GPT-2 small as nanoGPT trains it (config/train_gpt2.py: vocabulary padded to 50304, no bias), and the
# same size with this project's defaults (rotary positions, RMSNorm, SwiGLU)
GPT2_SHAPE = dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=False,
                  norm="layernorm", mlp="gelu", position="learned")
GPT2_OURS_SHAPE = dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768)
# GPT-2 small's width and depth with a small vocabulary and context: 88M parameters, a few CPU steps a second,
# large enough that the optimizer state FSDP shards outweighs the activations
WIDE_CPU_SHAPE = dict(vocab_size=4096, block_size=64, n_layer=12, n_head=12, n_embd=768)


class SyntheticLM(Stage):
    """Next-token prediction on random tokens: the pre-training step without any data file. Each log line
    carries this process's memory: the GPU's peak allocation, or on the CPU the tensor memory held
    between steps (weights and optimizer state) and the memory resident."""

    name = "bench"

    def __init__(self, cfg: RunConfig, seed: int = 0, rank: int = 0, world_size: int = 1):
        tokens = np.random.default_rng(seed).integers(0, cfg.model.vocab_size, size=200_000).astype(np.uint16)
        self.model = GPT(cfg.model)
        self.source = RandomWindows(tokens, cfg.train.batch_size, cfg.model.block_size, seed, rank, world_size)

    def loss(self, model, batch):
        return lm_loss(model, batch)

    def flops_per_token(self) -> float:
        return model_size(self.model.config).flops_per_token

    def log_extras(self) -> dict:
        device = next(self.model.parameters()).device
        if device.type == "cuda":
            return {"memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}
        return {"memory_mb": live_tensor_mb(), "resident_mb": resident_memory_mb()}


def live_tensor_mb() -> float:
    """The storage of every tensor alive in this process, each storage once (a sharded tensor's own shard).

    On the CPU there is no allocator to ask, and the resident size keeps what the allocator has freed but
    not returned: after two steps of the 88M-parameter shape, DDP and FSDP both held about 1.9 GB resident
    while their tensors took 1,008 and 504 MB."""
    import gc
    import warnings

    seen, total = set(), 0
    with warnings.catch_warnings():  # isinstance() on torch's deprecated module aliases warns
        warnings.simplefilter("ignore", FutureWarning)
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for obj in tensors:
        tensor = obj.to_local() if hasattr(obj, "to_local") else obj
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total / 2**20


def resident_memory_mb() -> float:
    """Memory this process holds now (Linux; elsewhere its peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, IndexError, ValueError):
        return peak_memory_mb()


def synthetic_run(out: str, shape: dict, batch_size: int, steps: int, log_every: int, overrides: list[str]) -> list[str]:
    """The overrides of a SyntheticLM run in `out`: `steps` steps, no evaluation, no warm-up, no saves but the last."""
    return [f"out_dir={out}", "name=bench", f"train.batch_size={batch_size}", f"train.max_steps={steps}",
            "train.eval_every=0", "train.eval_at_start=false", f"train.log_every={log_every}", "train.progress=false",
            "checkpoint.save_every=0", "optim.warmup_steps=0", *[f"model.{k}={v}" for k, v in shape.items()], *overrides]


def train_throughput(shape: dict, batch_size: int, steps: int, overrides: list[str]) -> dict:
    """Tokens per second of `steps` optimizer steps through the training loop."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(RunConfig, None, synthetic_run(out, shape, batch_size, steps, 10, overrides))
        runtime = setup_runtime(cfg)
        stage = SyntheticLM(cfg)
        train(stage, cfg, runtime)
        lines = [json.loads(x) for x in (Path(out) / "bench" / "metrics.jsonl").read_text().splitlines()]
    rates = [x["tokens_per_s"] for x in lines if x["kind"] == "train"][2:]  # the first windows include warm-up
    rate = statistics.median(rates)
    peak = peak_flops(runtime.device, runtime.precision.dtype)
    flops = model_size(cfg.model).flops_per_token
    return {
        "tokens_per_s": rate,
        "tokens_per_s_windows": [round(r) for r in rates],
        "ms_per_step": 1000 * batch_size * cfg.model.block_size / rate,
        "params": model_size(cfg.model).params,
        "flops_per_token": flops,
        "achieved_tflops": flops * rate / 1e12,
        "mfu": flops * rate / peak if peak else None,
        "device": describe(runtime.device),
        "dtype": str(runtime.precision.dtype).replace("torch.", ""),
        "overrides": overrides,
    }


def parallel_throughput(shape: dict, batch_size: int, steps: int, overrides: list[str]) -> dict:
    """Tokens per second and per-process memory of `steps` steps under torchrun: one process per GPU, or
    two gloo processes on the CPU (benchmarks/parallel.py is each process)."""
    processes = torch.cuda.device_count() if torch.cuda.is_available() else 2
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "benchmarks.parallel", *synthetic_run(out, shape, batch_size, steps, 2, overrides)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)  # -m benchmarks.*: from the repo, not installed
        if done.returncode != 0:
            said = [x for x in done.stderr.splitlines() if x.startswith("error:") or "Error:" in x] or ["torchrun failed"]
            return {"error": said[0]}
        lines = [json.loads(x) for x in (Path(out) / "bench" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["kind"] == "train"]
    rates = [x["tokens_per_s"] for x in train_lines][1:]  # the first window includes warm-up
    return {"tokens_per_s": statistics.median(rates), "tokens_per_s_windows": [round(r) for r in rates],
            "processes": processes, "memory_mb_per_process": train_lines[-1]["memory_mb"],
            "params": model_size(ModelConfig(**shape)).params, "overrides": overrides}


SHAKESPEARE = REPO.parent / "shared/data/tinyshakespeare/input.txt"


def time_to_target(config: str, target_bpb: float, seed: int, overrides: list[str]) -> dict:
    """Pre-train with a shipped config until validation bits per byte reach `target_bpb` (evaluating every 10
    steps; the schedule is the config's own), and report the time it took."""
    from llm.stages.launch import run_stage

    with tempfile.TemporaryDirectory() as out:
        args = [f"out_dir={out}", "name=target", f"train.seed={seed}", f"train.target={target_bpb}",
                "train.early_stop_metric=val_bpb", "train.early_stop_patience=0", "train.eval_every=10",
                "train.progress=false", "checkpoint.save_every=0", f"data.cache_dir={out}/cache", *overrides]
        cfg = load_config(PretrainConfig, Path(config), args)
        started = time.perf_counter()
        result = run_stage("pretrain", cfg)
        wall = time.perf_counter() - started
        run_dir = Path(out) / "target"
        evals = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
        precision = json.loads((run_dir / "final.json").read_text())["precision"]["dtype"]
    # train_s: the loop's clock, which stops during evaluations and saves; wall_s: everything, data preparation included
    return {"reached": result.reason == "target", "step": result.step, "val_bpb": evals[-1]["val_bpb"],
            "train_s": result.elapsed_s, "wall_s": wall, "target_bpb": target_bpb, "seed": seed, "dtype": precision,
            "config": config, "overrides": overrides}


def sampling_throughput(shape: dict, new_tokens: int, decode: str = "dynamic", batch: int = 1, device: str = "auto") -> dict:
    """New tokens per second (all rows together) of one generate() call on `batch` copies of a short prompt;
    `decode` is generate()'s (dynamic, static, graph), or "none" to recompute the whole context per token."""
    from llm.generate import SamplingParams, generate

    torch.manual_seed(0)
    dev = pick_device(device)
    model = GPT(ModelConfig(**shape)).to(dev).eval()
    params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, top_k=50)
    prompts = [[1, 2, 3, 4]] * batch
    how = {"use_cache": decode != "none", "decode": "dynamic" if decode == "none" else decode}
    generate(model, prompts, SamplingParams(max_new_tokens=8), pad_id=0, **how)  # warm-up
    synchronize(dev)
    started = time.perf_counter()
    out = generate(model, prompts, params, pad_id=0, generator=torch.Generator(device=dev).manual_seed(0), **how)
    synchronize(dev)
    elapsed = time.perf_counter() - started
    produced = sum(len(tokens) for tokens in out.tokens)
    return {"new_tokens": produced, "batch": batch, "seconds": elapsed, "tokens_per_s": produced / elapsed,
            "kv_cache": decode != "none", "decode": decode, "device": describe(dev)}


def data_throughput() -> dict:
    """Building the built-in corpus, training its tokenizer, and tokenizing it through datasets.map."""
    from llm.data.builtin_corpus import builtin_documents
    from llm.data.corpus import tokenize_documents
    from llm.tokenizer import train as train_tokenizer

    started = time.perf_counter()
    docs = builtin_documents()
    build_s = time.perf_counter() - started
    n_bytes = sum(len(d.encode()) for d in docs)
    started = time.perf_counter()
    tok = train_tokenizer(docs, 4096)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    ids, _ = tokenize_documents(tok, docs, num_proc=0)
    encode_s = time.perf_counter() - started
    return {
        "corpus_bytes": n_bytes, "corpus_build_s": build_s, "tokenizer_train_s": train_s,
        "tokenizer_train_mb_per_s": n_bytes / train_s / 1e6, "tokenize_s": encode_s,
        "tokenize_mb_per_s": n_bytes / encode_s / 1e6, "tokens": int(ids.size), "bytes_per_token": n_bytes / ids.size,
    }


def matmul_peak(dtype: torch.dtype, size: int = 1024, device: str = "auto") -> float:
    """Measured FLOP/s of a square matrix product: the CPU's practical peak, as no datasheet gives one."""
    dev = pick_device(device)
    a = torch.randn(size, size, device=dev, dtype=dtype)
    b = torch.randn(size, size, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(dev)
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        synchronize(dev)
        runs.append(2 * size**3 * 10 / (time.perf_counter() - started))
    return statistics.median(runs)


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    return {"line": machine_line(), "python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "device": describe(pick_device("auto"))}
