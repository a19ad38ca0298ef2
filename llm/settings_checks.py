"""Checking a setting's value: the ranges, choices and rules every settings dataclass applies to itself.

`llm.config` builds its dataclasses on these; a value a key does not allow raises `BadValue`, which the
loader turns into one line naming the file and the full dotted key.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from typing import Any

from llm.errors import ConfigError


class BadValue(ConfigError):
    """A value its key does not allow; `build` re-raises it naming the file and the full dotted key."""

    def __init__(self, key: str, rule: str, value: Any):
        super().__init__(key, rule, value)
        self.key, self.rule, self.value = key, rule, value
        self.section = ""  # the dataclass's own prefix, for a dataclass built outside a config file

    def __str__(self) -> str:
        return self.at(self.section)

    def at(self, prefix: str) -> str:
        key = prefix + self.key
        name = key if key.startswith("-") else f"key '{key}'"  # a script's flag names itself
        return f"{name} {self.rule}; got {self.value!r}"


@dataclass(frozen=True)
class Range:
    """Allowed numbers: from low to high, `ends` open "(" or closed "[" as in maths; never NaN or infinite."""

    low: float
    high: float = math.inf
    ends: str = "[]"

    def check(self, key: str, value: float) -> None:
        above = value >= self.low if self.ends[0] == "[" else value > self.low
        below = value <= self.high if self.ends[1] == "]" else value < self.high
        if not (above and below and math.isfinite(value)):  # NaN fails every comparison
            raise BadValue(key, self.describe(), value)

    def describe(self) -> str:
        if self.high == math.inf:
            return f"must be {'at least' if self.ends[0] == '[' else 'greater than'} {self.low:g}"
        return f"must be in {self.ends[0]}{self.low:g}, {self.high:g}{self.ends[1]}"


AT_LEAST_1, NON_NEGATIVE, POSITIVE = Range(1), Range(0), Range(0, ends="(]")
FRACTION, BELOW_1 = Range(0, 1), Range(0, 1, "[)")
# temperature 0 is greedy, top_k 0 and top_p 1 switch those filters off; top_p 0 would keep no token
SAMPLING_RULES = {"max_new_tokens": AT_LEAST_1, "temperature": NON_NEGATIVE, "top_k": NON_NEGATIVE, "top_p": Range(0, 1, "(]")}
FLAG_RULES = {**SAMPLING_RULES, "num_samples": AT_LEAST_1}
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DTYPE_CHOICES = ("auto", "float32", "bfloat16")  # llm.device.DTYPES, without importing torch here
ON_ERROR = ("skip", "raise")
# the names the settings accept, kept here (the lowest floor) for the data modules that implement them to import
TASK_KINDS: tuple[str, ...] = (
    "add", "subtract", "reverse_words", "sort_words", "count_words",
    "first_word", "last_word", "uppercase", "repeat", "copy",
)
STYLES = ("plain", "filler", "disclaimer")  # the demonstrations' reply styles (llm/data/styles.py)
CONVERSATION_FORMATS = ("messages", "alpaca", "sharegpt", "hh", "alpaca_seed")  # llm/data/conversations.py
PREFERENCE_FORMATS = ("pairs", "hh")  # llm/data/preferences.py
RANKINGS_SOURCE = "rankings:"  # a data source path "rankings:FILE" reads a rankings file (llm/data/rankings.py)
RATER_CHOICES = ("all", "majority")  # data.raters besides raters' names (llm/feedback/several_raters.py)
REWARD_SOURCES = ("model", "checker")  # the reward model; the built-in task checker (rewards that can be verified)
# lora.targets: a group of the blocks' linear layers, or one layer by its name in every block (llm/lora.py)
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "attention": ("attn.qkv", "attn.proj"), "mlp": ("mlp.up", "mlp.down"), "all": ("attn.qkv", "attn.proj", "mlp.up", "mlp.down"),
    "qkv": ("attn.qkv",), "proj": ("attn.proj",), "up": ("mlp.up",), "down": ("mlp.down",),
}


class Checked:
    """Mixin of a settings dataclass that checks its fields when built: a typo fails before any model loads."""

    section = ""  # the prefix of its keys in a stage's config, for a dataclass built on its own

    def __post_init__(self) -> None:
        try:
            self.check()
        except BadValue as exc:
            exc.section = self.section
            raise

    def check(self) -> None:
        """Raise BadValue naming the field at fault, relative to this dataclass."""


def check_ranges(config: Any, rules: dict[str, Range]) -> None:
    for name, rule in rules.items():
        rule.check(name, getattr(config, name))


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BadValue(key, f"must be one of {', '.join(c or repr(c) for c in choices)}", value)


def check_choices(config: Any, choices: dict[str, tuple[str, ...]]) -> None:
    for name, allowed in choices.items():
        check_choice(name, getattr(config, name), allowed)


def check_filled(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        if not getattr(config, name):
            raise BadValue(name, "must not be empty", getattr(config, name))


def check_kinds(key: str, kinds: list[str]) -> None:
    for i, kind in enumerate(kinds):
        check_choice(f"{key}[{i}]", kind, TASK_KINDS)


def check_sources(key: str, sources: list, formats: tuple[str, ...]) -> None:
    """At least one source, and each file or dataset source in a format this stage reads."""
    if not sources:
        raise BadValue(key, "must list at least one source (builtin, a file or a dataset)", sources)
    for i, source in enumerate(sources):
        if source.path not in ("builtin", "builtin_samples") and not source.path.startswith(RANKINGS_SOURCE):  # no format to pick
            check_choice(f"{key}[{i}].format", source.format, ("auto", *formats))


def check_raters(key: str, raters: list[str], sources: list) -> None:
    """all, majority, or raters' names; only where a rankings:FILE source has raters to choose from."""
    if not raters or not all(name.strip() for name in raters):
        raise BadValue(key, "must be all, majority, or raters' names", raters)
    if len(raters) > 1 and any(name in RATER_CHOICES for name in raters):
        raise BadValue(key, f"takes {' or '.join(RATER_CHOICES)} alone, not in a list of names", raters)
    if raters != ["all"] and not any(source.path.startswith(RANKINGS_SOURCE) for source in sources):
        raise BadValue(key, "chooses among the raters of a rankings:FILE source, and none is configured", raters)


def check_reward_sources(key: str, rewards: list, prompts: list) -> None:
    """PPO's reward terms: at least one, each source once, some weight above 0; the checker needs built-in prompts."""
    names = [r.source for r in rewards]
    if not rewards:
        raise BadValue(key, "must list at least one reward source (model or checker)", names)
    if len(set(names)) < len(names):
        raise BadValue(key, "must name each source once (give it one weight)", names)
    if not any(r.weight > 0 for r in rewards):
        raise BadValue(key, "must give some source a weight above 0", [r.weight for r in rewards])
    if "checker" in names:
        for i, source in enumerate(prompts):
            if source.path != "builtin":  # only a built-in prompt keeps the task its answer is checked against
                raise BadValue(f"prompts[{i}].path", "must be builtin when ppo.rewards has a checker source: a file's prompts have "
                                                     "no task to check", source.path)


def check_device(key: str, value: str) -> None:
    if not DEVICE_PATTERN.fullmatch(value):
        raise BadValue(key, "must be auto, cpu, cuda, cuda:N or mps", value)


def check_sampling(prefix: str = "", **values: float) -> None:
    """The one rule book of the sampling knobs: SamplingParams, every config that samples, the scripts' flags."""
    for name, value in values.items():
        SAMPLING_RULES[name].check(prefix + name, value)


def model_flags(parser: argparse.ArgumentParser, **sampling: float) -> argparse.ArgumentParser:
    """The flags every tool that loads a checkpoint shares: --checkpoint and --device; with `sampling` defaults
    (max_new_tokens, temperature, top_k, top_p, seed) those sampling flags too, spelled and checked alike
    everywhere (llm.settings_checks.check_flags)."""
    parser.add_argument("--checkpoint", required=True, help="a run folder (uses its best checkpoint) or a checkpoint folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    helps = {"max_new_tokens": "the most tokens a reply or sample gets", "temperature": "0 for greedy decoding",
             "top_k": "0 to disable", "top_p": "1.0 to disable", "seed": "the sampler's seed: the same seed, the same replies"}
    for name, default in sampling.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=helps[name])
    return parser


def check_flags(args: Any) -> None:
    """A script's sampling flags and --device, checked before anything loads; an error names the flag."""
    for name, rule in FLAG_RULES.items():
        if getattr(args, name, None) is not None:
            rule.check("--" + name.replace("_", "-"), getattr(args, name))
    if getattr(args, "device", None) is not None:
        check_device("--device", args.device)
