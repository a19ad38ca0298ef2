"""Run the stages in order, each from the previous one's best checkpoint, without redoing finished work.

Each stage's fingerprint is a digest of its resolved config and of the fingerprints of the stages it
starts from. A stage whose fingerprint matches and that finished is skipped; one that matches but
stopped part way resumes from its newest checkpoint; one whose fingerprint changed (or that
`--from` names, and every stage after it) starts over. Killing the pipeline at any moment and running
the same command again therefore finishes the job.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from llm import stage_table
from llm.config import PipelineConfig, dump_yaml, load_config, load_stage_config
from llm.errors import ConfigError, LLMError
from llm.run_files import read_json, write_json


@dataclass
class PlannedStage:
    stage: str
    config: object
    run_dir: Path
    fingerprint: str
    upstream: list[str]
    reference_s: float = 0.0  # the stage's time on the reference machine


class StageFailed(LLMError):
    """A stage ended on an error; the pipeline has written what it could (pipeline.json, the report)."""


def plan(cfg: PipelineConfig) -> list[PlannedStage]:
    """Every stage's resolved config and fingerprint, in run order."""
    base = Path(cfg.out_dir) / cfg.name
    planned: dict[str, PlannedStage] = {}
    for stage in [s for s in stage_table.NAMES if s in cfg.stages]:
        ref = getattr(cfg, stage)
        wiring = [f"name={stage}", f"out_dir={base}"]
        upstream = []
        for key, source in stage_table.spec(stage).inputs:
            if source in planned:
                wiring.append(f"{key}={planned[source].run_dir}")
                upstream.append(planned[source].fingerprint)
        config = load_stage_config(stage, ref.config, [*ref.overrides, *wiring])
        digest = hashlib.sha256("\n".join([stage, dump_yaml(config), *upstream]).encode()).hexdigest()[:16]
        planned[stage] = PlannedStage(stage, config, base / stage, digest, upstream, ref.reference_s)
    return list(planned.values())


def stage_state(step: PlannedStage) -> str:
    """done (finished with this fingerprint), partial (started with it), or stale (absent or changed)."""
    marker = read_json(step.run_dir / "pipeline-stage.json") or {}
    if marker.get("fingerprint") != step.fingerprint:
        return "stale"
    if (step.run_dir / "final.json").is_file() and marker.get("status") == "done":
        return "done"
    return "partial"


class PipelineRun:
    def __init__(self, cfg: PipelineConfig, config_path: str | None, command: str):
        self.cfg, self.command = cfg, command
        self.base = Path(cfg.out_dir) / cfg.name
        self.steps = plan(cfg)
        fingerprints = {s.stage: s.fingerprint for s in self.steps}
        # what an earlier run of this pipeline recorded about stages that are still the same
        self.previous = {e["stage"]: e for e in (read_json(self.base / "pipeline.json") or {}).get("stages", [])
                         if fingerprints.get(e.get("stage")) == e.get("fingerprint")}
        self.record = {
            "name": cfg.name, "command": command, "config": config_path, "device": device_text(),
            "torch": torch.__version__, "started": now(), "finished": None, "report_prompts": cfg.report_prompts,
            "stages": [{"stage": s.stage, "run_dir": str(s.run_dir), "status": "pending", "fingerprint": s.fingerprint}
                       for s in self.steps],
        }

    def run(self, start_from: str | None = None) -> str:
        """Run every stage; returns the reason the last one stopped ("done" when all finished)."""
        if start_from is not None and start_from not in [s.stage for s in self.steps]:
            raise ConfigError(f"--from {start_from}: not one of this pipeline's stages ({', '.join(s.stage for s in self.steps)})")
        forced = False
        for index, step in enumerate(self.steps):
            forced = forced or step.stage == start_from
            state = "stale" if forced else stage_state(step)
            if state == "done":
                print(f"[pipeline] {step.stage}: up to date in {step.run_dir}, skipped", flush=True)
                earlier = {k: v for k, v in self.previous.get(step.stage, {}).items() if k in ("elapsed_s", "started", "finished")}
                self.update(index, status="done", **earlier)
                continue
            reason = self.run_stage(index, step, resume=state == "partial")
            if reason.startswith("interrupted"):
                return reason
        self.record["finished"] = now()
        self.save()
        return "done"

    def run_stage(self, index: int, step: PlannedStage, resume: bool) -> str:
        print(f"[pipeline] {step.stage}: {'resuming' if resume else 'starting'} in {step.run_dir}", flush=True)
        if not resume:
            from llm.train.runtime import prepare_run_dir

            prepare_run_dir(step.run_dir, resume=False, fresh=True)
        write_json(step.run_dir / "pipeline-stage.json", {"fingerprint": step.fingerprint, "status": "running"})
        spent_before = float(self.previous.get(step.stage, {}).get("elapsed_s") or 0.0) if resume else 0.0
        self.update(index, status="running", started=now(), elapsed_s=spent_before)
        started = time.perf_counter()
        from llm.stages.launch import run_stage
        from llm.train.loop import observe_progress

        try:
            with observe_progress(TimeEstimate(self.steps[index:])):
                result = run_stage(step.stage, step.config, resume=resume, fresh=False)
        except LLMError as exc:
            write_json(step.run_dir / "pipeline-stage.json", {"fingerprint": step.fingerprint, "status": "failed"})
            self.update(index, status="failed", error=str(exc), elapsed_s=spent_before + time.perf_counter() - started, finished=now())
            raise StageFailed(f"{step.stage}: {exc}") from None
        status = "interrupted" if result.interrupted else "done"
        write_json(step.run_dir / "pipeline-stage.json", {"fingerprint": step.fingerprint, "status": status})
        self.update(index, status=status, ending=result.ending, cut_short=result.cut_short,
                    elapsed_s=spent_before + time.perf_counter() - started, finished=now())
        if result.cut_short and not result.interrupted:
            print(f"[pipeline] warning: {step.stage} {result.ending}; the stages after it start from that model", flush=True)
        return result.reason

    def update(self, index: int, **fields) -> None:
        self.record["stages"][index].update(fields)
        self.previous[self.steps[index].stage] = self.record["stages"][index]
        self.save()

    def save(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        write_json(self.base / "pipeline.json", self.record)


def run_pipeline(config_path: str, overrides: list[str], start_from: str | None, command: str) -> str:
    cfg = load_config(PipelineConfig, config_path, overrides)
    pipeline = PipelineRun(cfg, config_path, command)
    try:
        reason = pipeline.run(start_from)
    except StageFailed:
        if cfg.report:  # the stages that finished still get their report, with the error in its headline
            write_report(pipeline.base)
        raise
    if reason == "done" and cfg.report:
        write_report(pipeline.base)
    return reason


def write_report(base: Path) -> None:
    from llm.report.build import build_report

    report = build_report(base)
    print(f"[pipeline] report: {report} and {report.with_suffix('.html')}", flush=True)


class TimeEstimate:
    """Once a stage has run a few steps: its time left, and the pipeline's, on this machine.

    The stage's own steps give its speed here; the later stages are scaled from their time on the
    reference machine (`reference_s` in the pipeline config) by how much slower or faster this stage
    runs than it did there. Evaluations are not modelled, so it is an estimate, printed once a stage.
    """

    def __init__(self, steps: list[PlannedStage]):
        self.current, self.later = steps[0], steps[1:]
        self.started = time.perf_counter()
        self.said = False

    def __call__(self, stage: str, step: int, total_steps: int, train_s: float) -> None:
        if self.said or step < max(10, total_steps // 50) or stage != self.current.stage:
            return
        self.said = True
        wall_s = time.perf_counter() - self.started
        stage_left = (total_steps - step) * train_s / step
        text = f"[pipeline] estimate on this machine: {stage} about {duration_text(stage_left)} more"
        reference = self.current.reference_s
        if reference > 0 and all(s.reference_s > 0 for s in self.later):
            speed = (wall_s + stage_left) / reference
            rest = stage_left + speed * sum(s.reference_s for s in self.later)
            text += f"; the whole pipeline about {duration_text(rest)} more ({speed:.1f}x the reference machine's time)"
        from tqdm import tqdm

        tqdm.write(text)


def duration_text(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def device_text() -> str:
    from llm.device import machine_line

    return machine_line()


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")
