"""The rankings:FILE source: the raters data.raters chooses, each prompt wholly on one side of the split."""

import pytest

from llm.chat import Reply
from llm.data.rankings import Ranking
from llm.data.sources import ranking_source
from llm.errors import ConfigError
from llm.feedback.rankings import RankingFile


def two_raters_file(path, prompts=40):
    """Every prompt ranked by ana (a > b > c) and bo (c > b > a)."""
    store = RankingFile(path)
    for i in range(prompts):
        for rater, order in (("ana", [[0], [1], [2]]), ("bo", [[2], [1], [0]])):
            store.add(Ranking([{"role": "user", "content": f"q{i}"}], [Reply("a"), Reply("b"), Reply("c")], order, rater=rater))
    return path


@pytest.mark.parametrize("raters, pairs_per_prompt", [(["all"], 6), (["bo"], 3), (["ana", "bo"], 6), (["majority"], 0)])
def test_each_prompt_stays_on_one_side_of_the_split_whatever_the_raters(tmp_path, raters, pairs_per_prompt):
    path = two_raters_file(tmp_path / "r.jsonl")
    train, val = ranking_source(str(path), 0.5, 0, raters)()
    assert len(train) + len(val) == 40 * pairs_per_prompt
    split = {i: ("train" if i in ids(train) else "") + ("val" if i in ids(val) else "") for i in range(40)}
    assert set(split.values()) <= {"train", "val", ""}  # never both
    if pairs_per_prompt:
        reference = ranking_source(str(path), 0.5, 0, ["all"])()
        assert (ids(train), ids(val)) == tuple(map(ids, reference))  # the same prompts held out as with all raters
        assert ids(train) and ids(val)


def ids(pairs):
    return {int(p.prompt[0]["content"][1:]) for p in pairs}


def test_a_rater_name_not_in_the_file_fails_naming_the_key_and_the_file(tmp_path):
    path = two_raters_file(tmp_path / "r.jsonl", prompts=1)
    with pytest.raises(ConfigError, match=f"key 'data.raters': rater 'chen' ranked nothing in {path}"):
        ranking_source(str(path), 0.1, 0, ["chen"])()
