"""The report's figures: one PNG per stage (training loss and evaluation curves) and the headline bars.

Headless: the Agg backend is chosen before pyplot is imported, so this works without a display.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (pyplot fixes its backend on import: use("Agg") first)

from llm import stage_table  # noqa: E402
from llm.run_files import replaced  # noqa: E402
from llm.stage_table import Panel  # noqa: E402

LOSS_PANEL = Panel("training loss", "train", ("loss",))  # drawn raw and smoothed, every stage; the rest are the table's
COLUMNS = 3
PANEL_INCHES = (4.2, 3.0)
DPI = 90  # small files: the HTML embeds every PNG


def series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key`, skipping lines where it is missing, null or non-finite."""
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(record["step"])
            values.append(float(value))
    return steps, values


def smooth(values: list[float]) -> list[float]:
    """Debiased exponential moving average (as TensorBoard draws it): early points are not pulled to 0.

    The weight shrinks for short series, so a curve of a handful of points is not flattened to its start.
    """
    weight = min(0.9, max(0.0, 1 - 5 / max(len(values), 1)))
    out, average = [], 0.0
    for n, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**n))
    return out


def draw_loss(ax, train: list[dict]) -> bool:
    steps, losses = series(train, "loss")
    if not steps:
        return False
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=1, label="raw")
    ax.plot(steps, smooth(losses), color="tab:blue", linewidth=2, label="smoothed")
    ax.set_title(LOSS_PANEL[0])
    return True


def draw_panel(ax, title: str, records: list[dict], keys: tuple[str, ...]) -> bool:
    drawn = False
    for key in keys:
        steps, values = series(records, key)
        if steps:
            ax.plot(steps, values, marker="o", markersize=3, label=key)
            drawn = True
    ax.set_title(title)
    return drawn


def stage_figure(stage: str, train: list[dict], evals: list[dict], path: Path) -> bool:
    """Write `path` (PNG) with the training loss and the stage's evaluation panels; False if nothing to draw."""
    wanted = [LOSS_PANEL, *(stage_table.spec(stage).panels if stage in stage_table.BY_NAME else ())]
    drawable = [p for p in wanted if any(series(train if p[1] == "train" else evals, key)[0] for key in p[2])]
    if not drawable:
        return False
    rows = math.ceil(len(drawable) / COLUMNS)
    cols = min(len(drawable), COLUMNS)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows), squeeze=False)
    for ax, (title, source, keys) in zip(axes.flat, drawable):
        if (title, source, keys) == LOSS_PANEL:
            draw_loss(ax, train)
        else:
            draw_panel(ax, title, train if source == "train" else evals, keys)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(drawable):]:
        ax.axis("off")
    fig.suptitle(stage)
    save(fig, path)
    return True


def headline_figure(points: list[tuple[str, float]], path: Path) -> None:
    """Bars of true exact-match accuracy, model by model (base, SFT, PPO, DPO)."""
    fig, ax = plt.subplots(figsize=(5, 3))
    names, values = [p[0] for p in points], [100 * p[1] for p in points]
    bars = ax.bar(names, values, color=["tab:gray", "tab:blue", "tab:green", "tab:orange"][: len(points)])
    ax.bar_label(bars, labels=[f"{v:.1f}%" for v in values], fontsize=8)
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(0, max(100.0, *values) * 1.08)
    ax.set_title("held-out built-in tasks, greedy")
    save(fig, path)


def save(fig, path: Path) -> None:
    fig.tight_layout()
    with replaced(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
