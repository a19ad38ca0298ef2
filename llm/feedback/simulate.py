"""Fill a rankings file without a person: a rater program ranks the replies of the next prompts."""

from __future__ import annotations

import random
from collections.abc import Iterator

from llm.data.rankings import Ranking
from llm.errors import ConfigError
from llm.feedback.rankings import AlreadyRanked, RankingFile, answers_per_prompt, not_answered
from llm.feedback.raters import check_rater, noisy, rate
from llm.feedback.session import Item, Sample, replies_given


def simulate(store: RankingFile, items: Iterator[Item], sample: Sample, rater: str, count: int, noise: float = 0.0,
             seed: int = 0, checkpoint: str = "", sampling: dict | None = None, batch: int = 32,
             on_progress=None, raters_per_prompt: int = 1) -> int:
    """Rank prompts this rater has not answered and that have fewer than `raters_per_prompt` raters, until the
    file holds `count` entries; returns how many were added. A prompt another rater ranked keeps its replies,
    so the raters' orders can be compared.

    Prompts are sampled `batch` at a time (one generate call), then ranked and appended one by one, so an
    interrupted run keeps every ranking it gave and a rerun continues."""
    check_rater(rater, noise)
    name = f"{rater} noise={noise:g}" if noise else rater
    # two streams, so the same seed samples the same replies at any noise: a noisy file differs only in its reversals
    rng, noise_rng = random.Random(seed), random.Random(seed + 1)
    in_force = store.in_force()
    answers = answers_per_prompt(in_force)
    done = {id_ for id_, _ in in_force if (id_, name) in in_force or answers[id_] >= raters_per_prompt}
    added, total = 0, len(in_force)
    while total < count:
        chunk = next_new(items, done, min(batch, count - total))
        if not chunk:
            break
        for item in chunk:
            if item.task is None:
                raise ConfigError(f"rater {rater!r} needs built-in prompts, whose answers it checks; got {item.prompt}")
        for item, replies in zip(chunk, replies_for(store, chunk, sample, rng.randrange(2**31))):
            entry = Ranking(item.prompt, replies, noisy(rate(item.task, replies, rater), noise, noise_rng), "ranked", name,
                            checkpoint, sampling or {})
            try:
                store.add(entry, check=not_answered(item.id, name, raters_per_prompt))
            except AlreadyRanked:
                continue  # a person (a server on the same file) answered it meanwhile: theirs stands
            added += 1
        total = len(store.in_force())
        if on_progress:
            on_progress(added)
    return added


def replies_for(store: RankingFile, chunk: list[Item], sample: Sample, seed: int) -> list:
    """Each prompt's replies: those another rater ranked, else sampled (all the new ones in one call)."""
    in_force = store.in_force()
    given = [replies_given(in_force, item.id) for item in chunk]
    new = [item.prompt for item, replies in zip(chunk, given) if not replies]
    sampled = iter(sample(new, seed) if new else [])
    return [replies or next(sampled) for replies in given]


def next_new(items: Iterator[Item], done: set[str], n: int) -> list[Item]:
    """The next `n` items whose prompts are not in `done` (which takes them in)."""
    chunk = []
    for item in items:
        if item.id not in done:
            done.add(item.id)
            chunk.append(item)
            if len(chunk) == n:
                break
    return chunk
