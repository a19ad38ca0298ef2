import dataclasses
import typing
from pathlib import Path

import pytest

from llm.config import (
    STAGE_SCHEMAS,
    DPOConfig,
    ModelConfig,
    PipelineConfig,
    PPOConfig,
    PretrainConfig,
    RewardConfig,
    SamplingConfig,
    SFTConfig,
    SourceConfig,
    load_config,
    parse_override,
)
from llm.errors import ConfigError

SHIPPED_CONFIGS = sorted(Path(__file__).resolve().parents[1].glob("configs/*/*.yaml"))


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


def test_configs_are_shipped():
    assert {p.parent.name for p in SHIPPED_CONFIGS} == set(STAGE_SCHEMAS)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads(path):
    load_config(STAGE_SCHEMAS[path.parent.name], path)


# one row per bad value: (schema, override, the dotted key the one-line error must name)
BAD_VALUES = [
    (PretrainConfig, "model.n_head=0", "model.n_head"),
    (PretrainConfig, "model.block_size=0", "model.block_size"),
    (PretrainConfig, "model.n_embd=30", "model.n_embd"),  # not divisible by 4 heads
    (PretrainConfig, "model.n_embd=36", "model.n_embd"),  # 4 heads of 9: rope needs an even head size
    (PretrainConfig, "model.norm=batchnorm", "model.norm"),
    (PretrainConfig, "model.position=alibi", "model.position"),
    (PretrainConfig, "model.dropout=1", "model.dropout"),
    (PretrainConfig, "model.norm_eps=-1e-5", "model.norm_eps"),
    (PretrainConfig, "model.mlp_hidden=-1", "model.mlp_hidden"),
    (PretrainConfig, "model.mlp=relu", "model.mlp"),
    (PretrainConfig, "model.vocab_size=100", "model.vocab_size"),  # below any tokenizer's 263 ids
    (PretrainConfig, "tokenizer.vocab_size=5", "tokenizer.vocab_size"),
    (PretrainConfig, "tokenizer.min_frequency=-1", "tokenizer.min_frequency"),
    (PretrainConfig, "data.val_fraction=0", "data.val_fraction"),
    (PretrainConfig, "data.val_fraction=1", "data.val_fraction"),
    (PretrainConfig, "data.chunk_chars=0", "data.chunk_chars"),
    (PretrainConfig, "data.path=", "data.path"),
    (PretrainConfig, "optim.lr=0", "optim.lr"),
    (PretrainConfig, "optim.min_lr_ratio=1.5", "optim.min_lr_ratio"),
    (PretrainConfig, "optim.schedule=linear", "optim.schedule"),
    (PretrainConfig, "optim.decay_fraction=0", "optim.decay_fraction"),
    (PretrainConfig, "optim.beta2=1", "optim.beta2"),
    (PretrainConfig, "optim.grad_clip=-1", "optim.grad_clip"),
    (PretrainConfig, "optim.fused=maybe", "optim.fused"),
    (PretrainConfig, "train.batch_size=0", "train.batch_size"),
    (PretrainConfig, "train.max_steps=-1", "train.max_steps"),
    (PretrainConfig, "train.eval_batches=0", "train.eval_batches"),
    (PretrainConfig, "train.max_time_s=nan", "train.max_time_s"),
    (PretrainConfig, "train.dtype=fp8", "train.dtype"),
    (PretrainConfig, "train.dtype=float16", "train.dtype"),  # no gradient scaler: refused, not silently underflowing
    (PretrainConfig, "train.early_stop_mode=up", "train.early_stop_mode"),
    (PretrainConfig, "train.device=gpu", "train.device"),
    (PretrainConfig, "train.seed=-1", "train.seed"),
    (PretrainConfig, "checkpoint.keep_last=0", "checkpoint.keep_last"),
    (PretrainConfig, "checkpoint.save_every=-5", "checkpoint.save_every"),
    (PretrainConfig, "sampling.top_p=0", "sampling.top_p"),
    (PretrainConfig, "sampling.temperature=-1", "sampling.temperature"),
    (PretrainConfig, "sampling.top_k=-1", "sampling.top_k"),
    (PretrainConfig, "sampling.max_new_tokens=0", "sampling.max_new_tokens"),
    (PretrainConfig, "sampling.prompts=[]", "sampling.prompts"),
    (PretrainConfig, "log.tensorboard=maybe", "log.tensorboard"),
    (PretrainConfig, "log.tensorboard=1", "log.tensorboard"),  # read as the string '1', not as true
    (SFTConfig, "name=", "name"),
    (SFTConfig, "data.sources=[{path: a.jsonl, format: csv}]", "data.sources[0].format"),
    (SFTConfig, "data.sources=[{path: a.jsonl, max_records: -1}]", "data.sources[0].max_records"),
    (SFTConfig, "data.sources=[{path: a.jsonl, format: pairs}]", "data.sources[0].format"),  # a preference format
    (SFTConfig, "data.sources=[]", "data.sources"),
    (SFTConfig, "data.on_error=ignore", "data.on_error"),
    (SFTConfig, "data.val_fraction=1", "data.val_fraction"),
    (SFTConfig, "data.builtin_kinds=[first_word, juggling]", "data.builtin_kinds[1]"),
    (SFTConfig, "data.styles.filler=-0.5", "data.styles.filler"),
    (SFTConfig, "eval.prefer_style=polite", "eval.prefer_style"),
    (SFTConfig, "eval.max_new_tokens=0", "eval.max_new_tokens"),
    (SFTConfig, "eval.n_tasks=-1", "eval.n_tasks"),
    (RewardConfig, "data.sources=[{path: a.jsonl, format: alpaca}]", "data.sources[0].format"),  # a chat format
    (RewardConfig, "data.samples_per_prompt=0", "data.samples_per_prompt"),
    (RewardConfig, "data.prefer_style=terse", "data.prefer_style"),
    (RewardConfig, "data.sample_temperature=-0.5", "data.sample_temperature"),
    (RewardConfig, "data.val_fraction=-0.1", "data.val_fraction"),
    (RewardConfig, "data.raters=[all, ana]", "data.raters"),  # all or majority alone
    (RewardConfig, "data.raters=[]", "data.raters"),
    (RewardConfig, "data.raters=majority", "data.raters"),  # no rankings:FILE source to choose raters of
    (RewardConfig, "margin=-1", "margin"),
    (RewardConfig, "center_coef=-0.1", "center_coef"),
    (PPOConfig, "ppo.samples_per_prompt=0", "ppo.samples_per_prompt"),
    (PPOConfig, "ppo.rollout_batch=0", "ppo.rollout_batch"),
    (PPOConfig, "ppo.clip_ratio=0", "ppo.clip_ratio"),
    (PPOConfig, "ppo.kl_estimator=k9", "ppo.kl_estimator"),
    (PPOConfig, "ppo.advantage=a2c", "ppo.advantage"),
    (PPOConfig, "ppo.critic_init=random", "ppo.critic_init"),
    (PPOConfig, "ppo.gamma=1.5", "ppo.gamma"),
    (PPOConfig, "ppo.target_kl=0", "ppo.target_kl"),
    (PPOConfig, "ppo.max_ratio=1", "ppo.max_ratio"),
    (PPOConfig, "ppo.temperature=-1", "ppo.temperature"),
    (PPOConfig, "ppo.prompts=[{path: p.jsonl, format: alpaca}]", "ppo.prompts[0].format"),
    (PPOConfig, "ppo.advantage=grpo", "ppo.samples_per_prompt"),  # 1 reply per prompt is no group
    (PPOConfig, "ppo.rewards=[{source: judge}]", "ppo.rewards[0].source"),
    (PPOConfig, "ppo.rewards=[{source: checker, weight: -1}]", "ppo.rewards[0].weight"),
    (PPOConfig, "ppo.rewards=[]", "ppo.rewards"),
    (PPOConfig, "ppo.rewards=[{source: model, weight: 0}]", "ppo.rewards"),
    (PPOConfig, "ppo.rewards=[{source: model}, {source: model, weight: 2}]", "ppo.rewards"),
    (PPOConfig, "ppo={rewards: [{source: checker}], prompts: [{path: p.jsonl}]}", "ppo.prompts[0].path"),  # no task to check
    (PPOConfig, "eval.max_new_tokens=0", "eval.max_new_tokens"),
    (DPOConfig, "eval.kinds=[nope]", "eval.kinds[0]"),
    (DPOConfig, "dpo.beta=0", "dpo.beta"),
    (DPOConfig, "dpo.label_smoothing=0.5", "dpo.label_smoothing"),
    (DPOConfig, "dpo.loss=hinge", "dpo.loss"),
    (DPOConfig, "dpo.nll_coef=-1", "dpo.nll_coef"),
    (SFTConfig, "lora.targets=[attention, q_proj]", "lora.targets"),  # a target that matches no layer
    (RewardConfig, "lora.alpha=0", "lora.alpha"),
    (PPOConfig, "lora.dropout=1", "lora.dropout"),
    (PipelineConfig, "stages=[]", "stages"),
    (PipelineConfig, "stages=[pretrain, rlhf]", "stages"),
    (PipelineConfig, "sft.config=", "sft.config"),
    (PipelineConfig, "sft.reference_s=-1", "sft.reference_s"),
    (PipelineConfig, "ppo.overrides=[nonsense]", "ppo.overrides[0]"),
]


@pytest.mark.parametrize("schema, override, key", BAD_VALUES, ids=[row[1] for row in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_its_key(schema, override, key):
    with pytest.raises(ConfigError) as err:
        load_config(schema, None, [override])
    message = str(err.value)
    assert message.startswith(f"defaults: key '{key}' ") and "; got " in message, message
    assert "\n" not in message


def owner_of(schema: type, key: str) -> type:
    """The dataclass holding the last part of a dotted key such as 'data.sources[0].format'."""
    for part in key.split(".")[:-1]:
        hint = typing.get_type_hints(schema)[part.split("[")[0]]
        schema = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
    return schema


def nested_dataclasses(schema: type) -> set[type]:
    found = set()
    for hint in typing.get_type_hints(schema).values():
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
        if dataclasses.is_dataclass(inner):
            found |= {inner} | nested_dataclasses(inner)
    return found


def test_every_settings_dataclass_has_a_bad_value_row():
    covered = {owner_of(schema, key) for schema, _, key in BAD_VALUES}
    sections = set().union(*(nested_dataclasses(schema) for schema in STAGE_SCHEMAS.values()))
    assert sections <= covered, sorted(c.__name__ for c in sections - covered)
    assert {SFTConfig, RewardConfig, PipelineConfig} <= covered  # RunConfig's own fields, the reward loss, the pipeline


def test_a_bad_value_in_a_file_names_the_file_and_the_full_key(tmp_path):
    path = write(tmp_path, "train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, path)
    assert str(err.value) == f"{path}: key 'train.batch_size' must be at least 1; got 0"


def test_a_choice_error_lists_the_allowed_values():
    with pytest.raises(ConfigError, match=r"key 'ppo.kl_estimator' must be one of k1, k3; got 'k9'$"):
        load_config(PPOConfig, None, ["ppo.kl_estimator=k9"])
    with pytest.raises(ConfigError, match=r"must be at least 263 \(256 byte tokens \+ 7 special tokens\); got 5$"):
        load_config(PretrainConfig, None, ["tokenizer.vocab_size=5"])


def test_a_dataclass_built_on_its_own_names_its_section():
    with pytest.raises(ConfigError) as err:
        SamplingConfig(top_p=0)
    assert str(err.value) == "key 'sampling.top_p' must be in (0, 1]; got 0"
    with pytest.raises(ConfigError) as err:
        ModelConfig(n_embd=30, n_head=4)
    assert str(err.value) == "key 'model.n_embd' must be divisible by model.n_head (4); got 30"
    with pytest.raises(ConfigError, match="key 'format' must be one of auto, "):
        SourceConfig(format="csv")


# the edges the code supports (0 = greedy / off / no limit, the ends of closed ranges) must still load
EDGE_VALUES = [
    (PretrainConfig, ["sampling.temperature=0", "sampling.top_k=0", "sampling.top_p=1", "sampling.top_p=1e-6"]),
    (PretrainConfig, ["optim.min_lr_ratio=0", "optim.grad_clip=0", "optim.warmup_steps=0", "optim.fused=true", "optim.decay_fraction=1"]),
    (PretrainConfig, ["optim.min_lr_ratio=1", "optim.beta1=0", "model.dropout=0", "model.vocab_size=0",
                      "model.position=learned", "model.n_embd=36"]),
    (PretrainConfig, ["train.max_steps=0", "train.eval_every=0", "train.log_every=0", "train.max_time_s=0", "checkpoint.save_every=0"]),
    (PretrainConfig, ["tokenizer.vocab_size=263", "model.vocab_size=263", "train.device=cuda:1", "train.early_stop_mode=max"]),
    (PretrainConfig, ["tokenizer.vocab_size=4096", "model.vocab_size=300"]),  # a small corpus trains fewer than asked
    (PretrainConfig, ["log.tensorboard=false", "log.wandb=true"]),
    (SFTConfig, ["data.val_fraction=0", "eval.n_tasks=0", "eval.prompts=[]", "data.builtin_kinds=[first_word]"]),
    (PPOConfig, ["ppo.gamma=1", "ppo.lam=0", "ppo.kl_coef=0", "ppo.temperature=0", "ppo.advantage=rloo", "ppo.samples_per_prompt=2"]),
    (PPOConfig, ["ppo.advantage=grpo", "ppo.samples_per_prompt=2", "ppo.rewards=[{source: checker, weight: 0}, {source: model}]"]),
    (DPOConfig, ["dpo.label_smoothing=0.49", "dpo.loss=ipo", "data.sources=[{path: builtin_samples}]"]),
    (RewardConfig, ["data.sources=[builtin, rankings:f.jsonl]", "data.raters=[ana, bo]"]),
    (RewardConfig, ["data.sources=[rankings:f.jsonl]", "data.raters=majority"]),
]


def test_ppo_reward_is_the_reward_model_alone_unless_set():
    assert [(r.source, r.weight) for r in load_config(PPOConfig, None).ppo.rewards] == [("model", 1.0)]
    cfg = load_config(PPOConfig, None, ["ppo.rewards=[{source: checker}, {source: model, weight: 0.5}]"])
    assert [(r.source, r.weight) for r in cfg.ppo.rewards] == [("checker", 1.0), ("model", 0.5)]


@pytest.mark.parametrize("schema, overrides", EDGE_VALUES)
def test_edge_values_the_code_supports_still_load(schema, overrides):
    load_config(schema, None, overrides)


def test_choices_spelled_out_in_config_match_their_modules():
    # settings_checks.py spells them out so that loading a config needs no torch
    from llm.device import DTYPES
    from llm.settings_checks import DTYPE_CHOICES

    assert DTYPE_CHOICES == ("auto", *DTYPES)


@pytest.mark.parametrize("path", [p for p in SHIPPED_CONFIGS if p.parent.name != "pipeline"], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_stop_by_work_and_choose_precision_by_hardware(path):
    """Every machine does the same work in the precision it runs well: no clock, no forced dtype."""
    cfg = load_config(STAGE_SCHEMAS[path.parent.name], path)
    assert cfg.train.dtype == "auto" and cfg.train.max_time_s == 0
