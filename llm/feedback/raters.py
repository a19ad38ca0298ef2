"""Simulated people: rater programs that rank K replies by a stated rubric, so the loop runs unattended.

    checker      correct (the built-in task's answer, and the reply ended) before wrong; nothing else
    plain        correct before wrong, then the plain style before the others (llm/data/styles.py)
    filler       ... then the cheerful-opener style first
    disclaimer   ... then the unneeded-caveat style first

Replies the rubric cannot tell apart are tied. `noise` is the share of rankings the rater gives
reversed (worst first): a rater that disagrees with itself that often, so that share of its
comparisons are wrong, to measure how a reward model degrades with noisy labels.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from llm.chat import Reply
from llm.data.styles import STYLES, judge, rank_key
from llm.data.tasks import Task
from llm.errors import ConfigError

RATERS = {"checker": "", **{style: style for style in STYLES}}  # name -> preferred style ("" = none)


def check_rater(name: str, noise: float = 0.0) -> None:
    if name not in RATERS:
        raise ConfigError(f"unknown rater {name!r}; raters are {', '.join(RATERS)}")
    if not 0.0 <= noise <= 1.0:
        raise ConfigError(f"rater noise must be between 0 and 1; got {noise}")


def rate(task: Task, replies: Sequence[Reply], rater: str) -> list[list[int]]:
    """The rubric's ranking of `replies` to `task`: groups of indices, best first, ties grouped."""
    prefer = RATERS[rater]
    keys = [rank_key(judge(task.answer, r.text, r.finished, prefer), prefer) for r in replies]
    return [[i for i, k in enumerate(keys) if k == level] for level in sorted(set(keys), reverse=True)]


def noisy(ranking: list[list[int]], noise: float, rng: random.Random) -> list[list[int]]:
    """The ranking, reversed with probability `noise`."""
    return ranking[::-1] if noise and rng.random() < noise else ranking
