"""Preference pairs from the model's own replies, ranked by the built-in rater: InstructGPT's recipe in miniature.

People ranked K replies *sampled from the model* to train InstructGPT's reward model; here the built-in
rater (llm/data/styles.py: correct first, then the preferred style) stands in for them. Pairs of this
kind teach a reward model the mistakes and the styles the policy really produces, which hand-made wrong
answers (off by one, shuffled, ...) alone do not: a reward model trained only on those ranked the tiny
SFT model's correct samples below its wrong ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from llm.data.preferences import PreferencePair
from llm.data.sources import Sampler
from llm.data.styles import judge, styled
from llm.data.tasks import Task
from llm.run_files import write_text

KIND = "model_sample"  # a wrong sample under a top-ranked one
STYLE_KIND = "model_sample_style"  # a correct sample in a style the rater ranks lower
# (prompts, seed) -> one reply per prompt, each with .text and .finished (whether it ended by itself)
Generate = Callable[[list[str], int], list]


def pairs_from_samples(task: Task, replies: Sequence, prefer: str = "") -> list[PreferencePair]:
    """Pair each sample the rater ranks below the top with one at the top; the ideal reply (the answer in
    the preferred style) stands in when no sample reaches it. Kinds: KIND for a wrong sample, STYLE_KIND
    for a correct one in another style."""
    verdicts = [judge(task.answer, r.text, r.finished, prefer) for r in replies]
    top = [r.text for r, v in zip(replies, verdicts) if v.best] or [styled(task.answer, prefer or "plain")]
    prompt = [{"role": "user", "content": task.prompt}]
    pairs, seen = [], set()
    for bad, verdict in zip(replies, verdicts):
        if verdict.best or (bad.text, bad.finished) in seen:
            continue
        seen.add((bad.text, bad.finished))
        kind = STYLE_KIND if verdict.correct else KIND
        pairs.append(PreferencePair(prompt, top[len(pairs) % len(top)], bad.text, kind, True, bad.finished))
    return pairs


def sample_pairs(generate: Generate, tasks: Sequence[Task], samples_per_task: int, seed: int, prefer: str = "") -> list[PreferencePair]:
    replies = generate([t.prompt for t in tasks for _ in range(samples_per_task)], seed)
    pairs = []
    for i, task in enumerate(tasks):
        pairs += pairs_from_samples(task, replies[i * samples_per_task : (i + 1) * samples_per_task], prefer)
    return pairs


def cached_sample_pairs(cache: Path, model_key: str, generate: Generate, tasks: Sequence[Task], samples_per_task: int,
                        seed: int, prefer: str = "") -> list[PreferencePair]:
    """sample_pairs, stored in `cache` so a resumed run reuses them; `model_key` names the model and how it samples."""
    key = hashlib.sha256(json.dumps([[t.prompt for t in tasks], samples_per_task, seed, prefer, model_key]).encode()).hexdigest()
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return [PreferencePair(**p) for p in stored["pairs"]]
    pairs = sample_pairs(generate, tasks, samples_per_task, seed, prefer)
    write_text(cache, json.dumps({"key": key, "pairs": [vars(p) for p in pairs]}))
    return pairs


def rater_ranked_sampler(run_dir: Path, data, model_key: str, generate: Generate) -> Sampler:
    """The `sampler(split, tasks)` that sources.preference_pairs calls for source builtin_samples, cached in `run_dir`."""

    def sampler(split: str, tasks: Sequence[Task]) -> list[PreferencePair]:
        return cached_sample_pairs(run_dir / f"sampled_pairs_{split}.json", model_key, generate, tasks,
                                   data.samples_per_prompt, data.seed, data.prefer_style)

    return sampler
