"""What a stage is, written once: the pipeline, the settings, the `llm` command, the report, compare and
the plots all read this table.

It sits on the lowest floor (it imports nothing of the project), so it names each stage's settings class
and module by name; `llm.config` and `llm.stages.launch` resolve them. Adding a stage is an entry here,
its settings class in `llm.config` and its module under `llm/stages/` (a `build(cfg, runtime)`).
A preset (GRPO, RLOO) is an entry that runs another stage's module with some settings fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

STAGE_FILE = "stage.json"  # in every run folder: {"stage": name}, the entry that wrote it


class Panel(NamedTuple):
    title: str
    source: str  # "eval" or "train": which lines of metrics.jsonl hold the points
    keys: tuple[str, ...]


@dataclass(frozen=True)
class StageSpec:
    name: str  # the command (`llm NAME`), the configs/ folder and the pipeline's stage name
    label: str  # the report's name for the model it trains
    schema: str  # its settings class in llm.config
    module: str  # llm.stages.<module>.build(cfg, runtime) makes it
    summary: str  # one line for `llm --help`
    inputs: tuple[tuple[str, str], ...] = ()  # (settings key, the earlier stage whose run folder it names)
    measures: tuple[str, ...] = ()  # what the report judges it by: the first metric its evaluations carry
    compare: tuple[str, ...] = ("val_loss", "loss")  # what `compare` plots by default
    panels: tuple[Panel, ...] = ()  # its figure in the report, after the training loss
    data_file: str = "data.json"  # what it trained on, in its run folder
    preset: tuple[tuple[str, str], ...] = ()  # settings this entry fixes (key, value)
    policy: bool = False  # optimises the SFT model toward preferences: the report compares it with SFT
    answers: bool = True  # trains a model that writes replies (the report asks it its prompts); not the reward model


POLICY_PANELS = (
    Panel("reward-model score", "eval", ("reward", "sft_reward")), Panel("win rate vs SFT", "eval", ("win_rate",)),
    Panel("KL to SFT", "eval", ("kl",)), Panel("exact match (true accuracy)", "eval", ("exact_match", "sft_exact_match")),
)
RL_PANELS = (*POLICY_PANELS, Panel("rollout score and KL (train)", "train", ("objective/scores", "objective/kl")))
RL_INPUTS = (("policy", "sft"), ("reward_model", "reward"))


def rl_entry(name: str, label: str, summary: str, advantage: str | None) -> StageSpec:
    """PPO and its presets: one module, the advantage estimator fixed for the named algorithms."""
    return StageSpec(name, label, "PPOConfig", "ppo", summary, RL_INPUTS, ("exact_match", "reward"), ("reward", "exact_match"),
                     RL_PANELS, "", (("ppo.advantage", advantage),) if advantage else (), policy=True)


STAGES: tuple[StageSpec, ...] = (
    StageSpec("pretrain", "base", "PretrainConfig", "pretrain", "pre-train a GPT on a text corpus (next-token prediction)",
              measures=("val_bpb",), compare=("val_loss", "val_bpb"), data_file="corpus.json",
              panels=(Panel("validation loss", "eval", ("val_loss", "train_loss")), Panel("bits per byte", "eval", ("val_bpb",)))),
    StageSpec("sft", "SFT", "SFTConfig", "sft", "supervised fine-tuning on instruction/response conversations",
              (("init_from", "pretrain"),), ("exact_match",), ("val_loss", "exact_match"),
              (Panel("validation loss", "eval", ("val_loss",)),
               Panel("exact match (held-out tasks)", "eval", ("exact_match", "stop_rate")))),
    StageSpec("reward", "reward model", "RewardConfig", "reward", "train a reward model on ranked replies (Bradley-Terry)",
              (("init_from", "sft"),), ("val_accuracy",), ("val_loss", "val_accuracy"),
              (Panel("validation accuracy", "eval", ("val_accuracy",)), Panel("validation margin", "eval", ("val_margin",))),
              answers=False),
    rl_entry("ppo", "PPO", "PPO with a KL penalty to the SFT model (ppo.advantage picks GAE, GRPO, Dr. GRPO or RLOO)", None),
    rl_entry("grpo", "GRPO", "GRPO: PPO with group-relative advantages over several replies per prompt, no critic", "grpo"),
    rl_entry("rloo", "RLOO", "RLOO: REINFORCE with a leave-one-out baseline over several replies per prompt", "rloo"),
    StageSpec("dpo", "DPO", "DPOConfig", "dpo", "direct preference optimisation on chosen/rejected pairs",
              (("init_from", "sft"), ("eval.reward_model", "reward")),
              ("exact_match", "val_rewards/accuracies"), ("val_loss", "exact_match"),
              (Panel("validation loss", "eval", ("val_loss",)), Panel("preference accuracy", "eval", ("val_rewards/accuracies",)),
               *POLICY_PANELS), policy=True),
)
BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}
NAMES: tuple[str, ...] = tuple(BY_NAME)
POLICIES: tuple[StageSpec, ...] = tuple(s for s in STAGES if s.policy)  # the alternatives after SFT, in run order


def spec(name: str) -> StageSpec:
    return BY_NAME[name]
