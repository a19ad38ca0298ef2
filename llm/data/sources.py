"""Every stage's data sources through one loader: built-in generators or files, capped, split, counted.

A stage asks for conversations (SFT), preference pairs (reward model, DPO) or prompts (PPO); each
configured source is either a built-in generator, which has its own held-out split, or a file or
dataset, which is capped at `max_records` and split by a seeded shuffle. The log records what each
source gave, for the run folder's data.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llm.config import ChatDataConfig, PPOSettings, PreferenceDataConfig, SourceConfig
from llm.data.builtin_tasks import UNSEEN_AXES, builtin_pairs, builtin_tasks, held_out_pairs
from llm.data.chat import task_conversation
from llm.data.conversations import load_conversations
from llm.data.preferences import PreferencePair, load_preferences
from llm.data.rankings import in_validation, load_rankings
from llm.data.records import split_train_val
from llm.data.several_raters import pairs_by_prompt
from llm.data.tasks import Task
from llm.errors import ConfigError
from llm.settings_checks import RANKINGS_SOURCE

Builtin = Callable[[], tuple[list, list]]  # (train, val) records of a built-in source
ReadFile = Callable[[SourceConfig], tuple[list, object]]  # the records of a file source and its load statistics
Sampler = Callable[[str, Sequence[Task]], list[PreferencePair]]  # ranks a model's own replies to tasks


@dataclass
class Loaded:
    train: list
    val: list
    log: list[dict]  # one entry per source: its path, load statistics, and how many records went each way


def load_sources(sources: Sequence[SourceConfig], builtins: dict[str, Builtin], read_file: ReadFile,
                 val_fraction: float, seed: int) -> Loaded:
    """The records of every source; a file's are split train/validation (all train when val_fraction is 0)."""
    out = Loaded([], [], [])
    for source in sources:
        if source.path in builtins:
            train, val = builtins[source.path]()
            entry = {"path": source.path}
        else:
            records, stats = read_file(source)
            if source.max_records:
                records = records[: source.max_records]
            train, val = split_train_val(records, val_fraction, seed) if val_fraction else (records, [])
            entry = {"path": source.path, **dataclasses.asdict(stats)}
        out.log.append({**entry, "train": len(train), "val": len(val)})
        out.train += train
        out.val += val
    return out


def conversations(data: ChatDataConfig) -> Loaded:
    """SFT conversations (lists of messages)."""

    def builtin() -> tuple[list, list]:
        train = builtin_tasks("train", data.builtin_train, data.seed, data.builtin_kinds)
        val = builtin_tasks("val", data.builtin_val, data.seed, data.builtin_kinds)
        weights = data.styles.weights()
        return [task_conversation(t, weights) for t in train], [task_conversation(t, weights) for t in val]

    def read(source: SourceConfig):
        return load_conversations(source.path, source.format, data.on_error, source.split)

    return load_sources(data.sources, {"builtin": builtin}, read, data.val_fraction, data.seed)


def preference_pairs(data: PreferenceDataConfig, sampler: Sampler | None = None) -> Loaded:
    """Preference pairs; `sampler(split, tasks)` ranks the starting model's own replies (source builtin_samples)."""

    def builtin() -> tuple[list, list]:
        styles = (data.prefer_style, data.styles.weights())
        return (builtin_pairs("train", data.builtin_train, data.seed, data.builtin_kinds, *styles),
                builtin_pairs("val", data.builtin_val, data.seed, data.builtin_kinds, *styles))

    def samples() -> tuple[list, list]:
        if sampler is None:
            raise ConfigError("data source builtin_samples needs a model to sample from (init_from)")
        kinds = data.builtin_kinds or None
        return (sampler("train", builtin_tasks("train", data.sampled_train, data.seed + 1, kinds)),
                sampler("val", builtin_tasks("val", data.sampled_val, data.seed, kinds)))

    def read(source: SourceConfig):
        return load_preferences(source.path, source.format, data.on_error, source.split)

    builtins = {"builtin": builtin, "builtin_samples": samples}
    for source in data.sources:
        if source.path.startswith(RANKINGS_SOURCE):
            builtins[source.path] = ranking_source(source.path[len(RANKINGS_SOURCE):], data.val_fraction, data.seed, data.raters)
    return load_sources(data.sources, builtins, read, data.val_fraction, data.seed)


def unseen_pairs(data: PreferenceDataConfig) -> dict[str, list[PreferencePair]]:
    """Built-in pairs on each unseen axis (new words, new phrasings, both), for the reward model's accuracy where a
    person's own words come in; none unless a built-in source is configured."""
    if not data.unseen_pairs or not any(s.path.startswith("builtin") for s in data.sources):
        return {}
    styles = (data.prefer_style, data.styles.weights())
    return {axis: held_out_pairs(axis, data.unseen_pairs, data.seed, data.builtin_kinds, *styles) for axis in UNSEEN_AXES}




def ranking_source(path: str, val_fraction: float, seed: int, raters: Sequence[str] = ("all",)) -> Builtin:
    """The chosen raters' pairs (data.raters: all, names, or the majority), held out by prompt: a prompt's
    pairs all go to training or all to validation, whoever ranked it."""

    def load() -> tuple[list, list]:
        train, val = [], []
        for prompt_id, pairs in pairs_by_prompt(load_rankings(path), raters, path).items():
            (val if in_validation(prompt_id, val_fraction, seed) else train).extend(pairs)
        return train, val

    return load


@dataclass(frozen=True)
class Prompt:
    messages: list[dict]
    task: Task | None = None  # the built-in task it asks, which the checker reward scores a reply against; None for a file's


def prompts(settings: PPOSettings) -> Loaded:
    """Prompts to roll out on: built-in tasks' questions, or the prompt side of preference pairs."""

    def builtin() -> tuple[list, list]:
        tasks = builtin_tasks("train", settings.builtin_prompts, 1, settings.builtin_kinds)
        return [Prompt([{"role": "user", "content": t.prompt}], t) for t in tasks], []

    def read(source: SourceConfig):
        pairs, stats = load_preferences(source.path, source.format, "skip", source.split)
        return [Prompt(p.prompt) for p in pairs], stats

    return load_sources(settings.prompts, {"builtin": builtin}, read, 0.0, 0)
