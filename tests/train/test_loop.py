"""The shared loop, driven by a small regression stage so each behaviour is cheap to provoke."""

import json

import pytest
import torch
import torch.nn as nn

from llm.config import RunConfig, load_config
from llm.errors import LLMError, TrainingError
from llm.train import checkpoint as ckpt
from llm.train.loop import LossOutput, Stage, describe_stop, observe_progress, train
from llm.train.runtime import prepare_run_dir, setup_runtime

TRUE_W = torch.tensor([[2.0, -1.0, 0.5]])


class Batches:
    def __init__(self, rows: int):
        self.rows, self.drawn = rows, 0

    def next_batch(self):
        g = torch.Generator().manual_seed(self.drawn)
        self.drawn += 1
        x = torch.randn(self.rows, 3, generator=g)
        return {"x": x, "y": x @ TRUE_W.T}

    def state_dict(self):
        return {"drawn": self.drawn}

    def load_state_dict(self, state):
        self.drawn = state["drawn"]


class Regression(Stage):
    name = "regression"

    def __init__(self, rows=8, nan_steps=(), eval_values=None):
        torch.manual_seed(0)
        self.model = nn.Linear(3, 1, bias=False)
        self.source = Batches(rows)
        self.nan_steps, self.eval_values, self.evals = set(nan_steps), eval_values, 0

    def loss(self, model, batch):
        err = ((model(batch["x"]) - batch["y"]) ** 2).sum()
        if self.source.drawn in self.nan_steps:
            err = err * float("nan")
        return LossOutput(err, batch["x"].shape[0], tokens=batch["x"].shape[0])

    def evaluate(self, model):
        if self.eval_values is not None:
            value = self.eval_values[min(self.evals, len(self.eval_values) - 1)]
            self.evals += 1
            return {"val_loss": value}
        device = next(model.parameters()).device
        b = {k: v.to(device) for k, v in Batches(64).next_batch().items()}
        return {"val_loss": float(((model(b["x"]) - b["y"]) ** 2).mean())}


def config(tmp_path, *extra):
    base = [f"out_dir={tmp_path}", "name=reg", "optim.lr=0.05", "optim.warmup_steps=0", "optim.weight_decay=0", "optim.schedule=constant",
            "train.max_steps=60", "train.eval_every=20", "train.log_every=1", "train.progress=false", "checkpoint.save_every=20",
            "train.dtype=float32"]  # auto would pick bf16 on some CPUs: the learned figures below assume float32
    return load_config(RunConfig, None, base + list(extra))


def run(stage, cfg, resume=False):
    prepare_run_dir(cfg.run_dir, resume, fresh=False)
    return train(stage, cfg, setup_runtime(cfg), resume=resume)


def metric_lines(cfg, kind="train"):
    return [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(line)["kind"] == kind]


def test_loss_falls_and_weights_approach_truth(tmp_path):
    cfg = config(tmp_path)
    result = run(Regression(), cfg)
    losses = [line["loss"] for line in metric_lines(cfg)]
    assert result.reason == "max_steps" and result.step == 60
    assert losses[-1] < 0.01 * losses[0]  # 0.0037 seen: a convex, noiseless fit, so rounding cannot move it far
    assert (cfg.run_dir / "final.json").is_file() and json.loads((cfg.run_dir / "best.json").read_text())["checkpoint"] == "step_0000060"


def test_accumulation_equals_one_big_batch(tmp_path):
    # the loop's arithmetic, not the device's: pinned to the CPU in fp32 so the two runs agree to rounding
    big = config(tmp_path / "a", "train.batch_size=8", "model.block_size=1", "train.max_steps=3", "train.device=cpu", "train.dtype=float32")
    small = config(tmp_path / "b", "train.batch_size=4", "model.block_size=1", "train.tokens_per_step=8", "train.max_steps=3",
                   "train.device=cpu", "train.dtype=float32")
    stage_big, stage_small = Regression(rows=8), Regression(rows=4)

    # two micro-batches of 4 rows hold the same rows as one batch of 8
    class Halves(Batches):
        def next_batch(self):
            whole = Batches(8)
            whole.drawn = self.drawn // 2
            b = whole.next_batch()
            part = slice(0, 4) if self.drawn % 2 == 0 else slice(4, 8)
            self.drawn += 1
            return {"x": b["x"][part], "y": b["y"][part]}

    stage_small.source = Halves(4)
    run(stage_big, big)
    run(stage_small, small)
    torch.testing.assert_close(stage_big.model.weight, stage_small.model.weight, rtol=1e-6, atol=1e-7)


def test_nonfinite_steps_are_skipped_then_abort(tmp_path):
    cfg = config(tmp_path, "train.max_steps=10", "train.max_nonfinite=5")
    result = run(Regression(nan_steps={3, 4}), cfg)
    lines = metric_lines(cfg)
    assert [line["skipped"] for line in lines].count(True) == 2 and result.step == 10
    assert all(torch.isfinite(p).all() for p in ckpt.read_weights(cfg.run_dir / "checkpoints/step_0000010/model.safetensors").values())
    cfg = config(tmp_path / "abort", "train.max_steps=30", "train.max_nonfinite=2")
    with pytest.raises(TrainingError, match=r"3 non-finite steps \(train.max_nonfinite=2\).*step_0000020"):
        run(Regression(nan_steps=set(range(22, 40))), cfg)


def test_early_stopping_keeps_the_best_checkpoint(tmp_path):
    cfg = config(tmp_path, "train.max_steps=100", "train.eval_every=10", "train.early_stop_patience=2",
                 "checkpoint.save_every=0", "checkpoint.keep_last=1")
    result = run(Regression(eval_values=[5.0, 3.0, 2.0, 2.5, 2.4, 1.0]), cfg)
    assert result.reason == "early_stop" and result.step == 40
    best = json.loads((cfg.run_dir / "best.json").read_text())
    assert best == {"checkpoint": "step_0000020", "metric": "val_loss", "value": 2.0}
    assert [p.name for p in ckpt.step_dirs(cfg.run_dir / "checkpoints")] == ["step_0000020", "step_0000040"]


def test_max_tokens_stops(tmp_path):
    cfg = config(tmp_path, "train.max_tokens=40")
    assert run(Regression(rows=8), cfg).reason == "max_tokens"
    assert json.loads((cfg.run_dir / "final.json").read_text())["step"] == 5


def test_existing_run_needs_resume_or_fresh(tmp_path):
    cfg = config(tmp_path, "train.max_steps=5")
    run(Regression(), cfg)
    with pytest.raises(LLMError, match="already holds checkpoints: pass --resume"):
        prepare_run_dir(cfg.run_dir, resume=False, fresh=False)


def test_resume_in_process_continues_identically(tmp_path):
    straight = config(tmp_path / "a", "train.max_steps=40")
    run(Regression(), straight)
    first = config(tmp_path / "b", "train.max_steps=20")
    run(Regression(), first)
    second = config(tmp_path / "b", "train.max_steps=40")
    run(Regression(), second, resume=True)
    a = [line["loss"] for line in metric_lines(straight)]
    b = [line["loss"] for line in metric_lines(second)]
    assert a == b


def test_resuming_a_finished_run_takes_no_step(tmp_path):
    cfg = config(tmp_path, "train.max_steps=20")
    run(Regression(), cfg)
    before = metric_lines(cfg)
    result = run(Regression(), cfg, resume=True)
    assert result.reason == "max_steps" and result.step == 20
    assert metric_lines(cfg) == before
    assert [p.name for p in ckpt.step_dirs(cfg.run_dir / "checkpoints")][-1] == "step_0000020"


def test_a_clock_ends_the_run_and_says_so(tmp_path, capsys):
    cfg = config(tmp_path, "train.max_time_s=1e-9")
    result = run(Regression(), cfg)
    assert result.reason == "max_time" and result.step == 1 and result.cut_short
    final = json.loads((cfg.run_dir / "final.json").read_text())
    assert final["ending"] == "stopped by train.max_time_s at step 1 of 60: cut short, not the configured work"
    assert final["cut_short"] is True and final["total_steps"] == 60
    assert final["precision"] == {"dtype": "float32", "reason": "train.dtype=float32"}
    meta = json.loads((cfg.run_dir / "checkpoints/step_0000001/meta.json").read_text())
    assert meta["precision"]["dtype"] == "float32"


def test_endings_of_the_configured_work_are_not_cut_short(tmp_path):
    result = run(Regression(), config(tmp_path, "train.max_steps=5"))
    assert result.ending == "done: max_steps at step 5" and not result.cut_short
    assert describe_stop("early_stop", 40, 100).startswith("stopped early (train.early_stop_patience")
    assert describe_stop("interrupted:SIGTERM", 7, 100) == "stopped by SIGTERM at step 7 of 100"
    assert describe_stop("epochs", 30, 100) == "done: epochs at step 30 of 100"


def test_observers_hear_every_logged_step(tmp_path):
    heard = []
    with observe_progress(lambda *args: heard.append(args)):
        run(Regression(), config(tmp_path, "train.max_steps=4"))
    assert [(stage, step, total) for stage, step, total, _ in heard] == [("regression", s, 4) for s in (1, 2, 3, 4)]
    assert all(seconds > 0 for *_, seconds in heard)
