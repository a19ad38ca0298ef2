import importlib.util
import json
import signal
import sys
import types

import numpy as np
import pytest

from conftest_helpers import REPO, kill_and_resume, read_metrics
from llm.config import PretrainConfig, RunConfig, load_config, to_dict
from llm.errors import ConfigError
from llm.train.trackers import TensorBoard, Trackers, open_trackers, samples_markdown, scalars

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="tensorboard is not installed (the dev extra)")


def board(run_dir):
    """The run folder's event files as TensorBoard reads them (purge markers applied), every point kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def board_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = board(run_dir)
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def jsonl_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """What metrics.jsonl holds, by name and step, as TensorBoard keeps it (32-bit floats); a name's first line
    of a step wins."""
    out: dict[str, dict[int, float]] = {}
    for line in read_metrics(run_dir):
        for name, value in scalars(line).items():
            out.setdefault(name, {}).setdefault(line["step"], float(np.float32(value)))
    return {name: sorted(points.items()) for name, points in out.items()}


def test_scalars_are_a_lines_numbers_with_nested_figures_flattened():
    line = {"kind": "eval", "step": 7, "val_accuracy": 0.5, "rewards/chosen": -1, "skipped": True, "loss": None, "note": "x",
            "val_accuracy_by_kind": {"first_word": 1.0, "repeat": 0.25}, "grad_norm": float("nan")}
    assert scalars(line) == {"val_accuracy": 0.5, "rewards/chosen": -1.0, "skipped": 1.0,
                             "val_accuracy_by_kind/first_word": 1.0, "val_accuracy_by_kind/repeat": 0.25}


def test_samples_are_a_markdown_table_a_pipe_or_line_break_cannot_break():
    assert samples_markdown([{"prompt": "a|b", "reply": "x\ny"}, {"prompt": "c", "reply": "z", "finished": True}]) == (
        "| prompt | reply | finished |\n|---|---|---|\n| a\\|b | x ↵ y |  |\n| c | z | True |")
    assert samples_markdown(["The end"]) == "| sample |\n|---|\n| The end |"


class Recorder:
    def __init__(self):
        self.calls = []

    def scalars(self, step, values):
        self.calls.append((step, values))


def test_a_name_in_two_lines_of_one_step_is_logged_once_from_the_first():
    recorder = Recorder()
    trackers = Trackers([recorder])
    trackers.record({"kind": "train", "step": 10, "loss": 2.0, "tokens_seen": 80})
    trackers.record({"kind": "eval", "step": 10, "tokens_seen": 80, "val_loss": 2.5})
    trackers.record({"kind": "train", "step": 11, "loss": 1.9, "tokens_seen": 88})
    assert recorder.calls == [(10, {"loss": 2.0, "tokens_seen": 80.0}), (10, {"val_loss": 2.5}), (11, {"loss": 1.9, "tokens_seen": 88.0})]


@needs_tensorboard
def test_a_resume_replaces_what_was_logged_after_the_checkpoint_and_a_new_run_starts_clean(tmp_path):
    first = TensorBoard(tmp_path, None)
    first.scalars(0, {"x": 0.0})
    for step in range(1, 21):
        first.scalars(step, {"loss": float(step)})
    first.close()  # a process that got to step 20; its last checkpoint was step 10's
    resumed = TensorBoard(tmp_path, 10)
    for step in range(11, 16):
        resumed.scalars(step, {"loss": 100.0 + step})
    resumed.close()
    curves = board_scalars(tmp_path)
    assert curves["loss"] == [(s, float(s)) for s in range(1, 11)] + [(s, 100.0 + s) for s in range(11, 16)]
    assert curves["x"] == [(0, 0.0)]
    TensorBoard(tmp_path, None).close()  # a new run in the same folder
    assert board_scalars(tmp_path) == {}


def test_tensorboard_missing_is_one_line_when_asked_for_and_skipped_on_auto(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails, as where it is not installed
    said = []
    cfg = load_config(RunConfig, None, [f"out_dir={tmp_path}"])
    assert open_trackers(cfg, None, said.append).writers == []
    assert said == ["log.tensorboard=auto: tensorboard is not installed, so no event files (pip install tensorboard for them)"]
    cfg = load_config(RunConfig, None, [f"out_dir={tmp_path}", "log.tensorboard=true"])
    with pytest.raises(ConfigError) as err:
        open_trackers(cfg, None, said.append)
    assert str(err.value) == "log.tensorboard=true but tensorboard is not installed: pip install tensorboard (or set log.tensorboard=false)"


def test_wandb_asked_for_and_missing_fails_before_any_data_loads(tmp_path, monkeypatch):
    from llm.stages.launch import run_stage

    monkeypatch.setitem(sys.modules, "wandb", None)
    # were the check made after the data, the missing corpus would be the error
    cfg = load_config(PretrainConfig, None, [f"out_dir={tmp_path}", "log.wandb=true", f"data.path={tmp_path / 'no-corpus.txt'}"])
    with pytest.raises(ConfigError, match=r"^log.wandb=true but wandb is not installed: pip install wandb \(or set log.wandb=false\)$"):
        run_stage("pretrain", cfg)


def fake_wandb() -> types.ModuleType:
    """A stand-in `wandb` module that records what a run was given."""
    module = types.ModuleType("wandb")
    module.runs = []

    class Run:
        def __init__(self, **kwargs):
            self.init, self.logged, self.finished = kwargs, [], False
            module.runs.append(self)

        def log(self, values, step):
            self.logged.append((step, dict(values)))

        def finish(self):
            self.finished = True

    module.init = lambda **kwargs: Run(**kwargs)
    return module


def test_wandb_gets_the_config_and_the_figures_and_keeps_one_run_across_a_resume(tmp_path, monkeypatch):
    wandb = fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    cfg = load_config(RunConfig, None, [f"out_dir={tmp_path}", "name=w", "log.wandb=true", "log.tensorboard=false", "train.seed=3"])
    cfg.run_dir.mkdir()
    trackers = open_trackers(cfg, None, print)
    trackers.record({"kind": "eval", "step": 0, "val_accuracy_by_kind": {"repeat": 0.5}})
    trackers.samples(0, ["text"])
    trackers.close()
    open_trackers(cfg, 0, print).close()  # resumed from step 0's checkpoint
    open_trackers(cfg, None, print).close()  # started over
    first, resumed, new = wandb.runs
    assert first.init["config"] == to_dict(cfg) and first.init["config"]["train"]["seed"] == 3
    assert first.init["name"] == "w" and first.init["dir"] == str(cfg.run_dir) and first.init["resume"] == "allow"
    assert first.logged == [(0, {"val_accuracy_by_kind/repeat": 0.5})] and first.finished
    assert resumed.init["id"] == first.init["id"] != new.init["id"]


@pytest.mark.slow
@needs_tensorboard
def test_event_files_equal_metrics_jsonl_step_for_step_across_a_kill_and_resume(pretrain_args, tmp_path):
    from llm.stages.launch import run_stage

    longer = ["train.max_steps=120", "train.eval_every=40", "checkpoint.save_every=20", "train.early_stop_patience=0"]
    config = "configs/pretrain/tiny.yaml"
    straight = load_config(PretrainConfig, REPO / config, pretrain_args(*longer, name="straight"))
    run_stage("pretrain", straight)
    killed = tmp_path / "runs" / "killed"
    kill_and_resume("scripts/pretrain.py", config, pretrain_args(*longer, name="killed"), killed, signal.SIGKILL, 50, tmp_path)
    assert len(list(killed.glob("events.out.tfevents.*"))) == 2  # the killed process's file and the resumed one's
    for run_dir in (straight.run_dir, killed):
        lines = [(line["kind"], line["step"]) for line in read_metrics(run_dir)]
        assert len(lines) == len(set(lines))
        curves = board_scalars(run_dir)
        assert curves == jsonl_scalars(run_dir)  # every name, every step, in order: no duplicate, no gap
        assert {"loss", "lr", "tokens_per_s", "val_loss", "val_bpb"} <= curves.keys()
        assert [s for s, _ in curves["loss"]] == list(range(1, 121))
        texts = board(run_dir).Tensors("samples/text_summary")
        samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
        assert [t.step for t in texts] == [s["step"] for s in samples] == list(range(0, 121, 40))
        assert texts[-1].tensor_proto.string_val[0].decode() == samples_markdown(samples[-1]["samples"])
    assert board_scalars(killed)["loss"] == board_scalars(straight.run_dir)["loss"]  # resume is exact, so are its curves
