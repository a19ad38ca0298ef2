"""Several runs side by side: chosen metrics on shared axes in one PNG, and each run's final and best value.

Read from the run folders alone (config.yaml and metrics.jsonl), so it works on runs of any age and on a
run still training. A metric is named as TensorBoard names it (llm/train/trackers.py): the name in
metrics.jsonl, a nested figure as `val_accuracy_by_kind/first_word`. Each run is labelled by the config
keys whose values differ across the runs (`train.seed=0`), its folder name where that is not enough.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from llm import stage_table
from llm.config import STAGE_SCHEMAS, to_dict
from llm.errors import LLMError
from llm.report import plots
from llm.run_files import read_json, read_jsonl
from llm.train.trackers import scalars

FALLBACK_METRICS = ("val_loss", "loss")
IDENTITY_KEYS = ("name", "out_dir")  # differ between any two runs: they say where a run is, not how it was trained
LOWER_IS_BETTER = ("loss", "ppl", "bpb", "kl", "nll", "grad_norm")  # a name holding one of these is best at its minimum
X_LABELS = {"step": "step", "time": "training time (s, evaluations excluded)"}
PANEL_INCHES = (5.0, 3.6)
SMOOTH_FROM = 50  # a panel with a curve of more points than this draws each raw and faint under its smoothed line


@dataclass
class Run:
    folder: Path
    stage: str | None
    config: dict  # dotted key -> value: config.yaml over the stage's defaults
    lines: list[dict]  # metrics.jsonl, nested figures flattened
    label: str = ""


def read_run(folder: Path) -> Run:
    for name in ("config.yaml", "metrics.jsonl"):
        if not (folder / name).is_file():
            raise LLMError(f"{folder}: no {name} (not a run folder?)")
    config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    stage = (read_json(folder / stage_table.STAGE_FILE) or {}).get("stage") or stage_of(set(config))  # older run folders: by their keys
    # a key added to the schema after the run was saved reads as its default, as load_config would read it:
    # a run from before optim.name existed trained with what is now optim.name=adamw
    defaults = flatten(to_dict(STAGE_SCHEMAS[stage]())) if stage else {}
    lines = [{"kind": line.get("kind"), "step": line["step"], **scalars(line)}
             for line in read_jsonl(folder / "metrics.jsonl") if "step" in line]
    return Run(folder, stage, {**defaults, **flatten(config)}, lines)


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def stage_of(sections: set[str]) -> str | None:
    """The stage whose schema has every top-level key of a config, the narrowest such (SFT's keys are all DPO's too);
    of a schema's presets (ppo, grpo, rloo) the first, which a run folder without stage.json cannot tell apart."""
    fits = [(len(fields), order, stage) for order, (stage, schema) in enumerate(STAGE_SCHEMAS.items()) if stage != "pipeline"
            if sections <= (fields := set(schema.__dataclass_fields__))]
    return min(fits)[2] if fits else None


def differing_keys(runs: list[Run]) -> list[str]:
    keys = dict.fromkeys(key for run in runs for key in run.config if key not in IDENTITY_KEYS)
    return [key for key in keys if len({format_value(run, key) for run in runs}) > 1]


def format_value(run: Run, key: str) -> str:
    """A config value as a label shows it; `unset` where the run's config has no such key (an older run)."""
    if key not in run.config:
        return "unset"
    value = run.config[key]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def label_runs(runs: list[Run]) -> list[str]:
    """Each run's label: its values of the keys that differ; the folder name first where labels would clash."""
    keys = differing_keys(runs)
    labels = [" ".join(f"{key}={format_value(run, key)}" for key in keys) for run in runs]
    if len(set(labels)) < len(labels) or not keys:
        names = [run.folder.name for run in runs]
        names = names if len(set(names)) == len(names) else [str(run.folder) for run in runs]  # demo1/reward, demo2/reward
        labels = [f"{name} {label}".strip() for name, label in zip(names, labels)]
    for run, label in zip(runs, labels):
        run.label = label
    return labels


def points(run: Run, metric: str, x: str) -> tuple[list[float], list[float]]:
    """(x, value) of a metric, in step order, a step's first value; x is the step or the training seconds at it."""
    by_step: dict[int, float] = {}
    for line in run.lines:
        if metric in line:
            by_step.setdefault(line["step"], line[metric])
    steps = sorted(by_step)
    values = [by_step[s] for s in steps]
    if x == "step":
        return [float(s) for s in steps], values
    return list(seconds_at(run, steps)), values


def seconds_at(run: Run, steps: list[int]) -> np.ndarray:
    """Training seconds at each step: evaluation lines carry none, so interpolate the training lines' elapsed_s."""
    clock = sorted({line["step"]: line["elapsed_s"] for line in run.lines if "elapsed_s" in line}.items())
    known_steps = [0] + [s for s, _ in clock]
    known_seconds = [0.0] + [t for _, t in clock]
    return np.interp(steps, known_steps, known_seconds)


def lower_is_better(metric: str) -> bool:
    return any(part in metric for part in LOWER_IS_BETTER)


def final_and_best(run: Run, metric: str) -> tuple[tuple[int, float], tuple[int, float]] | None:
    """(step, value) of the last and of the best point; None when the run never logged the metric."""
    steps, values = points(run, metric, "step")
    if not steps:
        return None
    pick = min if lower_is_better(metric) else max
    best = pick(range(len(values)), key=lambda i: values[i])  # the earliest of equal bests
    return (int(steps[-1]), values[-1]), (int(steps[best]), values[best])


def check_metrics(runs: list[Run], metrics: list[str]) -> None:
    logged = sorted({key for run in runs for line in run.lines for key in line if key not in ("kind", "step")})
    for metric in metrics:
        if metric not in logged:
            close = difflib.get_close_matches(metric, logged, n=1)
            hint = (f" (did you mean '{close[0]}'?)" if close
                    else f"; they log {', '.join(logged[:12])}{', ...' if len(logged) > 12 else ''}")
            raise LLMError(f"--metrics: no run logs '{metric}'{hint}")


def default_metrics(runs: list[Run]) -> list[str]:
    # what a sweep of a stage is usually judged by (the table's compare): its held-out loss and the figure it moves
    return list(stage_table.spec(runs[0].stage).compare if runs[0].stage else FALLBACK_METRICS)


def table(runs: list[Run], metrics: list[str]) -> str:
    """Each run's final and best value of each metric, as aligned text columns."""
    header = ["run"] + [f"{metric} {which}" for metric in metrics
                        for which in ("final", "best (min)" if lower_is_better(metric) else "best (max)")]
    rows = [header]
    for run in runs:
        row = [run.label]
        for metric in metrics:
            found = final_and_best(run, metric)
            row += [f"{v:.4g} @{s}" for s, v in found] if found else ["-", "-"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def figure(runs: list[Run], metrics: list[str], x: str, path: Path) -> None:
    """One panel per metric, every run on it in its own colour, its label in the legend."""
    cols = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plots.plt.subplots(rows, cols, figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        curves = [points(run, metric, x) for run in runs]
        smoothed = max(len(values) for _, values in curves) > SMOOTH_FROM  # all of a panel's curves alike, a short run's too
        for i, (run, (xs, values)) in enumerate(zip(runs, curves)):
            draw(ax, xs, values, f"C{i % 10}", run.label, smoothed)
        ax.set_title(metric)
        ax.set_xlabel(X_LABELS[x])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    plots.save(fig, path)


def draw(ax, xs: list[float], values: list[float], color: str, label: str, smoothed: bool) -> None:
    if smoothed:
        ax.plot(xs, values, color=color, alpha=0.2, linewidth=1)
        ax.plot(xs, plots.smooth(values), color=color, linewidth=1.8, label=label)
    else:
        ax.plot(xs, values, color=color, marker="o", markersize=3, linewidth=1.5, label=label)


def compare(folders: list[Path], metrics: list[str] | None, x: str, out: Path) -> str:
    """Draw `out` and return the table; `metrics` None picks the first run's stage's defaults."""
    runs = [read_run(folder) for folder in folders]
    label_runs(runs)
    metrics = metrics or default_metrics(runs)
    check_metrics(runs, metrics)
    figure(runs, metrics, x, out)
    return table(runs, metrics)
