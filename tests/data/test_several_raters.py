"""Several raters of one prompt: the reward stage takes all of them, some by name, or the majority's order."""

import pytest

from llm.chat import Reply
from llm.data.rankings import Ranking
from llm.data.several_raters import majority_pairs, orders, pairs_by_prompt
from llm.errors import ConfigError


def rated(question, order, rater, texts=("a", "b", "c")):
    return Ranking([{"role": "user", "content": question}], [Reply(t) for t in texts[: sum(map(len, order))]], order, rater=rater)


# p1: a > b by ana and chen, b > a by bo; a > c by all three; b > c by ana and bo (chen ties b and c)
# p2: ana alone; p3: ana and bo disagree on their one pair
RANKINGS = [rated("p1", [[0], [1], [2]], "ana"), rated("p1", [[1], [0], [2]], "bo"), rated("p1", [[0], [1, 2]], "chen"),
            rated("p2", [[2], [1], [0]], "ana"), rated("p3", [[0], [1]], "ana"), rated("p3", [[1], [0]], "bo")]


def pair_sets(raters):
    by_prompt = pairs_by_prompt(RANKINGS, raters, "r.jsonl")
    return {RANKINGS[i].prompt[0]["content"]: sorted((p.chosen, p.rejected) for p in by_prompt[RANKINGS[i].id]) for i in (0, 3, 4)}


def test_all_takes_every_raters_pairs_and_names_take_only_theirs():
    assert pair_sets(["all"]) == {"p1": sorted([("a", "b"), ("a", "c"), ("b", "c"),
                                                ("b", "a"), ("b", "c"), ("a", "c"), ("a", "b"), ("a", "c")]),
                                  "p2": [("b", "a"), ("c", "a"), ("c", "b")], "p3": [("a", "b"), ("b", "a")]}
    assert pair_sets(["bo"]) == {"p1": [("a", "c"), ("b", "a"), ("b", "c")], "p2": [], "p3": [("b", "a")]}
    assert pair_sets(["ana", "chen"]) == {"p1": [("a", "b"), ("a", "b"), ("a", "c"), ("a", "c"), ("b", "c")],
                                          "p2": [("b", "a"), ("c", "a"), ("c", "b")], "p3": [("a", "b")]}


def test_majority_takes_the_order_most_raters_gave_and_drops_a_tie_among_raters():
    assert pair_sets(["majority"]) == {"p1": [("a", "b"), ("a", "c"), ("b", "c")],  # 2-1, 3-0, 2-0 (chen tied b, c)
                                       "p2": [("b", "a"), ("c", "a"), ("c", "b")],  # one rater: that rater's order
                                       "p3": []}  # 1-1
    assert {p.group for p in majority_pairs(RANKINGS[:3])} == {RANKINGS[0].id}  # one prompt, one unit of weight


def test_a_reply_is_known_by_its_text_not_its_place():
    swapped = Ranking(RANKINGS[1].prompt, [Reply("b"), Reply("a"), Reply("c")], [[0], [1], [2]], rater="bo")
    assert orders(swapped) == orders(RANKINGS[1])


def test_a_rater_who_ranked_nothing_in_the_file_is_one_line_naming_the_key_and_the_file():
    with pytest.raises(ConfigError, match=r"^key 'data.raters': rater 'zed' ranked nothing in feedback/r.jsonl "
                                          r"\(its raters: 'ana', 'bo', 'chen'\)$"):
        pairs_by_prompt(RANKINGS, ["ana", "zed"], "feedback/r.jsonl")
