from dataclasses import dataclass

import pytest

from llm.data.chat import task_conversation
from llm.data.sampled_pairs import KIND, STYLE_KIND, pairs_from_samples
from llm.data.styles import STYLES, judge, parse_style, pick_style, rank_key, styled
from llm.data.tasks import Task, is_correct

TASK = Task("first_word", "What is the first word in: file value name?", "file")


@dataclass
class Reply:
    text: str
    finished: bool = True


@pytest.mark.parametrize("style", STYLES)
def test_every_style_parses_back_to_its_answer_and_counts_as_correct(style):
    for variant in (0, 1):
        reply = styled("the cat sat.", style, variant)
        assert parse_style(reply) == (style, "the cat sat.")
        assert is_correct(Task("copy", "Copy: the cat sat.", "the cat sat."), reply)


def test_a_reply_with_opener_and_caveat_and_an_unstyled_wrong_reply():
    assert parse_style("Sure! red (I may be wrong)") == ("filler+disclaimer", "red")
    assert parse_style("Sure!") == ("plain", "Sure!")  # nothing inside: not a styled answer
    assert not is_correct(TASK, "Sure! value")


def test_the_rater_ranks_correct_first_then_the_preferred_style():
    plain, filler, wrong = (judge("file", text, True, "plain") for text in ("file", "Sure! file", "value"))
    assert plain.best and not filler.best and filler.correct and not wrong.correct
    assert rank_key(plain, "plain") > rank_key(filler, "plain") > rank_key(wrong, "plain")
    assert not judge("file", "file", False, "plain").correct  # a reply that never stopped is not correct
    assert judge("file", "Sure! file", True, "").best  # correctness only: any style is best


def test_style_mix_of_demonstrations_follows_the_weights():
    styles = [pick_style(f"prompt {i}", (0.2, 0.4, 0.4))[0] for i in range(5000)]
    shares = {s: styles.count(s) / len(styles) for s in STYLES}
    assert abs(shares["plain"] - 0.2) < 0.02 and abs(shares["filler"] - 0.4) < 0.02
    assert pick_style("same prompt", (0.2, 0.4, 0.4)) == pick_style("same prompt", (0.2, 0.4, 0.4))
    assert task_conversation(TASK)[1]["content"] == "file"  # no weights: plain
    reply = task_conversation(TASK, (0.0, 1.0, 0.0))[1]["content"]
    assert parse_style(reply) == ("filler", "file")


def test_rater_ranked_pairs_by_hand():
    replies = [Reply("file"), Reply("Sure! file"), Reply("value"), Reply("file (I may be wrong)"), Reply("Sure! file")]
    pairs = pairs_from_samples(TASK, replies, prefer="plain")
    assert [(p.chosen, p.rejected, p.kind) for p in pairs] == [
        ("file", "Sure! file", STYLE_KIND), ("file", "value", KIND), ("file", "file (I may be wrong)", STYLE_KIND)]
    # no sample in the preferred style: the ideal reply stands in
    pairs = pairs_from_samples(TASK, [Reply("Sure! file")], prefer="plain")
    assert [(p.chosen, p.rejected) for p in pairs] == [("file", "Sure! file")]
    # correctness only: styles are not ranked apart
    assert [(p.chosen, p.rejected) for p in pairs_from_samples(TASK, replies, prefer="")] == [("file", "value")]
