"""A rater program fills the rankings file unattended; a rerun continues it; noise leaves the replies alone."""

import pytest

from llm.chat import Reply
from llm.data.rankings import load_rankings
from llm.data.tasks import Task
from llm.errors import ConfigError
from llm.feedback.rankings import RankingFile
from llm.feedback.session import Item
from llm.feedback.simulate import simulate


def tasks(n=40):
    for i in range(n):
        task = Task("repeat", f"Say w{i} 2 times.", f"w{i} w{i}")
        yield Item([{"role": "user", "content": task.prompt}], task)


def sample(prompts, seed):
    """Four replies per prompt: correct plain, correct with filler, wrong, and one that depends on the seed."""
    out = []
    for p in prompts:
        word = p[0]["content"].split()[1]
        out.append([Reply(f"{word} {word}"), Reply(f"Sure! {word} {word}"), Reply(word), Reply(f"{word} #{seed % 10}")])
    return out


def test_a_rater_ranks_the_target_count_and_a_rerun_adds_only_what_is_missing(tmp_path):
    path = tmp_path / "r.jsonl"
    assert simulate(RankingFile(path), tasks(), sample, "plain", count=10, batch=4) == 10
    assert simulate(RankingFile(path), tasks(), sample, "plain", count=25, batch=4) == 15
    entries = load_rankings(path)
    assert len({e.id for e in entries}) == 25
    assert all(e.ranking == [[0], [1], [2, 3]] and e.rater == "plain" for e in entries)


def test_noise_reverses_a_share_of_rankings_of_the_same_replies(tmp_path):
    clean = RankingFile(tmp_path / "clean.jsonl")
    noisy = RankingFile(tmp_path / "noisy.jsonl")
    simulate(clean, tasks(), sample, "plain", count=40, seed=3)
    simulate(noisy, tasks(), sample, "plain", count=40, noise=0.5, seed=3)
    pairs = list(zip(load_rankings(clean.path), load_rankings(noisy.path)))
    assert all(a.replies == b.replies for a, b in pairs)
    flipped = [b.ranking for a, b in pairs if a.ranking != b.ranking]
    assert 8 <= len(flipped) <= 32 and all(r == [[2, 3], [1], [0]] for r in flipped)
    assert {b.rater for _, b in pairs} == {"plain noise=0.5"}


def test_a_rater_needs_prompts_with_known_answers(tmp_path):
    typed = iter([Item([{"role": "user", "content": "What is Python?"}])])
    with pytest.raises(ConfigError, match="needs built-in prompts"):
        simulate(RankingFile(tmp_path / "r.jsonl"), typed, sample, "checker", count=1)


def test_a_second_rater_ranks_the_first_raters_replies_and_a_prompt_stops_at_n_raters(tmp_path):
    path = tmp_path / "r.jsonl"
    assert simulate(RankingFile(path), tasks(), sample, "plain", count=5, batch=4, raters_per_prompt=2) == 5
    seeded = {e.id: e.replies for e in load_rankings(path)}
    asked = []

    def recording(prompts, seed):
        return asked.extend(p[0]["content"] for p in prompts) or sample(prompts, seed)

    assert simulate(RankingFile(path), tasks(), recording, "filler", count=12, batch=4, raters_per_prompt=2) == 7
    assert asked == ["Say w5 2 times.", "Say w6 2 times."]  # plain's prompts keep the replies plain ranked
    assert simulate(RankingFile(path), tasks(), sample, "disclaimer", count=14, batch=4, raters_per_prompt=2) == 2
    by_prompt = {}
    for e in load_rankings(path):
        by_prompt.setdefault(e.id, []).append(e)
    # filler second-ranks plain's 5 prompts and starts 2 more, which disclaimer completes: 7 prompts, 2 raters each
    assert [[e.rater for e in entries] for entries in by_prompt.values()] == [["plain", "filler"]] * 5 + [["filler", "disclaimer"]] * 2
    assert all(by_prompt[id_][1].replies == replies for id_, replies in seeded.items())
