"""One launch for every stage of the table (llm/stages/launch.py): presets run as themselves, the run folder says
which stage wrote it, and a missing input fails before anything is written."""

import json

import pytest

from conftest_helpers import ppo_overrides
from llm.config import load_stage_config
from llm.errors import ConfigError
from llm.stages.launch import run_stage
from llm.train import checkpoint as ckpt


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_a_preset_trains_under_its_own_name_with_its_setting_fixed(sft_run, reward_run, tmp_path, stage):
    overrides = ppo_overrides(sft_run, reward_run, tmp_path, stage) + ["ppo.samples_per_prompt=2", "train.max_steps=4",
                                                                       "checkpoint.save_every=4", "train.eval_every=4"]
    cfg = load_stage_config(stage, None, overrides)
    assert cfg.ppo.advantage == stage
    result = run_stage(stage, cfg)
    assert result.step == 4
    assert json.loads((cfg.run_dir / "stage.json").read_text()) == {"stage": stage}
    checkpoints = cfg.run_dir / "checkpoints"
    meta = json.loads((checkpoints / ckpt.latest_step_dir(checkpoints) / "meta.json").read_text())
    assert meta["stage"] == stage
    train_lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert "loss/value" not in train_lines[-1]  # no critic: the group's other replies are the baseline


def test_a_missing_input_fails_before_the_run_folder_exists(tmp_path):
    from llm.config import SFTConfig, load_config

    cfg = load_config(SFTConfig, None, [f"out_dir={tmp_path}"])  # built in code, not launched from a file: run_stage checks
    with pytest.raises(ConfigError, match="key 'init_from' is required"):
        run_stage("sft", cfg)
    assert list(tmp_path.iterdir()) == []
