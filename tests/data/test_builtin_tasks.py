"""Held out means unseen: no training conversation, pair or RL prompt uses a held-out word or phrasing."""

import re

import pytest

from llm.config import ChatDataConfig, PPOSettings, PreferenceDataConfig
from llm.data import phrasings, sources
from llm.data.builtin_tasks import (
    AXES,
    UNSEEN_AXES,
    builtin_pairs,
    builtin_tasks,
    held_out_pairs,
    held_out_tasks,
    new_words,
    target_token_ids,
    tokens_seen,
    vocabulary,
)
from llm.data.tasks import TASK_KINDS, WORDS, is_correct

DEMO_KINDS = ["first_word", "last_word", "repeat", "count_words"]


def _core_pattern(core: str) -> re.Pattern:
    """A regex that matches a whole prompt asked with a core sentence, in any polite form, whatever its fields hold."""
    parts = re.split(r"\{\w+\}", core)
    body = r".+?".join(re.escape(part) for part in parts)
    return re.compile(rf"(?:please |could you |can you )?{body}[?.!]?(?:, please\.)?", re.IGNORECASE)


NEW_CORES = [_core_pattern(core) for kind in TASK_KINDS for core in phrasings.cores(kind, "new")]


def _words_of(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


def _training_texts() -> list[str]:
    """Every user and assistant text the demo's stages train on: SFT conversations, reward/DPO pairs, PPO prompts."""
    chat = sources.conversations(ChatDataConfig(builtin_train=3000, builtin_val=0, builtin_kinds=[]))
    texts = [m["content"] for conversation in chat.train for m in conversation]
    pairs = sources.preference_pairs(PreferenceDataConfig(builtin_train=2000, builtin_val=0))
    texts += [t for p in pairs.train for t in (p.prompt[0]["content"], p.chosen, p.rejected)]
    prompts = sources.prompts(PPOSettings(builtin_prompts=2000))
    return texts + [p.messages[0]["content"] for p in prompts.train]


@pytest.fixture(scope="module")
def training_texts() -> list[str]:
    return _training_texts()


def test_no_training_text_uses_a_held_out_word(training_texts):
    held_out = set(new_words())
    assert len(held_out) >= 250
    used = set().union(*(_words_of(t) for t in training_texts))
    assert not used & held_out, sorted(used & held_out)[:20]


def test_no_training_prompt_uses_a_held_out_phrasing(training_texts):
    assert NEW_CORES[0].fullmatch("Please " + phrasings.cores("add", "new")[0].format(a=1, b=2) + "?")  # the check can fire
    for text in training_texts:
        assert not any(p.fullmatch(text) for p in NEW_CORES), text


def test_the_phrasing_sets_share_no_core_and_held_out_tasks_use_only_new_ones():
    for kind in TASK_KINDS:
        assert not set(phrasings.cores(kind, "train")) & set(phrasings.cores(kind, "new"))
    for axis in ("new_phrasings", "new_both"):
        for task in held_out_tasks(axis, 200, 0):
            assert any(p.fullmatch(task.prompt) for p in NEW_CORES), task.prompt


def test_the_word_pool_is_large_multi_token_and_disjoint_from_the_new_words():
    words, weights, _ = vocabulary()
    assert len(words) >= 3000 and len(weights) == len(words) and min(weights) > 0
    assert not set(words) & set(new_words()) and not set(words) & set(WORDS)
    assert not (set(words) | set(new_words())) & phrasings.template_words()
    drawn = {w for t in builtin_tasks("train", 4000, 0, ["first_word"]) for w in t.prompt.rsplit(": ", 1)[1].rstrip("?.!").split()}
    assert len(drawn) >= 1500  # the draws reach far down the ranking, not a few hundred frequent words


def test_held_out_axes_use_their_words_and_are_answered_right_by_the_checker():
    pool, fresh = set(vocabulary()[0]), set(new_words())
    for axis in AXES:
        tasks = held_out_tasks(axis, 120, 0, DEMO_KINDS)
        operands = set().union(*(_words_of(t.answer) for t in tasks if t.kind != "count_words"))
        assert operands <= (fresh if axis in ("new_words", "new_both") else pool), axis
        assert all(is_correct(t, t.answer) for t in tasks)
    with pytest.raises(ValueError, match="'nope'"):
        held_out_tasks("nope", 3)


def test_held_out_pairs_prefer_the_right_answer_on_each_unseen_axis():
    for axis in UNSEEN_AXES:
        pairs = held_out_pairs(axis, 40, 0, DEMO_KINDS)
        assert len(pairs) == 40 and all(p.chosen != p.rejected for p in pairs)
    assert builtin_pairs("train", 5, 0) != held_out_pairs("new_both", 5, 0)


def test_number_words_and_polite_forms_occur_in_training_prompts():
    prompts = [t.prompt for t in builtin_tasks("train", 3000, 0, DEMO_KINDS)]
    assert any(" three times" in p for p in prompts) and any(" 3 times" in p for p in prompts)
    assert any(p.endswith(" twice") or " twice" in p for p in prompts)
    assert any(p.startswith("Please ") for p in prompts) and any(p.startswith(("Could you", "Can you")) for p in prompts)
    assert any(not p.endswith(("?", ".", "!")) for p in prompts)


def test_token_coverage_is_every_token_of_the_answer():
    encode = {"red fox": [1, 2], "red": [1], "owl": [3]}.__getitem__
    seen = target_token_ids(encode, ["red fox"])
    assert seen == {1, 2}
    assert tokens_seen(encode, "red", seen) and not tokens_seen(encode, "owl", seen)
