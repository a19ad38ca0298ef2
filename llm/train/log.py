"""Metrics: one JSON line per log step in <run>/metrics.jsonl, and a tqdm progress bar."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tqdm import tqdm

from llm.run_files import read_jsonl


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
