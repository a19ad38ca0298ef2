import signal
import subprocess

from conftest_helpers import PYTHON, REPO, kill_and_resume, metric_losses, read_metrics, reward_overrides


def test_reward_loss_falls_and_accuracy_rises(reward_run):
    evals = read_metrics(reward_run, "eval")
    assert evals[0]["step"] == 0 and abs(evals[0]["val_accuracy"] - 0.5) < 0.25
    assert evals[-1]["val_accuracy"] > evals[0]["val_accuracy"] + 0.1
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert set(evals[-1]["val_accuracy_by_kind"]) <= {"off_by_one", "shuffled", "truncated", "ignores_instruction", "never_stops", "wrong_answer"}
    losses = list(metric_losses(reward_run).values())
    assert sum(losses[-10:]) < sum(losses[:10])


def test_score_script_prints_scores_best_first(reward_run):
    done = subprocess.run([PYTHON, "scripts/score.py", "--checkpoint", str(reward_run), "--prompt", "What is the first word in: red fox?",
                           "--response", "red", "--response", "fox"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and float(lines[0].split()[0]) >= float(lines[1].split()[0])


def test_score_script_rejects_a_non_reward_checkpoint(sft_run):
    done = subprocess.run([PYTHON, "scripts/score.py", "--checkpoint", str(sft_run), "--prompt", "x", "--response", "y"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a reward model" in done.stderr


def test_reward_resume_after_kill_reproduces_losses(sft_run, tmp_path):
    from llm.config import RewardConfig, load_config
    from llm.stages.reward import run

    base = reward_overrides(sft_run, tmp_path / "runs", "a") + ["train.max_steps=80", "checkpoint.save_every=10"]
    run(load_config(RewardConfig, REPO / "configs/reward/tiny.yaml", base))
    args = reward_overrides(sft_run, tmp_path / "runs", "b") + ["train.max_steps=80", "checkpoint.save_every=10"]
    kill_and_resume("scripts/reward.py", "configs/reward/tiny.yaml", args, tmp_path / "runs" / "b", signal.SIGKILL, 30, tmp_path)
    assert metric_losses(tmp_path / "runs" / "b") == metric_losses(tmp_path / "runs" / "a")
