"""The built-in task set: answers recomputed independently from the prompts, the held-out split, pairs."""

import re
from collections import Counter

import pytest

from llm.data import tasks as tasks_module
from llm.data.tasks import (
    REJECTION_KINDS,
    TASK_KINDS,
    Task,
    TaskPair,
    exact_match,
    is_correct,
    make_preference_pairs,
    make_tasks,
    normalize_reply,
)

LIST_KINDS = ("reverse_words", "sort_words", "count_words", "first_word", "last_word", "uppercase")


def _numbers(prompt: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", prompt)]


def _list_operands(prompt: str) -> list[str]:
    return prompt.rsplit(": ", 1)[1].rstrip("?.!").split()


_NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5}


def _repeat_operands(prompt: str) -> tuple[str, int]:
    found = re.search(r"(\w+) (?:(\d+|two|three|four|five) times|twice)\b", prompt)
    count = found.group(2)
    return found.group(1), int(_NUMBER_WORDS.get(count, count)) if count else 2


def _content(task: Task) -> tuple:
    """Canonical content read back from the prompt alone, phrasing ignored."""
    if task.kind == "add":
        return tuple(sorted(_numbers(task.prompt)))
    if task.kind == "subtract":
        return tuple(sorted(_numbers(task.prompt), reverse=True))
    if task.kind == "repeat":
        return _repeat_operands(task.prompt)
    if task.kind == "copy":
        return (task.prompt.split(": ", 1)[1],)
    words = _list_operands(task.prompt)
    return tuple(sorted(words)) if task.kind == "sort_words" else tuple(words)


def _expected_answer(task: Task) -> str:
    if task.kind == "add":
        return str(sum(_numbers(task.prompt)))
    if task.kind == "subtract":
        big, small = sorted(_numbers(task.prompt), reverse=True)
        return str(big - small)
    if task.kind == "repeat":
        word, count = _repeat_operands(task.prompt)
        return " ".join([word] * count)
    if task.kind == "copy":
        return task.prompt.split(": ", 1)[1]
    words = _list_operands(task.prompt)
    return {
        "reverse_words": " ".join(words[::-1]),
        "sort_words": " ".join(sorted(words)),
        "count_words": str(len(words)),
        "first_word": words[0],
        "last_word": words[-1],
        "uppercase": " ".join(words).upper(),
    }[task.kind]


def _phrasing(task: Task) -> str:
    if ": " in task.prompt:
        return task.prompt.rsplit(": ", 1)[0]
    if task.kind == "repeat":
        return re.sub(r"\w+ \d+", "W N", task.prompt)
    return re.sub(r"\d+", "N", task.prompt)


def test_generation_is_deterministic_and_prefix_stable():
    first = make_tasks("train", 200, seed=3)
    assert first == make_tasks("train", 200, seed=3)
    assert first != make_tasks("train", 200, seed=4)
    assert make_tasks("train", 57, seed=3) == first[:57]
    assert make_preference_pairs("val", 60, seed=1) == make_preference_pairs("val", 60, seed=1)


def test_kinds_take_turns():
    counts = Counter(task.kind for task in make_tasks("train", 10 * len(TASK_KINDS)))
    assert counts == {kind: 10 for kind in TASK_KINDS}
    assert {task.kind for task in make_tasks("val", 30, kinds=["add", "copy"])} == {"add", "copy"}
    assert make_tasks("train", 0) == []


def test_train_and_val_never_share_content():
    train = {(t.kind, _content(t)) for t in make_tasks("train", 6000, seed=0)}
    val = {(t.kind, _content(t)) for t in make_tasks("val", 3000, seed=5)}
    assert not train & val
    assert {kind for kind, _ in val} == set(TASK_KINDS)
    # The same content keeps its split under another seed and n.
    assert not {(t.kind, _content(t)) for t in make_tasks("train", 3000, seed=9)} & val


def test_every_answer_matches_an_independent_computation():
    for task in make_tasks("train", 2000, seed=2) + make_tasks("val", 500, seed=2):
        assert task.answer == _expected_answer(task), task
        assert task.answer == normalize_reply(task.answer)
        assert len(task.prompt.split()) <= 25 and len(task.answer.split()) <= 12, task


def test_instances_mix_sizes_within_bounds():
    tasks = make_tasks("train", 3000, seed=0)
    list_sizes = {len(_list_operands(t.prompt)) for t in tasks if t.kind in ("reverse_words", "sort_words")}
    assert list_sizes == {2, 3, 4, 5}
    numbers = [x for t in tasks if t.kind in ("add", "subtract") for x in _numbers(t.prompt)]
    assert min(numbers) == 0 and max(numbers) == tasks_module.MAX_NUMBER
    assert all(int(t.answer) >= 0 for t in tasks if t.kind == "subtract")
    for task in tasks:
        if task.kind in LIST_KINDS:
            words = _list_operands(task.prompt)
            assert len(set(words)) == len(words)


def test_each_kind_has_at_least_three_phrasings():
    phrasings: dict[str, set[str]] = {}
    for task in make_tasks("train", 1000, seed=0):
        phrasings.setdefault(task.kind, set()).add(_phrasing(task))
    assert all(len(phrasings[kind]) >= 3 for kind in TASK_KINDS), phrasings


def test_vocabulary_is_simple_distinct_lowercase():
    words = tasks_module.WORDS
    assert len(words) >= 250 and len(set(words)) == len(words)
    assert all(word.isalpha() and word.islower() for word in words)


def test_normalize_and_is_correct():
    task = Task("uppercase", "Write in capital letters: red fox", "RED FOX")
    assert normalize_reply("  RED \n\t FOX  ") == "RED FOX"
    assert is_correct(task, "  RED   FOX\n")
    assert not is_correct(task, "red fox")  # case counts
    assert not is_correct(task, "RED FOX.")  # punctuation counts
    assert not is_correct(task, "RED")
    assert is_correct(Task("add", "What is 7 + 5?", "12"), " 12 ")
    assert not is_correct(Task("add", "What is 7 + 5?", "12"), "13")


def test_exact_match_on_a_hand_example():
    tasks = [
        Task("add", "What is 1 + 1?", "2"),
        Task("add", "What is 2 + 2?", "4"),
        Task("first_word", "Give the first word of: cat dog", "cat"),
        Task("repeat", "Say hi 2 times.", "hi hi"),
    ]
    result = exact_match(tasks, ["2", "5", " cat ", "hi"])
    assert result == {"accuracy": 0.5, "n": 4, "by_kind": {"add": 0.5, "first_word": 1.0, "repeat": 0.0}}
    assert exact_match([], []) == {"accuracy": 0.0, "n": 0, "by_kind": {}}
    with pytest.raises(ValueError, match="2 tasks but 1 replies"):
        exact_match(tasks[:2], ["2"])


def test_bad_split_or_kind_is_named():
    with pytest.raises(ValueError, match="'test'"):
        make_tasks("test", 5)
    with pytest.raises(ValueError, match="'multiply'"):
        make_tasks("train", 5, kinds=["add", "multiply"])
    with pytest.raises(ValueError, match="'dev'"):
        make_preference_pairs("dev", 5)
    with pytest.raises(ValueError, match="n must be"):
        make_tasks("train", -1)


def test_copy_uses_the_given_sentences():
    sentences = [f"sentence number {i} is   here." for i in range(60)] + ["too long " * 10]
    normalized = {" ".join(s.split()) for s in sentences[:60]}
    train = make_tasks("train", 100, kinds=["copy"], sentences=sentences)
    val = make_tasks("val", 30, kinds=["copy"], sentences=sentences)
    assert {t.answer for t in train} <= normalized and {t.answer for t in val} <= normalized
    assert not {t.answer for t in train} & {t.answer for t in val}
    # Without sentences, copy builds its own short ones.
    assert all(t.answer.endswith(".") and len(t.answer.split()) <= 12 for t in make_tasks("train", 50, kinds=["copy"]))


def test_a_sentence_list_missing_from_a_split_is_an_error():
    outcomes = []
    for split in ("train", "val"):
        try:
            make_tasks(split, 3, kinds=["copy"], sentences=["the only sentence."])
            outcomes.append("ok")
        except ValueError as error:
            assert repr(split) in str(error)
            outcomes.append("error")
    assert sorted(outcomes) == ["error", "ok"]


def test_pairs_prefer_the_correct_reply():
    pairs = make_preference_pairs("train", 1200, seed=0)
    assert [p.task for p in pairs] == make_tasks("train", 1200, seed=0)
    for pair in pairs:
        assert isinstance(pair, TaskPair) and pair.kind in REJECTION_KINDS
        assert pair.chosen == pair.task.answer and is_correct(pair.task, pair.chosen)
        assert not is_correct(pair.task, pair.rejected), pair
        assert pair.rejected_complete == (pair.kind != "never_stops")
        _check_rejection_shape(pair)
    counts = Counter(p.kind for p in pairs)
    assert set(counts) == set(REJECTION_KINDS)
    assert min(counts.values()) >= len(pairs) / len(REJECTION_KINDS) / 2, counts


def _check_rejection_shape(pair: TaskPair) -> None:
    answer, rejected = pair.task.answer, pair.rejected
    if pair.kind == "off_by_one":
        assert int(rejected) >= 0 and abs(int(rejected) - int(answer)) == 1
    elif pair.kind == "shuffled":
        assert sorted(rejected.split()) == sorted(answer.split())
    elif pair.kind == "truncated":
        assert answer.startswith(rejected) and 0 < len(rejected) < len(answer)
    elif pair.kind == "never_stops":
        assert rejected.startswith(answer + " ")
    elif pair.kind == "wrong_answer" and pair.task.kind in ("add", "subtract", "count_words"):
        assert int(rejected) >= 0


def test_val_pairs_cover_every_rejection_kind():
    pairs = make_preference_pairs("val", 600, seed=3, sentences=[f"a short line {i}." for i in range(100)])
    assert {p.kind for p in pairs} == set(REJECTION_KINDS)
    assert all(not is_correct(p.task, p.rejected) for p in pairs)
