"""Simulated people rank by their stated rubric; noise reverses that share of rankings."""

import random

import pytest

from llm.chat import Reply
from llm.data.tasks import Task
from llm.feedback.raters import noisy, rate

TASK = Task("repeat", "Say cat 2 times.", "cat cat")
REPLIES = [Reply("Sure! cat cat"), Reply("cat"), Reply("cat cat"), Reply("cat cat (I may be wrong)"), Reply("cat cat", finished=False)]


def test_the_checker_ranks_correct_finished_replies_first_and_ties_the_rest():
    assert rate(TASK, REPLIES, "checker") == [[0, 2, 3], [1, 4]]


def test_a_style_rater_puts_its_style_first_among_correct_replies():
    assert rate(TASK, REPLIES, "plain") == [[2], [0, 3], [1, 4]]
    assert rate(TASK, REPLIES, "filler") == [[0], [2, 3], [1, 4]]


def test_noise_reverses_about_that_share_of_rankings():
    rng = random.Random(0)
    order = [[2], [0, 3], [1, 4]]
    reversed_ = sum(noisy(order, 0.2, rng) != order for _ in range(5000))
    assert 900 < reversed_ < 1100
    assert noisy(order, 0.0, rng) == order


def test_an_unknown_rater_is_named():
    from llm.errors import ConfigError
    from llm.feedback.raters import check_rater

    with pytest.raises(ConfigError, match="unknown rater 'kind'; raters are checker, plain, filler, disclaimer"):
        check_rater("kind")
