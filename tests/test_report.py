"""The run report, built from a fabricated pipeline folder (no training, no model: answers come from answers.json)."""

import base64
import json
import re
import subprocess
import warnings
from pathlib import Path

import pytest

from conftest_helpers import PYTHON, REPO
from llm.errors import DataError
from llm.report.build import Stage, build_report, headline
from llm.report.render import Table, to_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODEL_CONFIG = {"vocab_size": 512, "block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 64}
NASTY = '<script>alert("x")</script> & more'


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def fake_stage(run: Path, stage: str, evals: list[dict], samples: list, finished: bool = True, kind: str = "gpt") -> None:
    """A stage folder as a real run leaves it: metrics, samples, config, a checkpoint's meta and final.json."""
    folder = run / stage
    (folder / "checkpoints" / "step_0000020").mkdir(parents=True)
    train = [{"kind": "train", "step": s, "loss": 5.0 - 0.2 * s + (0.3 if s % 2 else 0.0), "lr": 1e-3, "grad_norm": 1.0,
              "tokens": 128, "tokens_seen": 128 * s, "tokens_per_s": 900.0, "elapsed_s": 0.1 * s} for s in range(1, 21)]
    lines = [{"kind": "eval", "step": 10 * n, "tokens_seen": 1280 * n, **e} for n, e in enumerate(evals)]
    write_jsonl(folder / "metrics.jsonl", [lines[0], *train[:10], *lines[1:2], *train[10:], *lines[2:]])
    write_jsonl(folder / "samples.jsonl", [{"step": 0, "samples": samples}, {"step": 20, "samples": samples}])
    (folder / "config.yaml").write_text(f"name: {stage}\nmodel: {json.dumps(MODEL_CONFIG)}\ntrain: {{dtype: float32, batch_size: 4}}\n")
    meta = {"kind": kind, "model_config": MODEL_CONFIG, "stage": stage, "step": 20}
    (folder / "checkpoints" / "step_0000020" / "meta.json").write_text(json.dumps(meta))
    if finished:
        final = {"checkpoint": "step_0000020", "step": 20, "reason": "max_steps", "best_checkpoint": "step_0000020",
                 "tokens_seen": 2560, "elapsed_s": 2.0, "metrics": lines[-1]}
        (folder / "final.json").write_text(json.dumps(final))


def fake_run(root: Path, ppo_exact: float = 0.61) -> Path:
    """pretrain -> sft -> reward (stopped part way) -> ppo, dpo pending; base 0% < SFT 55.5% < PPO `ppo_exact`."""
    run = root / "tiny"
    fake_stage(run, "pretrain", [{"val_loss": 6.0, "val_bpb": 3.0}, {"val_loss": 5.0, "val_bpb": 2.5}, {"val_loss": 4.0, "val_bpb": 2.0}],
               ["The first sample", "Another <sample> & text"])
    by_kind = [{"copy": 0.0, "repeat": 0.0}, {"copy": 0.2, "repeat": 0.5}, {"copy": 0.3, "repeat": 0.81}]
    fake_stage(run, "sft", [{"val_loss": 9.0, "exact_match": 0.0, "stop_rate": 0.0, "exact_match_by_kind": by_kind[0]},
                            {"val_loss": 4.0, "exact_match": 0.3, "stop_rate": 1.0, "exact_match_by_kind": by_kind[1]},
                            {"val_loss": 3.0, "exact_match": 0.555, "stop_rate": 1.0, "exact_match_by_kind": by_kind[2]}],
               [{"prompt": "Say hi 2 times.", "reply": "hi hi", "finished": True}])
    fake_stage(run, "reward", [{"val_accuracy": 0.5}, {"val_accuracy": 0.7}], [], finished=False, kind="reward")
    policy = [{"kl": 0.0, "exact_match": 0.555, "sft_exact_match": 0.555, "reward": 0.9, "win_rate": 0.5},
              {"kl": 0.1, "exact_match": 0.58, "sft_exact_match": 0.555, "reward": 1.0, "win_rate": 0.6},
              {"kl": 0.2, "exact_match": ppo_exact, "sft_exact_match": 0.555, "reward": None, "win_rate": 0.7}]
    fake_stage(run, "ppo", policy, [{"prompt": "Copy: a|b", "answer": "a|b", "sft": "a b", "policy": NASTY}], kind="actor_critic")
    stages = [{"stage": s, "run_dir": f"runs/tiny/{s}", "status": "done", "fingerprint": "f", "elapsed_s": 3.0} for s in ("pretrain", "sft", "ppo")]
    stages.insert(2, {"stage": "reward", "run_dir": "runs/tiny/reward", "status": "running", "fingerprint": "f"})
    stages.append({"stage": "dpo", "run_dir": "runs/tiny/dpo", "status": "pending", "fingerprint": "f"})
    pipeline = {"name": "tiny", "command": "python scripts/pipeline.py --config configs/pipeline/tiny.yaml", "config": "x.yaml",
                "device": "cpu (2 threads)", "torch": "2.x", "started": "2026-11-23T08:00:00", "finished": "2026-11-23T08:12:00",
                "report_prompts": ["Say hi 2 times.", "What is Python?"], "stages": stages}
    (run / "pipeline.json").write_text(json.dumps(pipeline))
    answers = {"prompts": pipeline["report_prompts"], "max_new_tokens": 32, "models": {
        "base": {"stage": "pretrain", "checkpoint": "step_0000020", "replies": [{"text": "The the the", "finished": False}] * 2},
        "SFT": {"stage": "sft", "checkpoint": "step_0000020", "replies": [{"text": "hi hi", "finished": True}, {"text": "a language", "finished": True}]},
        "PPO": {"stage": "ppo", "checkpoint": "step_0000020", "replies": [{"text": "hi hi", "finished": True}, {"text": "Python", "finished": True}]},
    }}
    (run / "answers.json").write_text(json.dumps(answers))
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = fake_run(tmp_path_factory.mktemp("report"))
    md_path = build_report(run, answers=False)
    return run, md_path.read_text(), (run / "report.html").read_text()


def test_writes_markdown_with_existing_pngs(report):
    run, md, _ = report
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert {"plots/pretrain.png", "plots/sft.png", "plots/ppo.png", "plots/headline.png"} <= set(images)
    for image in images:
        assert (run / image).read_bytes().startswith(PNG_SIGNATURE)
    assert "python scripts/pipeline.py --config configs/pipeline/tiny.yaml" in md
    assert "12m 00s" in md  # started -> finished


def test_html_is_self_contained(report):
    _, md, page = report
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(re.findall(r"!\[", md))
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    assert not re.search(r"href=|https?://|<link|url\(|<script", page, re.IGNORECASE)


def test_headline_orders_base_sft_ppo(report):
    _, md, page = report
    assert "base 0.0% < SFT 55.5% < PPO 61.0%" in md
    assert "base 0.0% &lt; SFT 55.5% &lt; PPO 61.0%" in page


def test_headline_flags_a_stage_that_is_not_better(tmp_path):
    md = build_report(fake_run(tmp_path, ppo_exact=0.5), answers=False).read_text()
    assert "SFT 55.5% > PPO 50.0%" in md
    assert "PPO is NOT better than SFT" in md


def test_headline_compares_ppo_and_dpo_each_with_sft(tmp_path):
    def stage(name: str, before: float, after: float) -> Stage:
        return Stage(name, tmp_path, {}, evals=[{"step": 0, "exact_match": before}], final={"metrics": {"exact_match": after}})

    blocks = headline(tmp_path, {"sft": stage("sft", 0.0, 0.5), "ppo": stage("ppo", 0.5, 0.6), "dpo": stage("dpo", 0.5, 0.4)})
    md = to_markdown(blocks)
    assert "base 0.0% < SFT 50.0% < PPO 60.0%" in md and "SFT 50.0% > DPO 40.0%" in md
    assert "DPO is NOT better than SFT" in md and "PPO is better than SFT" in md


def test_answers_from_unloadable_checkpoints_warn_and_the_report_still_builds(tmp_path):
    run = fake_run(tmp_path)  # its checkpoint folders hold only meta.json: no model can be loaded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        md = build_report(run, answers=True).read_text()
    assert any("report: no base answers" in str(w.message) for w in caught)
    assert "No answers" in md
    assert json.loads((run / "answers.json").read_text())["models"] == {}


def test_summary_shows_unfinished_and_pending_stages(report):
    _, md, _ = report
    table = md.split("## Summary")[1].split("##")[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "not finished (running)" in rows["reward"]
    assert "not run (pending)" in rows["dpo"]
    assert "val_bpb: 3 → 2" in rows["pretrain"]
    assert "exact_match: 0.0% → 55.5%" in rows["sft"]
    assert "done (max_steps)" in rows["ppo"]


def test_by_kind_metrics_and_cached_answers(report):
    _, md, _ = report
    assert "| repeat | 0.0% | 81.0% |" in md
    assert "| Say hi 2 times. | The the the (did not stop) | hi hi | hi hi |" in md


def test_html_escapes_sample_text(report):
    _, md, page = report
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in page
    assert "Another &lt;sample&gt; &amp; text" in page
    assert "a\\|b" in md  # a pipe inside a cell does not split the markdown table


def test_markdown_table_escapes_but_keeps_intraword_underscores():
    md = to_markdown([Table(["metric"], [["val_loss"], ["a|b <i>"], ["_x_"]])])
    assert "| val_loss |" in md and "| a\\|b \\<i\\> |" in md and "| \\_x\\_ |" in md


def test_missing_run_dir_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such run folder"):
        build_report(tmp_path / "nope", answers=False)


@pytest.mark.slow
def test_script_rebuilds_and_reports_errors_in_one_line(tmp_path):
    run = fake_run(tmp_path)
    ok = subprocess.run([PYTHON, "scripts/report.py", str(run), "--no-answers"], cwd=REPO, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert (run / "report.md").is_file() and (run / "report.html").is_file()
    bad = subprocess.run([PYTHON, "scripts/report.py", str(tmp_path / "missing")], cwd=REPO, capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
