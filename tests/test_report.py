"""The run report, built from a fabricated pipeline folder (no training, no model: answers come from answers.json)."""

import base64
import html
import json
import re
import subprocess
import warnings
from pathlib import Path

import pytest

from conftest_helpers import PYTHON, REPO
from llm.errors import DataError
from llm.report.build import Stage, build_report, headline, paired
from llm.report.render import Table, to_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODEL_CONFIG = {"vocab_size": 512, "block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 64}
NASTY = '<script>alert("x")</script> & more'
PROMPTS = [f"Say word{i} 2 times." for i in range(200)]
SFT_RIGHT = set(range(111))  # SFT answers the first 111 of the 200 held-out prompts: 55.5%


def verdicts(right: set[int]) -> dict[str, bool]:
    return {prompt: i in right for i, prompt in enumerate(PROMPTS)}


def write_items(folder: Path, step0: set[int], latest: set[int], latest_step: int = 20) -> None:
    """eval_items.json as the loop leaves it: step 0's verdicts and the final (latest) evaluation's, prompt by prompt."""
    record = {"step0": {"step": 0, "items": verdicts(step0)}, "latest": {"step": latest_step, "items": verdicts(latest)},
              "best": {"step": latest_step, "checkpoint": "step_0000020", "items": verdicts(latest)}}
    (folder / "eval_items.json").write_text(json.dumps(record))


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def add_evals(folder: Path, figures, measure: str, step0: dict, latest: dict) -> None:
    """Give a fake stage's evaluations more figures (`figures(late)`: step 0's or a later one's), the final one in
    final.json too, and per-prompt verdicts on `measure` for step 0 and the latest evaluation."""
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        if line["kind"] == "eval":
            line.update(figures(line["step"] > 0))
    write_jsonl(folder / "metrics.jsonl", lines)
    final = json.loads((folder / "final.json").read_text())
    final["metrics"] = lines[-1]
    (folder / "final.json").write_text(json.dumps(final))
    items = json.loads((folder / "eval_items.json").read_text())
    items["step0"][measure], items["latest"][measure] = step0, latest
    (folder / "eval_items.json").write_text(json.dumps(items))


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


def fake_run(root: Path, ppo_fixed: int = 15, ppo_broken: int = 4, items: bool = True) -> Path:
    """pretrain -> sft -> reward (stopped part way) -> ppo, dpo pending; base 0% < SFT 55.5% (111 of 200 prompts,
    fixed 111, broken 0), PPO fixes `ppo_fixed` of SFT's wrong prompts and breaks `ppo_broken` of its right ones
    (by default 61.0%, p = 0.0192). Without `items`, an older run folder: no eval_items.json."""
    ppo_right = set(range(len(SFT_RIGHT) - ppo_broken)) | set(range(len(SFT_RIGHT), len(SFT_RIGHT) + ppo_fixed))
    ppo_exact = len(ppo_right) / len(PROMPTS)
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
    if items:
        write_items(run / "sft", set(), SFT_RIGHT)
        write_items(run / "ppo", SFT_RIGHT, ppo_right)  # PPO's step 0 is the SFT model it started from
    stages = [{"stage": s, "run_dir": f"runs/tiny/{s}", "status": "done", "fingerprint": "f", "elapsed_s": 3.0}
              for s in ("pretrain", "sft", "ppo")]
    stages.insert(2, {"stage": "reward", "run_dir": "runs/tiny/reward", "status": "running", "fingerprint": "f"})
    stages.append({"stage": "dpo", "run_dir": "runs/tiny/dpo", "status": "pending", "fingerprint": "f"})
    pipeline = {"name": "tiny", "command": "python scripts/pipeline.py --config configs/pipeline/tiny.yaml", "config": "x.yaml",
                "device": "cpu (2 threads)", "torch": "2.x", "started": "2026-11-23T08:00:00", "finished": "2026-11-23T08:12:00",
                "report_prompts": ["Say hi 2 times.", "What is Python?"], "stages": stages}
    (run / "pipeline.json").write_text(json.dumps(pipeline))
    answers = {"prompts": pipeline["report_prompts"], "max_new_tokens": 32, "models": {
        "base": {"stage": "pretrain", "checkpoint": "step_0000020", "replies": [{"text": "The the the", "finished": False}] * 2},
        "SFT": {"stage": "sft", "checkpoint": "step_0000020", "replies": [{"text": "hi hi", "finished": True},
                                                                          {"text": "a language", "finished": True}]},
        "PPO": {"stage": "ppo", "checkpoint": "step_0000020", "replies": [{"text": "hi hi", "finished": True},
                                                                          {"text": "Python", "finished": True}]},
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


def test_headline_gives_fixed_broken_and_p_for_each_step(report):
    _, md, page = report
    base_to_sft = "SFT is better than base (+55.5 points; fixed 111, broken 0 of 200 paired prompts, p < 0.001)."
    sft_to_ppo = "PPO is better than SFT (+5.5 points; fixed 15, broken 4 of 200 paired prompts, p = 0.0192)."
    assert base_to_sft in md and sft_to_ppo in md
    assert html.escape(base_to_sft, quote=False) in page and sft_to_ppo in page  # report.html comes from the same blocks
    assert "not significant" not in md.split("## True accuracy")[1].split("Exact match of greedy")[0]
    table = md.split("## Summary")[1].split("##")[0]
    assert "exact_match: 0.0% → 55.5% (fixed 111, broken 0 of 200 paired prompts, p \\< 0.001)" in table
    assert "`exact_match` step 0 → final, prompt by prompt: fixed 15, broken 4 of 200 paired prompts, p = 0.0192" in md


def test_headline_flags_a_stage_that_is_worse(tmp_path):
    # 2 fixed, 13 broken: 2 * (C(15,0) + C(15,1) + C(15,2)) / 2^15 = 242 / 32768
    md = build_report(fake_run(tmp_path, ppo_fixed=2, ppo_broken=13), answers=False).read_text()
    assert "**base 0.0% < SFT 55.5% > PPO 50.0%**" in md
    assert "**PPO is worse than SFT** (-5.5 points; fixed 2, broken 13 of 200 paired prompts, p = 0.00739)." in md


def test_headline_labels_a_difference_that_is_not_significant(tmp_path):
    # 5 fixed, 2 broken: 2 * (C(7,0) + C(7,1) + C(7,2)) / 2^7 = 58 / 128 = 0.453; PPO's 1.5 points could be chance
    run = fake_run(tmp_path, ppo_fixed=5, ppo_broken=2)
    md = build_report(run, answers=False).read_text()
    page = (run / "report.html").read_text()
    assert "**base 0.0% < SFT 55.5% < PPO 57.0% (not significant)**" in md
    verdict = ("PPO is not significantly different from SFT</strong> "
               "(+1.5 points; fixed 5, broken 2 of 200 paired prompts, p = 0.453: not significant).")
    assert verdict.replace("</strong>", "**") in md and verdict in page
    assert "PPO is better than SFT" not in md


def test_headline_without_per_prompt_results_says_significance_is_unknown(tmp_path):
    md = build_report(fake_run(tmp_path, items=False), answers=False).read_text()
    assert "**base 0.0% < SFT 55.5% < PPO 61.0%**" in md  # the figures as before
    assert "PPO is better than SFT (+5.5 points; significance unknown: no per-prompt results (`eval_items.json`)" in md
    assert "paired prompts" not in md


def test_items_of_another_evaluation_than_the_figures_are_not_paired(tmp_path):
    run = fake_run(tmp_path)
    write_items(run / "ppo", SFT_RIGHT, set(), latest_step=10)  # final.json's evaluation is step 20's
    md = build_report(run, answers=False).read_text()
    assert "PPO is better than SFT (+5.5 points; significance unknown" in md
    assert "SFT is better than base (+55.5 points; fixed 111" in md


def judged(folder: Path, name: str, before: float, after: float, items: dict | None = None) -> Stage:
    """A stage with only what the headline reads: step 0's and the final exact match, and eval_items.json's record."""
    return Stage(name, folder, {}, evals=[{"step": 0, "exact_match": before}], final={"step": 20, "metrics": {"exact_match": after}},
                 items=items)


def test_headline_compares_ppo_and_dpo_each_with_sft(tmp_path):
    # DPO's own step 0 (its SFT start, 10 prompts) is paired: 5 right before, 4 after, fixed 0, broken 1
    dpo_items = {"step0": {"step": 0, "items": {str(i): i < 5 for i in range(10)}},
                 "latest": {"step": 20, "items": {str(i): i < 4 for i in range(10)}}}
    stages = {"sft": judged(tmp_path, "sft", 0.0, 0.5), "ppo": judged(tmp_path, "ppo", 0.5, 0.6),
              "dpo": judged(tmp_path, "dpo", 0.5, 0.4, dpo_items)}
    md = to_markdown(headline(tmp_path, stages))
    assert "base 0.0% < SFT 50.0% < PPO 60.0%" in md and "SFT 50.0% > DPO 40.0% (not significant)" in md
    assert ("**DPO is not significantly different from SFT** "
            "(-10.0 points; fixed 0, broken 1 of 10 paired prompts, p = 1: not significant).") in md
    assert "PPO is better than SFT (+10.0 points; significance unknown" in md
    assert paired(stages["dpo"])["broken"] == 1 and paired(stages["ppo"]) is None


def test_headline_shows_the_paired_accuracies_when_they_differ_from_the_figures(tmp_path):
    # PPO started from SFT's best checkpoint, which answered 3 of 4 prompts; the SFT figure is SFT's final evaluation
    ppo_items = {"step0": {"step": 0, "items": {"a": True, "b": True, "c": True, "d": False}},
                 "latest": {"step": 20, "items": {"a": True, "b": True, "c": True, "d": True}}}
    stages = {"sft": judged(tmp_path, "sft", 0.0, 0.5), "ppo": judged(tmp_path, "ppo", 0.75, 1.0, ppo_items)}
    md = to_markdown(headline(tmp_path, stages))
    assert "fixed 1, broken 0 of 4 paired prompts, p = 1: not significant; 75.0% → 100.0% on those prompts" in md


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


def test_preference_section_shows_the_rubric_styles_and_the_paired_best_possible_share(tmp_path):
    from llm.report.build import preference_section, read_run

    run = fake_run(tmp_path)
    add_evals(run / "ppo", lambda late: {"best_possible": 0.9 if late else 0.05, "new_words/exact_match": 0.02,
                                         "style": {"plain": 0.9 if late else 0.06, "filler": 0.1, "disclaimer": 0.0},
                                         "new_words/best_possible": 0.01},
              "preferred", {p: i < 10 for i, p in enumerate(PROMPTS)}, {p: i < 180 for i, p in enumerate(PROMPTS)})
    _, stages = read_run(run)
    text = to_markdown(preference_section(stages))
    assert "prefers plain" in text and "| PPO | 90.0% |" in text and "90% / 10% / 0%" in text
    assert "SFT → PPO, best-possible share: 5.0% → 90.0% (fixed 170, broken 0 of 200 paired prompts, p < 0.001)" in text


def test_the_headline_leads_with_the_unseen_axes_each_step_paired(tmp_path):
    from llm.report.build import generalisation, read_run

    run = fake_run(tmp_path)
    add_evals(run / "sft", lambda late: {"new_both/exact_match": 0.7 if late else 0.0, "new_words/exact_match": 0.8 if late else 0.0,
                                         "new_phrasings/exact_match": 0.75 if late else 0.0},
              "new_both", {p: False for p in PROMPTS}, {p: i < 140 for i, p in enumerate(PROMPTS)})
    _, stages = read_run(run)
    text = to_markdown(generalisation(stages))
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert header.index("new words, new phrasings") < header.index("new words |") < header.index("built-in held-out")
    assert "| SFT | 70.0% | 80.0% | 75.0% | 55.5% |" in text
    assert "base → SFT: new words, new phrasings: fixed 140, broken 0 of 200 paired prompts, p < 0.001" in text


def test_results_document_is_the_report_with_its_figures_beside_it(report, tmp_path):
    from llm.report.build import write_results

    run, md, _ = report
    out = write_results(run, tmp_path / "docs" / "results.md")
    text = out.read_text()
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert images and all(i.startswith("results/") for i in images)
    for image in images:
        assert (out.parent / image).read_bytes().startswith(PNG_SIGNATURE)
    assert f"by `llm report {run} --results {out}`" in text
    # the same figures as the run's own report: only the note and the figures' folder differ
    assert re.sub(r"\]\(results/", "](plots/", text).replace(text.splitlines()[2] + "\n\n", "") == md


def test_results_need_the_runs_cached_answers(tmp_path):
    from llm.errors import DataError
    from llm.report.build import write_results

    run = fake_run(tmp_path)
    (run / "answers.json").unlink()
    with pytest.raises(DataError, match="no answers.json"):
        write_results(run, tmp_path / "results.md")
