"""DDP on the CPU: torchrun with two processes and the gloo backend runs the same loop as CUDA would."""

import json
import subprocess

import pytest

from conftest_helpers import REPO, TORCHRUN, read_metrics


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])  # Muon orthogonalises whole all-reduced gradients on each rank
def test_two_process_training_shares_steps_and_writes_once(pretrain_args, tmp_path, optimizer):
    args = pretrain_args("train.max_steps=12", "train.eval_every=6", "checkpoint.save_every=6", f"optim.name={optimizer}", name="ddp")
    done = subprocess.run([*TORCHRUN, "--nproc_per_node=2", "--master_port=29533", "scripts/pretrain.py", "--config",
                           "configs/pretrain/tiny.yaml", *args, "train.dtype=float32", "train.device=cpu"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "runs" / "ddp"
    assert done.stdout.count("[pretrain] done") == 1 and done.stdout.count("[pretrain] model:") == 1
    lines = read_metrics(run_dir, "train")
    assert all(line["tokens"] == 2 * 8 * 32 for line in lines)  # both ranks' tokens in every step
    evals = read_metrics(run_dir, "eval")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert json.loads((run_dir / "final.json").read_text())["step"] == 12


def test_more_ranks_than_gpus_is_one_clear_error(monkeypatch):
    import torch

    from llm.distributed import init_distributed
    from llm.errors import ConfigError

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="local rank 1 but this machine has 1 GPU"):
        init_distributed("auto")
    with pytest.raises(ConfigError, match="train.device=cpu"):
        init_distributed("cuda")
