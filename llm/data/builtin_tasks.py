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
from llm.data.styles import pick_style, styled
from llm.data.tasks import _TEMPLATES, LIST_WORDS, Task, make_preference_pairs, make_tasks

MAX_NUMBER = 20  # two-digit operands are two tokens each; sums up to 40 stay learnable for a tiny model


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(list words, copy sentences); words that occur in a task phrasing are left out so prompts stay unambiguous."""
    template_words = frozenset(w.strip("{}:?.,").lower() for phrasings in _TEMPLATES.values() for p in phrasings for w in p.split())
    return tuple(builtin_words(300, exclude=template_words)), tuple(builtin_sentences())


def new_words() -> tuple[str, ...]:
    """Everyday words (colours, animals, foods, objects ...) that no built-in training task or pair uses:
    what a person's own prompt brings. Tasks built from them test more than held-out combinations."""
    seen = set(vocabulary()[0])
    return tuple(w for w in LIST_WORDS if w not in seen)


def builtin_tasks(split: str, n: int, seed: int = 0, kinds: Sequence[str] | None = None) -> list[Task]:
    words, sentences = vocabulary()
    return make_tasks(split, n, seed=seed, kinds=list(kinds) if kinds else None, sentences=sentences, words=words, max_number=MAX_NUMBER)


def new_word_tasks(n: int, seed: int = 0, kinds: Sequence[str] | None = None) -> list[Task]:
    """Held-out tasks whose words are new_words(); `copy` gets synthetic sentences of everyday words."""
    return make_tasks("val", n, seed=seed, kinds=list(kinds) if kinds else None, words=new_words(), max_number=MAX_NUMBER)


def builtin_pairs(split: str, n: int, seed: int = 0, kinds: Sequence[str] | None = None, prefer: str = "",
                  style_weights: Sequence[float] | None = None) -> list[PreferencePair]:
    """Pairs whose chosen reply is correct and whose rejected reply is a plausible wrong one.

    With `style_weights` both sides are written in styles as the demonstrations are (llm/data/styles.py):
    the chosen side in the rater's preferred style (`prefer`; drawn from the mix when "" ranks by
    correctness only), the rejected side drawn from the mix.
    """
    words, sentences = vocabulary()
    pairs = make_preference_pairs(split, n, seed=seed, sentences=sentences, kinds=list(kinds) if kinds else None, words=words, max_number=MAX_NUMBER)
    out = []
    for p in pairs:
        chosen, rejected = p.chosen, p.rejected
        if style_weights:
            chosen = styled(chosen, prefer, 0) if prefer else styled(chosen, *pick_style(p.task.prompt, style_weights))
            if p.rejected_complete:  # a reply that never stops has no end to write a caveat at
                rejected = styled(rejected, *pick_style(p.task.prompt, style_weights, seed=1))
        out.append(PreferencePair([{"role": "user", "content": p.task.prompt}], chosen, rejected, p.kind, True, p.rejected_complete))
    return out
