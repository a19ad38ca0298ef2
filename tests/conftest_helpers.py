"""Plain helpers for tests (conftest.py holds the fixtures)."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# torchrun from the interpreter running the tests, wherever its environment lives (not <repo>/.venv, not PATH)
TORCHRUN = [PYTHON, "-m", "torch.distributed.run"]

# train.dtype=auto picks bf16 on a CPU with native bf16 and float32 elsewhere: a test that asserts a learned
# figure pins float32, so the figure does not depend on the CPU. (tiny_overrides stays unpinned: the CUDA
# tests build on it to run bf16; the fixtures in conftest.py add FLOAT32 to it.)
FLOAT32 = "train.dtype=float32"

# Four built-in items, all of them in every batch: a stage must fit them exactly, whatever the CPU's rounding.
FOUR_ITEMS = ["data.builtin_train=4", "data.builtin_val=4", "train.batch_size=4", "train.eval_every=0", "checkpoint.save_every=0",
              "train.log_every=1"]


def metric_losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {x["step"]: x["loss"] for x in lines if x["kind"] == "train"}


def resume_overrides(corpus_file: Path, cache_dir: Path, out_dir: Path, name: str) -> list[str]:
    """A run long enough (200 steps, dropout on) that a kill lands part way through it."""
    return [
        f"name={name}", f"out_dir={out_dir}", f"data.path={corpus_file}", f"data.cache_dir={cache_dir}",
        "data.chunk_chars=4000", "tokenizer.vocab_size=512", "model.block_size=64", "model.n_layer=2",
        "model.n_head=2", "model.n_embd=64", "model.dropout=0.1", "optim.warmup_steps=20", "train.batch_size=8",
        "train.max_steps=200", "train.eval_every=50", "train.eval_batches=2", "train.log_every=1",
        "train.progress=false", "checkpoint.save_every=10", "checkpoint.keep_last=2", "sampling.max_new_tokens=4",
    ]


def kill_and_resume(script: str, config: str, args: list[str], run_dir: Path, sig, after_lines: int, log_dir: Path) -> str:
    """Run a stage script, send `sig` once metrics.jsonl has `after_lines` lines, then resume it to the end.

    Returns the resumed run's output. Fails if the first run ended before the signal arrived.
    """
    import signal
    import subprocess
    import time

    command = [PYTHON, script, "--config", config, *args]
    with open(log_dir / "first.txt", "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        metrics = run_dir / "metrics.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= after_lines:
                break
            time.sleep(0.02)
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
    first = (log_dir / "first.txt").read_text()
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), first
    assert not (run_dir / "final.json").exists(), "the run finished before the signal: make it longer"
    done = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed from" in done.stdout
    return done.stdout


def read_metrics(run_dir: Path, kind: str | None = None) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if kind is None or x["kind"] == kind]


def tiny_overrides(corpus_file: Path, cache_dir: Path, out_dir: Path, name: str = "tiny") -> list[str]:
    """A model and run small enough that a step takes milliseconds on a CPU."""
    return [
        f"name={name}",
        f"out_dir={out_dir}",
        f"data.path={corpus_file}",
        f"data.cache_dir={cache_dir}",
        "data.chunk_chars=4000",
        "tokenizer.vocab_size=512",
        "model.block_size=32",
        "model.n_layer=2",
        "model.n_head=2",
        "model.n_embd=32",
        "optim.name=adamw",  # the figures tests assert were calibrated with AdamW; Muon has tests of its own
        "optim.lr=3e-3",
        "optim.warmup_steps=5",
        "train.batch_size=8",
        "train.max_steps=40",
        "train.eval_every=20",
        "train.eval_batches=2",
        "train.log_every=1",
        "train.progress=false",
        "checkpoint.save_every=20",
        "sampling.max_new_tokens=8",
    ]


def sft_overrides(init_from: Path, out_dir: Path, name: str = "sft") -> list[str]:
    """Fine-tune on two easy built-in task kinds, enough steps for the tiny model to learn to stop."""
    return [
        f"init_from={init_from}", f"out_dir={out_dir}", f"name={name}",
        "data.builtin_train=2000", "data.builtin_val=60", "data.builtin_kinds=[first_word, last_word]",
        "optim.lr=1e-2", "optim.warmup_steps=10", "optim.weight_decay=0",
        "train.batch_size=16", "train.max_steps=150", "train.max_time_s=0", "train.dtype=float32", "train.early_stop_patience=0",
        "train.eval_every=50", "train.log_every=1", "train.progress=false",
        "checkpoint.save_every=50", "eval.n_tasks=40", "eval.unseen=10", "eval.max_new_tokens=12",
    ]


def reward_overrides(init_from: Path, out_dir: Path, name: str = "reward") -> list[str]:
    return [
        f"init_from={init_from}", f"out_dir={out_dir}", f"name={name}",
        "data.builtin_train=1000", "data.builtin_val=80", "data.builtin_kinds=[first_word, last_word]",
        "data.sampled_train=24", "data.sampled_val=8",  # the tiny config's rater-ranked samples, a few of them
        "optim.lr=1e-3", "optim.warmup_steps=5", "train.batch_size=16", "train.max_steps=60", "train.epochs=0",
        "train.max_time_s=0", "train.dtype=float32", "train.early_stop_patience=0", "train.eval_every=30",
        "train.log_every=1", "train.progress=false", "checkpoint.save_every=30",
    ]


def ppo_overrides(policy: Path, reward: Path, out_dir: Path, name: str = "ppo") -> list[str]:
    return [
        f"policy={policy}", f"reward_model={reward}", f"out_dir={out_dir}", f"name={name}",
        "ppo.builtin_prompts=200", "ppo.edge_candidates=0", "eval.pass_k=0",
        "ppo.builtin_kinds=[first_word, last_word]", "ppo.rollout_batch=8", "ppo.minibatch=4",
        "ppo.epochs=2", "ppo.max_new_tokens=8", "optim.lr=1e-4", "optim.warmup_steps=0", "optim.schedule=constant", "train.max_steps=12",
        "train.max_time_s=0", "train.dtype=float32", "train.eval_every=6", "train.log_every=1", "train.progress=false",
        "checkpoint.save_every=6", "eval.n_prompts=10", "eval.unseen=5", "eval.kinds=[first_word, last_word]", "eval.max_new_tokens=8",
    ]


def dpo_overrides(sft_run, out_dir, name: str) -> list[str]:
    return [
        f"init_from={sft_run}", f"out_dir={out_dir}", f"name={name}", "data.builtin_train=400", "data.builtin_val=40",
        "data.builtin_kinds=[first_word, last_word]", "optim.lr=1e-3", "optim.warmup_steps=0", "train.batch_size=8",
        "train.max_steps=60", "train.epochs=0", "train.max_time_s=0", "train.dtype=float32", "train.eval_every=30",
        "train.log_every=1", "train.progress=false", "checkpoint.save_every=30", "eval.n_prompts=10", "eval.unseen=5",
        "eval.kinds=[first_word, last_word]", "eval.max_new_tokens=8",
    ]


def check_eval_items(run_dir: Path, tasks) -> dict:
    """A finished run's eval_items.json: step 0's, the final and the best checkpoint's verdicts, one per prompt,
    each agreeing with the exact match its evaluation logged (`tasks` hold no prompt twice)."""
    record = json.loads((run_dir / "eval_items.json").read_text())
    final = json.loads((run_dir / "final.json").read_text())
    evals = {line["step"]: line for line in read_metrics(run_dir, "eval")}
    assert record["step0"]["step"] == 0 and record["latest"]["step"] == final["step"] == max(evals)
    assert record.get("best", {}).get("checkpoint") == final["best_checkpoint"]
    prompts = [t.prompt for t in tasks]
    for entry in record.values():
        assert list(entry["items"]) == prompts
        assert sum(entry["items"].values()) / len(prompts) == evals[entry["step"]]["exact_match"]
    return record
