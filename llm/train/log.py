"""Metrics: one JSON line per log step in <run>/metrics.jsonl, per-item evaluation verdicts in
<run>/eval_items.json, and a tqdm progress bar."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tqdm import tqdm

from llm.run_files import read_json, read_jsonl, write_json


class MetricsLog:
    """Appends JSON lines; on resume, first drops the lines logged after the checkpoint's step."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            kept = [line for line in read_jsonl(path) if line.get("step", 0) <= resume_step]
            path.write_text("".join(json.dumps(line) + "\n" for line in kept))

    def write(self, record: dict) -> None:
        clean = {k: finite_or_none(v) for k, v in record.items()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(clean) + "\n")


class EvalItemsLog:
    """<run>/eval_items.json: the verdict on each held-out item at step 0, at the latest evaluation and at the
    best checkpoint's, so that a report can pair two models item by item (llm/eval/stats.py).

    {"step0": {"step": 0, "items": {item: correct}, "preferred": {item: best-possible}}, "latest": {"step", "items",
     "preferred"}, "best": {"step", "checkpoint", "items", "preferred"}}; "latest" at the end of a run is the
    evaluation final.json holds.
    On resume, entries from evaluations after the checkpoint's step are dropped: the run redoes them.
    """

    def __init__(self, path: Path, resume_step: int | None, best_checkpoint: str | None):
        self.path = path
        old = (read_json(path) or {}) if resume_step is not None else {}
        self.record = {name: entry for name, entry in old.items() if isinstance(entry, dict) and entry.get("step", 0) <= resume_step}
        if "best" in self.record and self.record["best"].get("checkpoint") != best_checkpoint:
            del self.record["best"]  # not the best checkpoint of the state resumed

    def write(self, step: int, verdicts: dict[str, dict[str, bool]], best_checkpoint: str | None) -> None:
        """Record one evaluation's verdicts by measure ("items": correct, "preferred": best-possible to the
        rater); `best_checkpoint` names the checkpoint it was saved as best, if it was."""
        entry = {"step": step, **verdicts}
        self.record["latest"] = entry
        if step == 0:
            self.record["step0"] = entry
        if best_checkpoint:
            self.record["best"] = {"step": step, "checkpoint": best_checkpoint, **verdicts}
        write_json(self.path, self.record)


def finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Progress:
    """A tqdm bar over optimizer steps: loss, lr, tokens/s in the postfix, ETA from tqdm."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool, desc: str):
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc=desc,
            disable=not enabled,
            dynamic_ncols=True,
            file=sys.stderr,
            mininterval=0.5,
        )

    def update(self, steps: int, loss: float, lr: float, tokens_per_s: float) -> None:
        self.bar.set_postfix_str(f"loss {loss:.4f} lr {lr:.2e} {tokens_per_s:,.0f} tok/s", refresh=False)
        self.bar.update(steps)

    def write(self, text: str) -> None:
        if self.bar.disable:
            print(text, flush=True)
        else:
            self.bar.write(text, file=sys.stdout)

    def close(self) -> None:
        self.bar.close()
