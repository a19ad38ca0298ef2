"""Run any stage of the table (llm/stage_table.py): what every stage's launch shares, written once.

A stage module contributes `build(cfg, runtime) -> Built`: its models, data and loss (a loop Stage), the
settings completed from its checkpoints, and what it says and records about its data. Everything around
it is here: the run folder, the runtime, the record of which stage the folder holds, and the loop.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from llm import stage_table
from llm.errors import ConfigError
from llm.run_files import write_json
from llm.train.loop import Stage, TrainResult, train
from llm.train.runtime import prepare_run_dir, setup_runtime


@dataclass
class Built:
    stage: Stage
    cfg: object  # the settings, completed from the checkpoints it starts from (model shape, vocabulary)
    tokenizer_json: str
    data_log: dict | None = None  # written to the stage's data file (stage_table's data_file)
    lines: list[str] = field(default_factory=list)  # what it says before training: data sizes, the model


def run_stage(name: str, cfg, resume: bool = False, fresh: bool = False) -> TrainResult:
    """Train the table's stage `name` with settings `cfg` (from llm.config.load_stage_config) in cfg.run_dir."""
    spec = stage_table.spec(name)
    if missing := cfg.missing_input():
        raise ConfigError(missing)
    prepare_run_dir(cfg.run_dir, resume, fresh)
    runtime = setup_runtime(cfg)
    built = importlib.import_module(f"llm.stages.{spec.module}").build(cfg, runtime)
    built.stage.name = name  # a preset logs, checkpoints and reports under its own name
    if runtime.dist.is_main:
        write_json(cfg.run_dir / stage_table.STAGE_FILE, {"stage": name})
        if built.data_log is not None and spec.data_file:
            write_json(cfg.run_dir / spec.data_file, built.data_log)
    for line in built.lines:
        runtime.say(line)
    return train(built.stage, built.cfg, runtime, built.tokenizer_json, resume)
