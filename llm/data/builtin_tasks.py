"""The built-in instruction tasks and preference pairs, made from the built-in corpus's own words.

List operands are the corpus's frequent words and `copy` copies its sentences, so a model pre-trained
on the corpus knows every token a task uses; the task generator itself (`llm.data.tasks`) knows
nothing of the corpus.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from llm.data.builtin_corpus import builtin_sentences, builtin_words
from llm.data.preferences import PreferencePair
from llm.data.tasks import _TEMPLATES, Task, make_preference_pairs, make_tasks

MAX_NUMBER = 20  # two-digit operands are two tokens each; sums up to 40 stay learnable for a tiny model


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(list words, copy sentences); words that occur in a task phrasing are left out so prompts stay unambiguous."""
    template_words = frozenset(w.strip("{}:?.,").lower() for phrasings in _TEMPLATES.values() for p in phrasings for w in p.split())
    return tuple(builtin_words(300, exclude=template_words)), tuple(builtin_sentences())


def builtin_tasks(split: str, n: int, seed: int = 0, kinds: Sequence[str] | None = None) -> list[Task]:
    words, sentences = vocabulary()
    return make_tasks(split, n, seed=seed, kinds=list(kinds) if kinds else None, sentences=sentences, words=words, max_number=MAX_NUMBER)


def builtin_pairs(split: str, n: int, seed: int = 0, kinds: Sequence[str] | None = None) -> list[PreferencePair]:
    """Pairs whose chosen reply is correct and whose rejected reply is a plausible wrong one."""
    words, sentences = vocabulary()
    pairs = make_preference_pairs(split, n, seed=seed, sentences=sentences, kinds=list(kinds) if kinds else None, words=words, max_number=MAX_NUMBER)
    return [
        PreferencePair([{"role": "user", "content": p.task.prompt}], p.chosen, p.rejected, p.kind, True, p.rejected_complete)
        for p in pairs
    ]
