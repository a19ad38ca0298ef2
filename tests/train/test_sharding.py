"""FSDP2 on the CPU: torchrun with two gloo processes shards the model, and its checkpoints reshard.

Two processes of batch 4 see the windows one process of batch 8 sees (llm/data/windows.py), so the
sharded run and the single one compute the same global batch and must give the same losses.
"""

import json
import shutil
import subprocess

import pytest
import torch

from conftest_helpers import PYTHON, REPO, TORCHRUN, dpo_overrides, metric_losses, ppo_overrides, read_metrics
from llm.train import checkpoint as ckpt

FP32_CPU = ["train.dtype=float32", "train.device=cpu"]


def launch(script: str, args: list[str], processes: int, *, config: str | None = "configs/pretrain/tiny.yaml", port: int = 29541,
           runner: str | None = None, check: bool = True, parallel: str = "fsdp") -> subprocess.CompletedProcess:
    config_args = ["--config", config] if config else []
    target = [runner or script] if runner else [script]
    if processes == 1:
        command = [PYTHON, *target, *config_args, *args, *FP32_CPU, f"train.parallel={parallel}"]
    else:
        command = [*TORCHRUN, f"--nproc_per_node={processes}", f"--master_port={port}", *target, *config_args, *args, *FP32_CPU,
                   f"train.parallel={parallel}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def close(a: dict[int, float], b: dict[int, float], tol: float = 1e-5) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tol for k in a)


@pytest.fixture
def run_args(pretrain_args):
    def make(name: str, batch: int, *extra: str) -> list[str]:
        return pretrain_args("train.max_steps=12", "train.eval_every=6", "checkpoint.save_every=6", f"train.batch_size={batch}",
                             *extra, name=name)

    return make


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["optim.name=muon", "train.activation_checkpointing=true"]], ids=["adamw", "muon+ac"])
def test_two_sharded_processes_train_like_one_on_the_same_global_batch(run_args, tmp_path, extra):
    launch("scripts/pretrain.py", run_args("one", 8, *extra), 1)
    launch("scripts/pretrain.py", run_args("two", 4, *extra), 2)
    one, two = metric_losses(tmp_path / "runs/one"), metric_losses(tmp_path / "runs/two")
    assert len(one) == 12 and close(one, two), (one, two)
    final = ckpt.load_checkpoint(tmp_path / "runs/two/checkpoints/step_0000012")
    manifest = json.loads((final.folder / "manifest.json").read_text())
    assert manifest["format"] == ckpt.SHARDED_FORMAT
    assert sum(name.startswith("shards/") for name in manifest["files"]) == 2  # one file per process, each checksummed
    assert "lm_head.weight" in final.weights and "optimizer" not in final.trainer_state()  # whole weights beside the shards


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process_and_in_two(run_args, tmp_path):
    launch("scripts/pretrain.py", run_args("straight", 4), 2)
    straight = metric_losses(tmp_path / "runs/straight")
    for name, processes in (("in_one", 1), ("in_two", 2)):
        shutil.copytree(tmp_path / "runs/straight", tmp_path / f"runs/{name}")
        shutil.rmtree(tmp_path / f"runs/{name}/checkpoints/step_0000012")  # as if stopped after step 6
        done = launch("scripts/pretrain.py", [*run_args(name, 8 // processes), "--resume"], processes)
        assert f"resumed from {tmp_path}/runs/{name}/checkpoints/step_0000006" in done.stdout
        resumed = metric_losses(tmp_path / f"runs/{name}")
        assert close(resumed, straight)
        if processes == 2:  # the same processes: exactly the same numbers
            assert resumed == straight
        else:
            assert "written by 2 processes and this run has 1" in done.stdout


@pytest.mark.slow
def test_a_kill_during_a_sharded_save_leaves_the_previous_checkpoint_valid(run_args, tmp_path):
    # every shard of the step-12 save is on disk, the manifest is not, when process 0 is killed
    runner = str(REPO / "tests/train/kill_during_save.py")
    done = launch("scripts/pretrain.py", run_args("killed", 4), 2, runner=runner, check=False)
    assert done.returncode != 0
    checkpoints = tmp_path / "runs/killed/checkpoints"
    staging = [p for p in checkpoints.iterdir() if p.name.startswith(".tmp-step_0000012")]
    assert staging and list((staging[0] / "shards").iterdir()), "the kill came before the shards were written"
    assert ckpt.newest_valid(checkpoints) == checkpoints / "step_0000006"
    done = launch("scripts/pretrain.py", [*run_args("killed", 4), "--resume"], 2)
    assert "resumed from" in done.stdout and "step_0000006" in done.stdout
    assert ckpt.newest_valid(checkpoints) == checkpoints / "step_0000012"
    assert not any(p.name.startswith(".tmp-") for p in checkpoints.iterdir())  # the next save swept the partial one


@pytest.mark.slow
@pytest.mark.parametrize("parallel, lora", [("fsdp", []), ("ddp", ["lora.rank=4", "lora.alpha=8"])], ids=["fsdp", "ddp+lora"])
def test_ppo_in_two_processes_samples_half_the_rollouts_each_and_trains_as_one_process(sft_run, reward_run, tmp_path, parallel, lora):
    # two processes of 4 prompts and minibatches of 2 against one of 8 and 4: each samples its own prompts
    # (the same draws as the single process's rows), they share the scored rollouts, and each step's
    # minibatch is split between them; 12 steps cross into the second iteration and its KL update. With
    # adapters the reference is the policy with its adapters off: the KL must still start at 0 and move
    common = ["ppo.samples_per_prompt=2", "ppo.ptx_coef=0.5", "train.max_steps=12", "train.eval_every=6", "checkpoint.save_every=6", *lora]
    for name, processes in (("one", 1), ("two", 2)):
        per_process = [f"ppo.rollout_batch={8 // processes}", f"ppo.minibatch={4 // processes}", f"ppo.ptx_batch={4 // processes}"]
        launch("scripts/ppo.py", ppo_overrides(sft_run, reward_run, tmp_path, name) + common + per_process, processes,
               config="configs/ppo/tiny.yaml", parallel=parallel)
    one, two = (read_metrics(tmp_path / name, "train") for name in ("one", "two"))
    assert len(one) == len(two) == 12 and {e["iteration"] for e in two} == {0, 1}
    for a, b in zip(one, two):
        for key in ("loss", "grad_norm", "kl_coef", "objective/kl", "objective/scores", "objective/entropy", "loss/ptx"):
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(a[key])), (a["step"], key, a[key], b[key])
    assert one[-1]["kl_coef"] != one[0]["kl_coef"]  # the controller moved, alike in both
    evals = list(zip(read_metrics(tmp_path / "one", "eval"), read_metrics(tmp_path / "two", "eval")))
    assert evals[0][0]["kl"] == evals[0][1]["kl"] == 0.0 and evals[-1][1]["kl"] != 0
    for a, b in evals:  # the processes split the greedy replies of every evaluation and share them
        for key in ("kl", "exact_match", "best_possible", "new_words/exact_match", "reward", "win_rate"):
            assert abs(a[key] - b[key]) < 1e-5, (a["step"], key, a[key], b[key])
    final = ckpt.load_checkpoint(tmp_path / "two/checkpoints/step_0000012")
    assert final.meta["kind"] == "actor_critic" and (final.folder / "shards").is_dir() == (parallel == "fsdp")
    if lora:  # the policy's base weights never moved; its adapters did
        sft = ckpt.load(sft_run, "best").weights
        policy = {name.removeprefix("policy."): t for name, t in final.weights.items() if name.startswith("policy.")}
        assert all(torch.equal(policy[name], sft[name]) for name in sft)
        assert any(name.endswith("lora_B") and bool(t.abs().sum() > 0) for name, t in policy.items())


@pytest.mark.slow
def test_two_processes_split_the_sft_evaluation_and_agree_with_one(sft_args, sft_run, tmp_path):
    short = [f"init_from={sft_run}", "train.max_steps=1", "train.eval_every=1", "checkpoint.save_every=0", "eval.n_tasks=41"]
    for name, processes in (("one", 1), ("two", 2)):
        launch("scripts/sft.py", sft_args(*short, name=name), processes, config="configs/sft/tiny.yaml")
    one, two = (read_metrics(tmp_path / "runs" / name, "eval")[0] for name in ("one", "two"))
    assert one["step"] == two["step"] == 0
    for key in ("val_loss", "exact_match", "best_possible", "stop_rate", "reply_tokens", "new_words/exact_match"):
        assert abs(one[key] - two[key]) < 1e-6, (key, one[key], two[key])
    # 41 tasks split 20 and 21: every prompt has one verdict. The test SFT model answers every task alike,
    # so the order of the shared replies is checked in tests/eval/test_tasks.py
    items = [json.loads((tmp_path / "runs" / name / "eval_items.json").read_text())["step0"]["items"] for name in ("one", "two")]
    assert items[0] == items[1] and len(items[0]) == 41


@pytest.mark.slow
def test_a_ppo_guardrail_in_one_process_stops_both_with_a_one_line_error(sft_run, reward_run, tmp_path):
    # the ratio bound trips in some process's part of a minibatch; both must stop there, none wait for the other
    args = ppo_overrides(sft_run, reward_run, tmp_path, "tripped") + ["ppo.max_ratio=1.000001", "optim.lr=3e-3", "checkpoint.save_every=0",
                                                                       "ppo.rollout_batch=4", "ppo.minibatch=2"]
    done = launch("scripts/ppo.py", args, 2, config="configs/ppo/tiny.yaml", check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: PPO guardrail: probability ratio")]
    assert done.returncode != 0 and len(errors) == 2, done.stderr[-3000:]
    assert any("went from probability" in line for line in errors)  # the process holding the token names it


@pytest.mark.slow
def test_a_checkpoint_of_an_unsharded_run_is_refused_by_a_sharded_resume_in_one_line(run_args, tmp_path):
    args = run_args("plain", 4, "train.max_steps=6")
    done = subprocess.run([PYTHON, "scripts/pretrain.py", "--config", "configs/pretrain/tiny.yaml", *args, "train.dtype=float32"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    done = launch("scripts/pretrain.py", [*run_args("plain", 4), "--resume"], 2, check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and errors
    assert errors[0].endswith("step_0000006: written by a run without train.parallel=fsdp, which FSDP cannot resume; "
                              "resume it with train.parallel=ddp (or start a new run from it with init_from)")


@pytest.mark.slow
def test_dpo_with_adapters_sharded_trains_as_ddp_and_resumes_exactly(sft_run, tmp_path):
    # the reference is the sharded policy itself with its adapters off: in the loss, outside any gathering, and in the
    # evaluation's KL, gathered
    common = ["lora.rank=4", "lora.alpha=8", "data.sources=[{path: builtin}]", "eval.n_prompts=4", "eval.unseen=2", "train.max_steps=8",
              "train.eval_every=4", "checkpoint.save_every=4", "train.batch_size=4"]
    for parallel in ("ddp", "fsdp"):
        launch("scripts/dpo.py", [*dpo_overrides(sft_run, tmp_path, parallel), *common], 2, config="configs/dpo/tiny.yaml",
               parallel=parallel)
    ddp, fsdp = metric_losses(tmp_path / "ddp"), metric_losses(tmp_path / "fsdp")
    assert len(ddp) == 8 and close(ddp, fsdp), (ddp, fsdp)
    assert abs(fsdp[1] - ddp[1]) < 1e-6 and fsdp[8] != fsdp[1]  # the same reference at the start; the policy moved from it
    kl = [(a["kl"], b["kl"]) for a, b in zip(read_metrics(tmp_path / "ddp", "eval"), read_metrics(tmp_path / "fsdp", "eval"))]
    assert kl[0] == (0.0, 0.0) and kl[-1][1] != 0 and all(abs(a - b) < 1e-5 for a, b in kl), kl
    shutil.copytree(tmp_path / "fsdp", tmp_path / "again")
    shutil.rmtree(tmp_path / "again/checkpoints/step_0000008")
    done = launch("scripts/dpo.py", [*dpo_overrides(sft_run, tmp_path, "again"), *common, "--resume"], 2, config="configs/dpo/tiny.yaml")
    assert "step_0000004" in done.stdout and metric_losses(tmp_path / "again") == fsdp
