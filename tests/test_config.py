import pytest

from llm.config import PretrainConfig, load_config, parse_override
from llm.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_build_typed_config(tmp_path):
    path = write(tmp_path, "name: x\nmodel:\n  n_layer: 3\noptim:\n  lr: 1.0e-3\n")
    cfg = load_config(PretrainConfig, path, ["model.n_embd=64", "optim.lr=2e-3", "train.compile=true", "sampling.prompts=[a, b]"])
    assert cfg.name == "x" and cfg.model.n_layer == 3 and cfg.model.n_embd == 64
    assert cfg.optim.lr == pytest.approx(2e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.train.compile is True
    assert cfg.sampling.prompts == ["a", "b"]
    assert cfg.run_dir.as_posix() == "runs/x"


def test_unknown_key_names_key_and_suggests(tmp_path):
    path = write(tmp_path, "optim:\n  lr_max: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, path)
    message = str(err.value)
    assert str(path) in message and "'optim.lr_max'" in message and "did you mean 'optim.lr'" in message


def test_unknown_override_key_fails():
    with pytest.raises(ConfigError, match=r"unknown key 'train.max_step' \(did you mean 'train.max_steps'\?\)"):
        load_config(PretrainConfig, None, ["train.max_step=3"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"'train.max_steps' expects an integer, got 'many'"):
        load_config(PretrainConfig, None, ["train.max_steps=many"])
    with pytest.raises(ConfigError, match=r"'train.compile' expects true or false"):
        load_config(PretrainConfig, None, ["train.compile=3"])
    with pytest.raises(ConfigError, match=r"'model' is a section"):
        load_config(PretrainConfig, None, ["model=3"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(PretrainConfig, tmp_path / "nope.yaml")
    bad = write(tmp_path, "model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: not valid YAML"):
        load_config(PretrainConfig, bad)
    scalar = write(tmp_path, "3\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(PretrainConfig, scalar)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        parse_override("model.n_layer")
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        parse_override("model..x=1")


def test_every_shipped_config_loads():
    from pathlib import Path

    from llm.config import STAGE_SCHEMAS

    configs = sorted(Path(__file__).resolve().parents[1].glob("configs/*/*.yaml"))
    assert configs, "no configs found"
    for path in configs:
        load_config(STAGE_SCHEMAS[path.parent.name], path)
