"""Preference pairs from the model's own replies, ranked by the task checker: InstructGPT's recipe in miniature.

People ranked replies *sampled from the model* to train InstructGPT's reward model; here the built-in
task checker is the ranker. Pairs of this kind teach a reward model the mistakes the policy really
makes, which hand-made wrong answers (off by one, shuffled, ...) alone do not: a reward model trained
only on those ranked the tiny SFT model's correct samples below its wrong ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from llm.data.preferences import PreferencePair
from llm.data.sources import Sampler
from llm.data.tasks import Task, is_correct

KIND = "model_sample"
# (prompts, seed) -> one reply per prompt, each with .text and .finished (whether it ended by itself)
Generate = Callable[[list[str], int], list]


def pairs_from_samples(task: Task, replies: Sequence) -> list[PreferencePair]:
    """Pair each wrong sample with a correct one (the reference answer when no sample is correct)."""
    correct = [r for r in replies if r.finished and is_correct(task, r.text)]
    wrong = [r for r in replies if not (r.finished and is_correct(task, r.text))]
    prompt = [{"role": "user", "content": task.prompt}]
    pairs, seen = [], set()
    for n, bad in enumerate(wrong):
        if (bad.text, bad.finished) in seen:
            continue
        seen.add((bad.text, bad.finished))
        good = correct[n % len(correct)].text if correct else task.answer
        pairs.append(PreferencePair(prompt, good, bad.text, KIND, True, bad.finished))
    return pairs


def sample_pairs(generate: Generate, tasks: Sequence[Task], samples_per_task: int, seed: int) -> list[PreferencePair]:
    replies = generate([t.prompt for t in tasks for _ in range(samples_per_task)], seed)
    pairs = []
    for i, task in enumerate(tasks):
        pairs += pairs_from_samples(task, replies[i * samples_per_task : (i + 1) * samples_per_task])
    return pairs


def cached_sample_pairs(cache: Path, model_key: str, generate: Generate, tasks: Sequence[Task], samples_per_task: int,
                        seed: int) -> list[PreferencePair]:
    """sample_pairs, stored in `cache` so a resumed run reuses them; `model_key` names the model and how it samples."""
    key = hashlib.sha256(json.dumps([[t.prompt for t in tasks], samples_per_task, seed, model_key]).encode()).hexdigest()
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return [PreferencePair(**p) for p in stored["pairs"]]
    pairs = sample_pairs(generate, tasks, samples_per_task, seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.tmp")
    tmp.write_text(json.dumps({"key": key, "pairs": [vars(p) for p in pairs]}))
    tmp.replace(cache)
    return pairs


def checker_ranked_sampler(run_dir: Path, data, model_key: str, generate: Generate) -> Sampler:
    """The `sampler(split, tasks)` that sources.preference_pairs calls for source builtin_samples, cached in `run_dir`."""

    def sampler(split: str, tasks: Sequence[Task]) -> list[PreferencePair]:
        return cached_sample_pairs(run_dir / f"sampled_pairs_{split}.json", model_key, generate, tasks, data.samples_per_prompt, data.seed)

    return sampler
