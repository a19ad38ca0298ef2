"""LoRA against full fine-tuning on the GPT-2 124M shape: step time, tokens/s and peak memory through the real loop,
and PPO's memory with a second reference copy against the shared reference (llm/lora.py AdaptersOff).

python -m benchmarks.lora            every case, each in its own process so its peak memory is its own
python -m benchmarks.lora CASE       one case (full, lora8, lora64, reference-copy, reference-shared), printed as JSON
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.measure import GPT2_SHAPE, REPO, SyntheticLM, live_tensor_mb, peak_memory_mb, synthetic_run
from llm.config import LoRAConfig, ModelConfig, RunConfig, load_config
from llm.lora import AdaptersOff, add_adapters, is_adapter
from llm.model import GPT
from llm.train.loop import train
from llm.train.optim import build_optimizer
from llm.train.runtime import setup_runtime

# GPT-2 small's weights (124M with its 50,257-token vocabulary padded to 50,304) at a context a 2-core CPU steps through
SHAPE = {**GPT2_SHAPE, "block_size": 256}
BATCH, STEPS = 4, 6


def step_time(rank: int) -> dict:
    """Median step time over the last STEPS - 2 steps of next-token training (SFT's step, without its masking)."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(RunConfig, None, synthetic_run(out, SHAPE, BATCH, STEPS, 1, ["train.dtype=float32"]))
        stage = SyntheticLM(cfg)
        if rank:
            add_adapters(stage.model, LoRAConfig(rank=rank))
        trained = sum(p.numel() for p in stage.model.parameters() if p.requires_grad)
        train(stage, cfg, setup_runtime(cfg))
        lines = [json.loads(x) for x in (Path(out) / "bench" / "metrics.jsonl").read_text().splitlines()]
        disk = checkpoint_mb(next((Path(out) / "bench" / "checkpoints").glob("step_*")))
    train_lines = [x for x in lines if x["kind"] == "train"][2:]
    rate = statistics.median(x["tokens_per_s"] for x in train_lines)
    return {"trained_params": trained, "tokens_per_s": rate, "ms_per_step": 1000 * BATCH * SHAPE["block_size"] / rate,
            "live_tensor_mb": train_lines[-1]["memory_mb"], "peak_rss_mb": peak_memory_mb(), **disk}


def checkpoint_mb(folder: Path) -> dict:
    """A checkpoint's own files, and those hard-linked from the run's one copy of the frozen weights (written once a run)."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    return {"checkpoint_own_mb": sum(f.stat().st_size for f in files if f.stat().st_nlink == 1) / 2**20,
            "checkpoint_linked_mb": sum(f.stat().st_size for f in files if f.stat().st_nlink > 1) / 2**20}


def ppo_memory(shared: bool) -> dict:
    """A LoRA rank-8 policy and its reference after one policy step and one reference forward: the reference a second
    copy of the weights (as without adapters) or the policy's own base weights."""
    torch.manual_seed(0)
    policy = add_adapters(GPT(ModelConfig(**SHAPE)), LoRAConfig(rank=8))
    if shared:
        reference = AdaptersOff(policy)
    else:
        reference = GPT(policy.config).requires_grad_(False).eval()
        reference.load_state_dict({k: v for k, v in policy.state_dict().items() if not is_adapter(k)})
    optimizer = build_optimizer(policy, load_config(RunConfig, None, []).optim, torch.device("cpu"))
    ids = torch.randint(0, SHAPE["vocab_size"], (BATCH, SHAPE["block_size"]))
    with torch.no_grad():
        reference(ids)
    policy(ids).float().logsumexp(-1).mean().backward()
    optimizer.step()
    return {"live_tensor_mb": live_tensor_mb(), "peak_rss_mb": peak_memory_mb()}


CASES = {"full": lambda: step_time(0), "lora8": lambda: step_time(8), "lora64": lambda: step_time(64),
         "reference-copy": lambda: ppo_memory(False), "reference-shared": lambda: ppo_memory(True)}


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(CASES[sys.argv[1]]()))
        return
    for name in CASES:
        done = subprocess.run([sys.executable, "-m", "benchmarks.lora", name], capture_output=True, text=True, cwd=REPO)
        print(name, done.stdout.strip().splitlines()[-1] if done.returncode == 0 else done.stderr.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
