"""Fill a rankings file without a person: a rater program ranks the replies of the next prompts."""

from __future__ import annotations

import random
from collections.abc import Iterator

from llm.errors import ConfigError
from llm.feedback.raters import check_rater, noisy, rate
from llm.feedback.rankings import AlreadyRanked, Ranking, RankingFile, not_answered
from llm.feedback.session import Item, Sample


def simulate(store: RankingFile, items: Iterator[Item], sample: Sample, rater: str, count: int, noise: float = 0.0,
             seed: int = 0, checkpoint: str = "", sampling: dict | None = None, batch: int = 32,
             on_progress=None) -> int:
    """Rank prompts not yet in the file until it holds `count` entries; returns how many were added.

    Prompts are sampled `batch` at a time (one generate call), then ranked and appended one by one, so an
    interrupted run keeps every ranking it gave and a rerun continues."""
    check_rater(rater, noise)
    # two streams, so the same seed samples the same replies at any noise: a noisy file differs only in its reversals
    rng, noise_rng = random.Random(seed), random.Random(seed + 1)
    done = set(store.in_force())
    added = 0
    while len(done) < count:
        chunk = next_new(items, done, min(batch, count - len(done)))
        if not chunk:
            break
        for item in chunk:
            if item.task is None:
                raise ConfigError(f"rater {rater!r} needs built-in prompts, whose answers it checks; got {item.prompt}")
        for item, replies in zip(chunk, sample([item.prompt for item in chunk], rng.randrange(2**31))):
            ranking = noisy(rate(item.task, replies, rater), noise, noise_rng)
            entry = Ranking(item.prompt, replies, ranking, "ranked", f"{rater} noise={noise:g}" if noise else rater,
                            checkpoint, sampling or {})
            try:
                store.add(entry, check=not_answered(item.id))
            except AlreadyRanked:
                continue  # a person (a server on the same file) answered it meanwhile: theirs stands
            added += 1
        if on_progress:
            on_progress(added)
    return added


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
