from dataclasses import dataclass

from llm.data.sampled_pairs import KIND, pairs_from_samples
from llm.data.tasks import Task

TASK = Task("first_word", "What is the first word in: file value name?", "file")


@dataclass
class Reply:
    text: str
    finished: bool = True


def test_wrong_samples_are_paired_with_correct_ones():
    pairs = pairs_from_samples(TASK, [Reply("file"), Reply("value"), Reply("name"), Reply("value")])
    assert [(p.chosen, p.rejected) for p in pairs] == [("file", "value"), ("file", "name")]  # duplicates once
    assert all(p.kind == KIND and p.prompt == [{"role": "user", "content": TASK.prompt}] for p in pairs)


def test_reference_answer_stands_in_when_no_sample_is_right_and_unfinished_is_wrong():
    pairs = pairs_from_samples(TASK, [Reply("value"), Reply("file", finished=False)])
    assert [(p.chosen, p.rejected, p.rejected_complete) for p in pairs] == [("file", "value", True), ("file", "file", False)]


def test_all_correct_gives_no_pairs():
    assert pairs_from_samples(TASK, [Reply("file"), Reply(" file ")]) == []
