"""Preference pairs as token sequences: prompt in the chat template, then the chosen or rejected reply.

A reply that ended is closed with <|end|>; one marked incomplete (it never stopped) is not, so a model
can learn that not stopping is worse. Pairs that cannot be told apart (identical or empty sides) or
that do not fit the context even after dropping the oldest prompt turns are counted and dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from llm.config import PreferenceDataConfig
from llm.data import sources
from llm.data.batching import pad_right
from llm.data.preferences import PreferencePair
from llm.data.sources import Sampler
from llm.errors import DataError
from llm.tokenizer import Tokenizer, render_prompt


@dataclass(frozen=True)
class PairExample:
    prompt: list[int]
    chosen: list[int]  # reply tokens only
    rejected: list[int]
    kind: str = ""
    group: str = ""  # the ranking it came from; "" for a pair given alone

    def __len__(self) -> int:
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))


@dataclass
class PairStats:
    pairs: int = 0
    kept: int = 0
    dropped_identical: int = 0
    dropped_empty: int = 0
    dropped_too_long: int = 0
    prompt_truncated: int = 0


def reply_ids(tok: Tokenizer, text: str, complete: bool) -> list[int]:
    return tok.encode(text) + ([tok.end_id] if complete else [])


def tokenize_pair(tok: Tokenizer, pair: PreferencePair, max_len: int, stats: PairStats) -> PairExample | None:
    chosen = reply_ids(tok, pair.chosen, pair.chosen_complete)
    rejected = reply_ids(tok, pair.rejected, pair.rejected_complete)
    if chosen == rejected:
        stats.dropped_identical += 1
        return None
    if not pair.chosen.strip() or not pair.rejected.strip():
        stats.dropped_empty += 1
        return None
    turns = list(pair.prompt)
    prompt = render_prompt(tok, turns)
    while len(prompt) + max(len(chosen), len(rejected)) > max_len and len(turns) > 1:
        turns = turns[1:]  # drop the oldest turn first: the last question matters most
        prompt = render_prompt(tok, turns)
    if len(turns) < len(pair.prompt):
        stats.prompt_truncated += 1
    if len(prompt) + max(len(chosen), len(rejected)) > max_len:
        stats.dropped_too_long += 1
        return None
    return PairExample(prompt, chosen, rejected, pair.kind, pair.group)


def tokenize_pairs(tok: Tokenizer, pairs: Sequence[PreferencePair], max_len: int) -> tuple[list[PairExample], PairStats]:
    stats = PairStats(pairs=len(pairs))
    examples = [e for e in (tokenize_pair(tok, p, max_len, stats) for p in pairs) if e is not None]
    stats.kept = len(examples)
    return examples, stats


@dataclass
class PairData:
    train: list[PairExample]
    val: list[PairExample]
    log: dict
    unseen: dict[str, list[PairExample]] = field(default_factory=dict)  # held-out pairs by unseen axis (built-in data only)


def load_pair_data(data: PreferenceDataConfig, tok: Tokenizer, max_len: int, sampler: Sampler | None = None) -> PairData:
    """Training and validation pairs from every configured source, tokenized; `sampler` as in sources.preference_pairs."""
    loaded = sources.preference_pairs(data, sampler)
    train, train_stats = tokenize_pairs(tok, loaded.train, max_len)
    val, val_stats = tokenize_pairs(tok, loaded.val, max_len)
    log = {"sources": loaded.log, "train": dataclasses.asdict(train_stats), "val": dataclasses.asdict(val_stats)}
    if not train or not val:
        raise DataError(f"preference data: {len(train)} training and {len(val)} validation pairs left after filtering; need both")
    unseen = {axis: tokenize_pairs(tok, pairs, max_len)[0] for axis, pairs in sources.unseen_pairs(data).items()}
    return PairData(train, val, log, {axis: examples for axis, examples in unseen.items() if examples})


def units(examples: Sequence[PairExample]) -> list[list[PairExample]]:
    """What one batch slot holds: all pairs of one ranking together (InstructGPT), or a single pair given alone."""
    grouped: dict[str, list[PairExample]] = {}
    out = []
    for example in examples:
        if not example.group:
            out.append([example])
        elif example.group in grouped:
            grouped[example.group].append(example)
        else:
            grouped[example.group] = [example]
            out.append(grouped[example.group])
    return out


def collate_units(batch: Sequence[Sequence[PairExample]], pad_id: int) -> dict[str, torch.Tensor]:
    """collate_pairs over every pair of the units, each pair weighted 1/(pairs in its unit): a ranking counts once."""
    examples = [e for unit in batch for e in unit]
    out = collate_pairs(examples, pad_id)
    out["weights"] = torch.tensor([1.0 / len(unit) for unit in batch for _ in unit])
    return out


def collate_pairs(examples: Sequence[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, right-padded: one forward pass scores both sides.

    `reply_mask` marks the reply tokens among the targets (inputs shifted by one), for log-probabilities.
    """
    rows = [e.prompt + e.chosen for e in examples] + [e.prompt + e.rejected for e in examples]
    prompt_lengths = [len(e.prompt) for e in examples] * 2
    ids = pad_right(rows, pad_id)
    lengths = torch.tensor([len(r) for r in rows])
    positions = torch.arange(ids.shape[1])[None, :]
    attention_mask = positions < lengths[:, None]
    reply = (positions >= torch.tensor(prompt_lengths)[:, None]) & attention_mask
    return {"input_ids": ids, "attention_mask": attention_mask, "reply_mask": reply[:, 1:], "kinds": [e.kind for e in examples]}
