import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest_helpers import PYTHON, REPO
from llm.config import PipelineConfig, load_config
from llm.errors import ConfigError
from llm.pipeline import PlannedStage, TimeEstimate, plan


def pipeline_yaml(tmp_path, corpus_file, cache_dir, name="p", **extra_overrides) -> str:
    stage_overrides = {
        "pretrain": [f"data.path={corpus_file}", f"data.cache_dir={cache_dir}", "data.chunk_chars=4000", "tokenizer.vocab_size=512",
                     "model.block_size=64", "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "train.max_steps=30",
                     "train.eval_every=15", "train.eval_batches=2", "train.max_time_s=0", "train.batch_size=8",
                     "checkpoint.save_every=10", "sampling.max_new_tokens=4", "train.progress=false", "train.log_every=1"],
        "sft": ["data.builtin_train=300", "data.builtin_val=20", "data.builtin_kinds=[first_word, last_word]", "train.max_steps=30",
                "train.eval_every=15", "train.max_time_s=0", "train.batch_size=8",
                "checkpoint.save_every=5", "eval.n_tasks=10", "eval.unseen=5",
                "eval.max_new_tokens=6", "eval.prompts=[hi]", "train.progress=false", "train.log_every=1", "train.dtype=float32"],
        "reward": ["data.builtin_train=200", "data.builtin_val=20", "data.builtin_kinds=[first_word, last_word]", "train.max_steps=16",
                   "data.sampled_train=8", "data.sampled_val=4",
                   "train.eval_every=8", "train.max_time_s=0", "train.batch_size=8", "checkpoint.save_every=8",
                   "train.progress=false", "train.log_every=1", "train.dtype=float32"],
        "ppo": ["ppo.builtin_prompts=100", "ppo.edge_candidates=0", "eval.pass_k=0",
                "ppo.builtin_kinds=[first_word, last_word]", "ppo.rollout_batch=8", "ppo.minibatch=4",
                "ppo.epochs=1", "ppo.max_new_tokens=6", "train.max_steps=6", "train.eval_every=3", "train.max_time_s=0",
                "checkpoint.save_every=3", "eval.n_prompts=8", "eval.unseen=4", "eval.kinds=[first_word, last_word]",
                "eval.max_new_tokens=6", "train.progress=false", "train.log_every=1", "train.dtype=float32"],
    }
    for stage, extra in extra_overrides.items():
        stage_overrides[stage] = stage_overrides[stage] + extra
    config = {"name": name, "out_dir": str(tmp_path / "runs"), "stages": list(stage_overrides), "report": False,
              "report_prompts": ["Say hi"]}
    for stage, overrides in stage_overrides.items():
        config[stage] = {"config": str(REPO / f"configs/{stage}/tiny.yaml"), "overrides": overrides}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def launch(config: str, *args: str, **kwargs):
    return subprocess.Popen([PYTHON, "scripts/pipeline.py", "--config", config, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(config: str, *args: str) -> str:
    proc = launch(config, *args)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def final_metrics(run: str, tmp_path) -> dict:
    base = tmp_path / "runs" / run
    return {stage: json.loads((base / stage / "final.json").read_text())["metrics"] for stage in ("pretrain", "sft", "reward", "ppo")}


def test_fingerprints_change_downstream_only(tmp_path, corpus_file, cache_dir):
    path = pipeline_yaml(tmp_path, corpus_file, cache_dir)
    before = {s.stage: s.fingerprint for s in plan(load_config(PipelineConfig, path))}
    changed = pipeline_yaml(tmp_path, corpus_file, cache_dir, reward=["optim.lr=5e-4"])
    after = {s.stage: s.fingerprint for s in plan(load_config(PipelineConfig, changed))}
    assert before["pretrain"] == after["pretrain"] and before["sft"] == after["sft"]
    assert before["reward"] != after["reward"] and before["ppo"] != after["ppo"]
    wired = {s.stage: s.config for s in plan(load_config(PipelineConfig, path))}
    assert wired["ppo"].policy == str(tmp_path / "runs/p/sft") and wired["ppo"].reward_model == str(tmp_path / "runs/p/reward")


def test_bad_stage_names_are_config_errors(tmp_path, corpus_file, cache_dir):
    path = pipeline_yaml(tmp_path, corpus_file, cache_dir)
    with pytest.raises(ConfigError, match="unknown stage 'rlhf'"):
        plan(load_config(PipelineConfig, path, ["stages=[pretrain, rlhf]"]))


@pytest.mark.slow
def test_killed_pipeline_resumes_to_the_same_final_metrics(tmp_path, corpus_file, cache_dir):
    straight = pipeline_yaml(tmp_path, corpus_file, cache_dir, name="straight")
    finish(straight)
    killed = pipeline_yaml(tmp_path, corpus_file, cache_dir, name="killed")
    proc = launch(killed)
    sft_metrics = tmp_path / "runs/killed/sft/metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if sft_metrics.exists() and len(sft_metrics.read_text().splitlines()) >= 12:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (tmp_path / "runs/killed/sft/final.json").exists(), "the kill came too late"
    pretrain_final = (tmp_path / "runs/killed/pretrain/final.json").stat().st_mtime_ns
    out = finish(killed)
    assert "pretrain: up to date" in out and "sft: resuming" in out
    assert (tmp_path / "runs/killed/pretrain/final.json").stat().st_mtime_ns == pretrain_final
    assert final_metrics("killed", tmp_path) == final_metrics("straight", tmp_path)
    again = finish(killed)
    assert all(f"{stage}: up to date" in again for stage in ("pretrain", "sft", "reward", "ppo"))
    redo = finish(killed, "--from", "reward")
    assert "sft: up to date" in redo and "reward: starting" in redo and "ppo: starting" in redo
    record = json.loads((tmp_path / "runs/killed/pipeline.json").read_text())
    assert [s["status"] for s in record["stages"]] == ["done"] * 4 and record["finished"]


def test_a_failing_stage_still_gets_a_report_with_the_error_and_the_command(tmp_path, corpus_file, cache_dir):
    config = pipeline_yaml(tmp_path, corpus_file, cache_dir, name="broken", sft=["data.sources=[{path: missing.jsonl}]"])
    spec = yaml.safe_load(open(config))
    spec.update(stages=["pretrain", "sft"], report=True)
    del spec["reward"], spec["ppo"]
    open(config, "w").write(yaml.safe_dump(spec))
    proc = launch(config)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2, out
    assert out.strip().splitlines()[-1].startswith("error: sft: missing.jsonl")
    record = json.loads((tmp_path / "runs/broken/pipeline.json").read_text())
    assert [s["status"] for s in record["stages"]] == ["done", "failed"] and "missing.jsonl" in record["stages"][1]["error"]
    report = (tmp_path / "runs/broken/report.md").read_text()
    assert "The pipeline stopped: sft failed:" in report and f"scripts/pipeline.py --config {config}" in report


def test_a_stage_cut_short_by_its_clock_is_said_by_the_pipeline_and_the_report(tmp_path, corpus_file, cache_dir):
    config = pipeline_yaml(tmp_path, corpus_file, cache_dir, name="clock", pretrain=["train.max_time_s=1e-9"])
    spec = yaml.safe_load(open(config))
    spec.update(stages=["pretrain"], report=True)
    open(config, "w").write(yaml.safe_dump(spec))
    out = finish(config)
    assert "[pipeline] warning: pretrain stopped by train.max_time_s at step 1 of 30" in out
    report = (tmp_path / "runs/clock/report.md").read_text()
    assert "**pretrain stopped by train.max_time_s at step 1 of 30: cut short" in report


def test_time_estimate_scales_later_stages_by_this_machines_speed(capsys):
    steps = [PlannedStage(name, None, Path(name), "f", [], seconds) for name, seconds in (("sft", 100.0), ("reward", 300.0))]
    estimate = TimeEstimate(steps)
    estimate.started -= 20.0  # the stage has run 20 s of wall time
    estimate("sft", 5, 100, 10.0)  # too early to say
    estimate("sft", 10, 100, 10.0)  # 1 s a step: 90 s left, 110 s for the stage = 1.1x its reference
    estimate("sft", 20, 100, 20.0)  # said once a stage
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["[pipeline] estimate on this machine: sft about 1m30s more; "
                   "the whole pipeline about 7m00s more (1.1x the reference machine's time)"]
