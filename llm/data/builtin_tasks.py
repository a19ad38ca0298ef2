"""The built-in instruction tasks and preference pairs, and the held-out sets that measure what they teach.

Training operands are drawn from the built-in corpus's own ranking of words (several thousand, one to
several tokens each, drawn in proportion to the square root of their frequency), so the model learns to
copy and count token sequences rather than look up a few hundred single-token words. The everyday words
a person types (colours, animals, foods, objects ...; `llm.data.tasks.WORDS`) are held out of that pool,
and so are the phrasings of `llm.data.phrasings`' NEW set. Evaluation asks on four held-out axes:

    builtin       held-out combinations of training words, asked in training phrasings
    new_words     everyday words no training example uses, in training phrasings
    new_phrasings training words, asked in phrasings no training example uses
    new_both      new words in new phrasings: what a person's own prompt is most like

The task generator itself (`llm.data.tasks`) knows nothing of the corpus.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Iterable, Sequence

from llm.data.builtin_corpus import builtin_sentences, builtin_word_counts
from llm.data.phrasings import template_words
from llm.data.preferences import PreferencePair
from llm.data.styles import pick_style, styled
from llm.data.tasks import WORDS, Task, make_preference_pairs, make_tasks

MAX_NUMBER = 20  # two-digit operands are two tokens each; sums up to 40 stay learnable for a tiny model
MIN_OCCURRENCES = 2  # a word seen once in the corpus is often a typo or an identifier fragment
PSEUDO_WORDS = 3000  # made-up words in the training pool: copying one cannot lean on having seen the word
PSEUDO_SHARE = 0.3  # of the draws
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "ch", "cl", "dr", "fl", "gr", "pl", "sh", "sk", "sl", "sp", "st", "th", "tr", "")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "oo", "ou", "y")
_CODAS = ("", "", "n", "r", "s", "t", "l", "m", "k", "nd", "st", "ng", "ck", "x")
AXES = ("builtin", "new_words", "new_phrasings", "new_both")
UNSEEN_AXES = AXES[1:]


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[tuple[str, ...], tuple[float, ...], tuple[str, ...]]:
    """(training words, their draw weights, copy sentences).

    Words of any phrasing are left out so prompts stay unambiguous, and so are the held-out everyday words.
    """
    excluded = template_words() | frozenset(WORDS)
    counted = [(w, math.sqrt(n)) for w, n in builtin_word_counts() if n >= MIN_OCCURRENCES and w not in excluded]
    made_up = pseudo_words(PSEUDO_WORDS, excluded | {w for w, _ in counted})
    # each made-up word weighs the same, together PSEUDO_SHARE of the whole
    weight = PSEUDO_SHARE / (1 - PSEUDO_SHARE) * sum(w for _, w in counted) / len(made_up)
    pool = counted + [(w, weight) for w in made_up]
    held_out = frozenset(WORDS)
    sentences = [s for s in builtin_sentences() if not held_out & set(re.findall(r"[a-z]+", s.lower()))]
    return tuple(w for w, _ in pool), tuple(w for _, w in pool), tuple(sentences)


def pseudo_words(n: int, excluded: frozenset[str] | set[str], seed: int = 0) -> tuple[str, ...]:
    """n distinct pronounceable made-up words of one to three syllables ("shoumpa", "trelk"), none of `excluded`.

    A model that only copies words it has learned fails on a person's words; words it cannot have learned
    as a whole make it learn to copy their tokens, whatever they are.
    """
    rng = random.Random(f"pseudo:{seed}")
    out: dict[str, None] = {}
    while len(out) < n:
        syllables = rng.choice((1, 2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
        if 3 <= len(word) <= 10 and word not in excluded:
            out[word] = None
    return tuple(out)


@functools.lru_cache(maxsize=1)
def new_words() -> tuple[str, ...]:
    """Everyday words (colours, animals, foods, objects, adjectives, verbs) that no built-in training task,
    pair or prompt uses: what a person's own prompt brings."""
    excluded = template_words() | frozenset(vocabulary()[0])
    return tuple(w for w in dict.fromkeys(WORDS) if w not in excluded)


def builtin_tasks(split: str, n: int, seed: int = 0, kinds: Sequence[str] | None = None) -> list[Task]:
    """Tasks of the training pool in training phrasings; "val" holds out combinations (llm/data/tasks.py)."""
    words, weights, sentences = vocabulary()
    return make_tasks(split, n, seed=seed, kinds=list(kinds) if kinds else None, sentences=sentences, words=words,
                      weights=weights, max_number=MAX_NUMBER)


def _held_out_source(axis: str, axes: Sequence[str]) -> dict:
    """make_tasks' arguments for one held-out axis: its words (new everyday words, drawn uniformly, or the training
    pool with its weights and copy sentences) and its phrasing set."""
    if axis not in axes:
        raise ValueError(f"unknown held-out axis {axis!r}; choose from {', '.join(axes)}")
    phrasing_set = "new" if axis in ("new_phrasings", "new_both") else "train"
    if axis in ("new_words", "new_both"):
        return {"words": new_words(), "phrasing_set": phrasing_set}
    words, weights, sentences = vocabulary()
    return {"words": words, "weights": weights, "sentences": sentences, "phrasing_set": phrasing_set}


def held_out_tasks(axis: str, n: int, seed: int = 0, kinds: Sequence[str] | None = None) -> list[Task]:
    """n held-out tasks on one of AXES. New-word tasks draw everyday words uniformly; `copy` then gets
    synthetic sentences of everyday words."""
    source = _held_out_source(axis, AXES)
    return make_tasks("val", n, seed=seed, kinds=list(kinds) if kinds else None, max_number=MAX_NUMBER, **source)


def target_token_ids(tokenize, answers: Iterable[str]) -> frozenset[int]:
    """Every token id that appears in the given replies, as SFT's targets are tokenized (`tokenize(text)` -> ids)."""
    return frozenset(i for answer in answers for i in tokenize(answer))


def tokens_seen(tokenize, answer: str, seen: frozenset[int]) -> bool:
    """Every token of `answer` occurs among the training targets `seen`: copying it needs no token the model
    was never trained to emit."""
    return all(i in seen for i in tokenize(answer))


def builtin_pairs(split: str, n: int, seed: int = 0, kinds: Sequence[str] | None = None, prefer: str = "",
                  style_weights: Sequence[float] | None = None) -> list[PreferencePair]:
    """Pairs whose chosen reply is correct and whose rejected reply is a plausible wrong one.

    With `style_weights` both sides are written in styles as the demonstrations are (llm/data/styles.py):
    the chosen side in the rater's preferred style (`prefer`; drawn from the mix when "" ranks by
    correctness only), the rejected side drawn from the mix.
    """
    words, weights, sentences = vocabulary()
    pairs = make_preference_pairs(split, n, seed=seed, sentences=sentences, kinds=list(kinds) if kinds else None, words=words,
                                  weights=weights, max_number=MAX_NUMBER)
    return [_styled_pair(p, prefer, style_weights) for p in pairs]


def held_out_pairs(axis: str, n: int, seed: int = 0, kinds: Sequence[str] | None = None, prefer: str = "",
                   style_weights: Sequence[float] | None = None) -> list[PreferencePair]:
    """Preference pairs on one of UNSEEN_AXES: the reward model's accuracy where a person's words or phrasings come in."""
    source = _held_out_source(axis, UNSEEN_AXES)
    pairs = make_preference_pairs("val", n, seed=seed, kinds=list(kinds) if kinds else None, max_number=MAX_NUMBER, **source)
    return [_styled_pair(p, prefer, style_weights) for p in pairs]


def _styled_pair(p, prefer: str, style_weights: Sequence[float] | None) -> PreferencePair:
    chosen, rejected = p.chosen, p.rejected
    if style_weights:
        chosen = styled(chosen, prefer, 0) if prefer else styled(chosen, *pick_style(p.task.prompt, style_weights))
        if p.rejected_complete:  # a reply that never stops has no end to write a caveat at
            rejected = styled(rejected, *pick_style(p.task.prompt, style_weights, seed=1))
    return PreferencePair([{"role": "user", "content": p.task.prompt}], chosen, rejected, p.kind, True, p.rejected_complete)
