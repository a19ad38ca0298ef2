import json
import re
import subprocess

import pytest

from conftest_helpers import PYTHON, REPO
from llm.config import STAGE_SCHEMAS, RewardConfig, load_config, save_config
from llm.errors import LLMError
from llm.report import compare as cmp


def make_run(folder, overrides=(), evals=(), train=(), schema=RewardConfig):
    """A run folder as a stage leaves it: config.yaml and metrics.jsonl. `evals`/`train`: (step, {name: value})."""
    save_config(load_config(schema, None, [f"name={folder.name}", f"out_dir={folder.parent}", *overrides]), folder / "config.yaml")
    lines = [{"kind": "eval", "step": s, **v} for s, v in evals] + [{"kind": "train", "step": s, **v} for s, v in train]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in sorted(lines, key=lambda x: x["step"])))
    return folder


def test_runs_are_labelled_by_the_config_keys_that_differ(tmp_path):
    runs = [cmp.read_run(make_run(tmp_path / f"seed{n}", [f"train.seed={n}", "optim.lr=0.001"])) for n in range(3)]
    assert cmp.label_runs(runs) == ["train.seed=0", "train.seed=1", "train.seed=2"]
    two = [cmp.read_run(make_run(tmp_path / "a", ["train.seed=0", "data.builtin_kinds=[repeat]"])),
           cmp.read_run(make_run(tmp_path / "b", ["train.seed=1"]))]
    assert cmp.label_runs(two) == ['train.seed=0 data.builtin_kinds=["repeat"]',
                                   "train.seed=1 data.builtin_kinds=[]"]  # in the config's order
    older = make_run(tmp_path / "older", ["train.seed=5"])  # saved before the log section existed: it ran with its defaults
    (older / "config.yaml").write_text(re.sub(r"\nlog:\n(  .*\n)+", "\n", (older / "config.yaml").read_text()))
    assert "tensorboard" not in (older / "config.yaml").read_text()
    newer = make_run(tmp_path / "newer", ["train.seed=6", "log.wandb=true"])
    assert cmp.label_runs([cmp.read_run(older), cmp.read_run(newer)]) == ["train.seed=5 log.wandb=false", "train.seed=6 log.wandb=true"]
    same = [cmp.read_run(make_run(tmp_path / name)) for name in ("x", "y")]
    assert cmp.label_runs(same) == ["x", "y"]  # nothing differs but the name
    twins = [cmp.read_run(make_run(tmp_path / parent / "reward")) for parent in ("p", "q")]
    assert cmp.label_runs(twins) == [str(tmp_path / "p" / "reward"), str(tmp_path / "q" / "reward")]


@pytest.mark.parametrize("stage", ["pretrain", "sft", "reward", "ppo", "dpo"])
def test_a_runs_stage_is_told_by_its_configs_sections(tmp_path, stage):
    assert cmp.read_run(make_run(tmp_path / "run", schema=STAGE_SCHEMAS[stage])).stage == stage


def test_a_run_folder_that_records_its_stage_is_read_as_that_stage(tmp_path):
    # a GRPO run has PPO's settings: only stage.json tells them apart, and it picks the metrics compare plots
    folder = make_run(tmp_path / "run", schema=STAGE_SCHEMAS["grpo"])
    (folder / "stage.json").write_text('{"stage": "grpo"}')
    run = cmp.read_run(folder)
    assert run.stage == "grpo" and cmp.default_metrics([run]) == ["reward", "exact_match"]


def test_final_and_best_follow_the_metrics_direction_and_time_is_training_seconds(tmp_path):
    evals = [(0, {"val_loss": 1.0, "val_accuracy": 0.5, "tokens_seen": 0}), (20, {"val_loss": 0.5, "val_accuracy": 0.9, "tokens_seen": 40}),
             (30, {"val_loss": 0.7, "val_accuracy": 0.8, "val_accuracy_by_kind": {"repeat": 0.75}, "tokens_seen": 60})]
    train = [(10, {"loss": 2.0, "elapsed_s": 4.0, "tokens_seen": 20}), (20, {"loss": 1.0, "elapsed_s": 6.0, "tokens_seen": 40}),
             (30, {"loss": 1.5, "elapsed_s": 9.0, "tokens_seen": 99})]
    run = cmp.read_run(make_run(tmp_path / "r", evals=evals, train=train))
    assert cmp.final_and_best(run, "val_loss") == ((30, 0.7), (20, 0.5))
    assert cmp.final_and_best(run, "val_accuracy") == ((30, 0.8), (20, 0.9))
    assert cmp.final_and_best(run, "val_accuracy_by_kind/repeat") == ((30, 0.75), (30, 0.75))
    assert cmp.final_and_best(run, "rewards/chosen") is None
    assert cmp.points(run, "val_loss", "time") == ([0.0, 6.0, 9.0], [1.0, 0.5, 0.7])
    assert cmp.points(run, "tokens_seen", "step") == ([0.0, 10.0, 20.0, 30.0], [0.0, 20.0, 40.0, 60.0])  # a step's first line wins
    run.label = "r"
    assert cmp.table([run], ["val_loss", "val_accuracy"]).splitlines() == [
        "run  val_loss final  val_loss best (min)  val_accuracy final  val_accuracy best (max)",
        "r    0.7 @30         0.5 @20              0.8 @30             0.9 @20"]


def test_the_figure_has_a_panel_per_metric_and_a_line_per_run(tmp_path, monkeypatch):
    folders = [make_run(tmp_path / f"s{n}", [f"train.seed={n}"], evals=[(0, {"val_accuracy": 0.5}), (10, {"val_accuracy": 0.6 + n / 10})],
                        train=[(s, {"loss": 1.0 / s, "elapsed_s": s / 2}) for s in range(1, 11)]) for n in range(2)]
    drawn = {}
    monkeypatch.setattr(cmp.plots, "save", lambda fig, path: drawn.update(fig=fig, path=path))
    cmp.compare(folders, ["val_accuracy", "loss"], "time", tmp_path / "out.png")
    panels = drawn["fig"].axes
    assert [ax.get_title() for ax in panels] == ["val_accuracy", "loss"]
    assert [line.get_label() for line in panels[0].get_lines()] == ["train.seed=0", "train.seed=1"]
    assert list(panels[0].get_lines()[1].get_xdata()) == [0.0, 5.0] and list(panels[0].get_lines()[1].get_ydata()) == [0.5, 0.7]
    assert panels[1].get_xlabel() == cmp.X_LABELS["time"]


def test_compare_script_writes_the_png_and_the_table_and_a_bad_name_is_one_line(tmp_path):
    folders = [str(make_run(tmp_path / f"s{n}", [f"train.seed={n}"], evals=[(0, {"val_loss": 0.7, "val_accuracy": 0.5 + n / 10})]))
               for n in range(2)]
    out = tmp_path / "chart.png"
    done = subprocess.run([PYTHON, "scripts/compare.py", *folders, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert done.stdout.splitlines()[1:3] == ["train.seed=0  0.7 @0          0.7 @0               0.5 @0              0.5 @0",
                                             "train.seed=1  0.7 @0          0.7 @0               0.6 @0              0.6 @0"]
    bad = subprocess.run([PYTHON, "scripts/compare.py", *folders, "--metrics", "val_acc"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr == "error: --metrics: no run logs 'val_acc' (did you mean 'val_accuracy'?)\n"
    with pytest.raises(LLMError, match=f"^{tmp_path}: no config.yaml \\(not a run folder\\?\\)$"):
        cmp.read_run(tmp_path)


def test_a_panel_smooths_every_curve_alike_when_one_is_long(tmp_path, monkeypatch):
    folders = [make_run(tmp_path / f"s{n}", [f"train.seed={n}"], train=[(s, {"loss": float(s % 3)}) for s in range(1, steps + 1)])
               for n, steps in enumerate((cmp.SMOOTH_FROM + 10, cmp.SMOOTH_FROM - 10))]  # the second stopped early
    drawn = {}
    monkeypatch.setattr(cmp.plots, "save", lambda fig, path: drawn.update(fig=fig))
    cmp.compare(folders, ["loss"], "step", tmp_path / "out.png")
    lines = drawn["fig"].axes[0].get_lines()
    assert [line.get_label() for line in lines if not line.get_label().startswith("_")] == ["train.seed=0", "train.seed=1"]
    assert len(lines) == 4  # each run raw (unlabelled) and smoothed
    short_raw, short_smoothed = lines[2:]
    assert list(short_raw.get_ydata()) == [float(s % 3) for s in range(1, cmp.SMOOTH_FROM - 9)]
    assert list(short_smoothed.get_ydata()) == cmp.plots.smooth(list(short_raw.get_ydata()))
