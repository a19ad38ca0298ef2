"""TensorBoard event files and an optional Weights & Biases run: the figures of metrics.jsonl and the
evaluation samples, for a person to watch a run live and lay several side by side
(python -m tensorboard.main --logdir runs).

The trackers get the lines metrics.jsonl gets and log each number under its name there (`loss`, `lr`,
`tokens_per_s`, `rewards/chosen`, `objective/kl`, ...) at the line's step; a nested figure is flattened
(`val_accuracy_by_kind/first_word`). A name in two lines of one step (`tokens_seen` is in both the
training and the evaluation line) is logged once, from the first.

Resume: metrics.jsonl drops the lines after the checkpoint's step, and so do the event files: each process
start writes a fresh event file that opens with TensorBoard's purge marker (SummaryWriter's purge_step), so
a reader drops what the killed process logged after the checkpoint and the curve goes on without a
duplicate or a gap. A new run in the same folder deletes the old event files, as metrics.jsonl is emptied.
W&B keeps one run across resumes (its id in wandb_id.txt); it ignores a step lower than one it has, so a
step logged before the kill keeps its first value, the same value where resume is exact.
"""

from __future__ import annotations

import importlib
import math
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from llm.config import LogConfig, RunConfig, to_dict
from llm.errors import ConfigError
from llm.run_files import write_text

EVENT_FILES = "events.out.tfevents.*"
WANDB_ID_FILE = "wandb_id.txt"
INSTALL = {"tensorboard": "pip install tensorboard", "wandb": "pip install wandb"}


def scalars(record: dict) -> dict[str, float]:
    """The finite numbers of a metrics.jsonl line by name, nested dicts flattened with '/'; not kind or step."""
    out = {}
    for key, value in record.items():
        if key in ("kind", "step"):
            continue
        if isinstance(value, dict):
            out.update({f"{key}/{name}": number for name, number in scalars(value).items()})
        elif isinstance(value, (int, float)) and math.isfinite(value):  # a bool (skipped) counts as 0 or 1
            out[key] = float(value)
    return out


def samples_markdown(samples: list) -> str:
    """An evaluation's samples as a markdown table: a column per field (prompt, reply, ...), or one of text."""
    rows = [row if isinstance(row, dict) else {"sample": row} for row in samples]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(table_cell(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def table_cell(value) -> str:
    # a pipe would end the cell and a newline the row; ↵ keeps a reply's line breaks visible
    return str(value).replace("|", "\\|").replace("\n", " ↵ ")


def require(log: LogConfig) -> None:
    """Fail before any model loads when the config asks outright for a tracker that is not installed."""
    for name, wanted in (("tensorboard", log.tensorboard is True), ("wandb", log.wandb)):
        if wanted and optional_import(name) is None:
            raise ConfigError(f"log.{name}=true but {name} is not installed: {INSTALL[name]} (or set log.{name}=false)")


def optional_import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


class TensorBoard:
    def __init__(self, run_dir: Path, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        if resume_step is None:
            for old in run_dir.glob(EVENT_FILES):
                old.unlink()
        # purge_step: readers drop what an earlier process logged at this step and after
        self.writer = SummaryWriter(str(run_dir), purge_step=None if resume_step is None else resume_step + 1)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def text(self, step: int, name: str, markdown: str) -> None:
        self.writer.add_text(name, markdown, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, wandb: ModuleType, cfg: RunConfig, resume_step: int | None):
        id_file = cfg.run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if resume_step is not None and id_file.is_file() else uuid.uuid4().hex[:12]
        write_text(id_file, run_id)
        self.run = wandb.init(id=run_id, resume="allow", name=cfg.name, config=to_dict(cfg), dir=str(cfg.run_dir))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def text(self, step: int, name: str, markdown: str) -> None:
        """Samples stay in samples.jsonl and TensorBoard: W&B gets the numbers."""

    def flush(self) -> None:
        """W&B sends from its own process; nothing to push."""

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """The trackers a run writes to, fed the lines of metrics.jsonl and the samples; none on other ranks."""

    def __init__(self, writers: list):
        self.writers = writers
        self.last_step: dict[str, int] = {}  # per name: a step is logged once, and never goes back

    def record(self, line: dict) -> None:
        step = line["step"]
        fresh = {name: value for name, value in scalars(line).items() if self.last_step.get(name, -1) < step}
        self.last_step.update(dict.fromkeys(fresh, step))
        for writer in self.writers:
            writer.scalars(step, fresh)

    def samples(self, step: int, samples: list) -> None:
        markdown = samples_markdown(samples)
        for writer in self.writers:
            writer.text(step, "samples", markdown)

    def flush(self) -> None:
        """Before a checkpoint is saved: everything up to its step is on disk when a kill comes."""
        for writer in self.writers:
            writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def open_trackers(cfg: RunConfig, resume_step: int | None, say: Callable[[str], None]) -> Trackers:
    """The trackers cfg.log asks for; `resume_step` is the checkpoint's step, None for a new run."""
    require(cfg.log)
    writers = []
    if cfg.log.tensorboard:
        if optional_import("tensorboard") is not None:
            writers.append(TensorBoard(cfg.run_dir, resume_step))
        else:
            say(f"log.tensorboard=auto: tensorboard is not installed, so no event files ({INSTALL['tensorboard']} for them)")
    if cfg.log.wandb:
        writers.append(WandB(optional_import("wandb"), cfg, resume_step))
    return Trackers(writers)
