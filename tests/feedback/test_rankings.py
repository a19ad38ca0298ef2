"""The rankings file: its appends survive concurrency and interruption, an undo withdraws, rankings become pairs."""

import json
import threading

import pytest

from llm.chat import Reply
from llm.data.rankings import Ranking, in_validation, load_rankings, ranking_pairs, read_lines
from llm.errors import DataError
from llm.feedback.rankings import AlreadyRanked, RankingFile, not_answered

PROMPT = [{"role": "user", "content": "Say cat 2 times."}]


def ranking(order, prompt=PROMPT, texts=("a", "b", "c", "d"), status="ranked"):
    return Ranking(prompt, [Reply(t) for t in texts], order, status)


def test_a_strict_ranking_of_k_replies_gives_k_choose_2_pairs_best_over_worse():
    pairs = ranking_pairs(ranking([[2], [0], [3], [1]]))
    assert [(p.chosen, p.rejected) for p in pairs] == [("c", "a"), ("c", "d"), ("c", "b"), ("a", "d"), ("a", "b"), ("d", "b")]
    assert {p.group for p in pairs} == {ranking([[0], [1], [2], [3]]).id + ":person"}  # one group per rater's ranking


def test_tied_replies_give_no_pair_and_skipped_or_all_bad_give_none():
    pairs = ranking_pairs(ranking([[0, 1], [2, 3]]))
    assert sorted((p.chosen, p.rejected) for p in pairs) == [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]
    assert ranking_pairs(ranking([], status="skipped")) == []
    assert ranking_pairs(ranking([], status="all_bad")) == []


def test_identical_replies_ranked_apart_give_no_pair_and_an_unfinished_reply_keeps_its_flag():
    entry = Ranking(PROMPT, [Reply("x"), Reply("x"), Reply("x", finished=False)], [[0], [1], [2]])
    pairs = ranking_pairs(entry)
    assert [(p.chosen_complete, p.rejected_complete) for p in pairs] == [(True, False), (True, False)]


@pytest.mark.parametrize("order", [[[0], [1], [2]], [[0], [1], [2], [3], [3]], [[0, 1], [], [2, 3]], [[0], [1], [2], [4]]])
def test_a_ranking_that_does_not_place_every_reply_once_is_refused(order):
    with pytest.raises(ValueError, match="exactly once"):
        ranking(order)


def test_appends_reload_and_an_undo_withdraws_the_latest_entry_for_its_prompt(tmp_path):
    path = tmp_path / "r.jsonl"
    store = RankingFile(path)
    first = store.add(ranking([[0], [1], [2], [3]]))
    other = store.add(ranking([[1], [0], [2], [3]], prompt=[{"role": "user", "content": "Say dog 2 times."}]))
    store.undo(first.id, "person")
    assert list(RankingFile(path).in_force()) == [(other.id, "person")]
    store.add(ranking([[3], [2], [1], [0]]))
    entries = load_rankings(path)
    assert [e.ranking for e in entries] == [[[3], [2], [1], [0]], [[1], [0], [2], [3]]]  # in the order prompts were first given
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_two_threads_and_two_files_on_one_path_never_interleave_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    stores = [RankingFile(path), RankingFile(path)]
    long = ("word " * 2000,) * 4  # lines longer than a page

    def write(store, n):
        for i in range(40):
            store.add(ranking([[0], [1], [2], [3]], [{"role": "user", "content": f"{n}-{i}"}], long))

    threads = [threading.Thread(target=write, args=(stores[n % 2], n)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(load_rankings(path)) == 160
    assert len(path.read_text().splitlines()) == 160


def test_an_unfinished_last_line_is_ignored_by_readers_and_cut_by_the_next_writer(tmp_path):
    path = tmp_path / "r.jsonl"
    RankingFile(path).add(ranking([[0], [1], [2], [3]]))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"id": "abc", "prom')  # a write killed half way
    assert len(read_lines(path)) == 1
    RankingFile(path)
    assert path.read_bytes() == whole


def test_a_malformed_complete_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    RankingFile(path).add(ranking([[0], [1], [2], [3]]))
    with path.open("a") as f:
        f.write('{"prompt": [], "replies": [{"text": "a"}], "ranking": [[5]]}\n')
    with pytest.raises(DataError, match=rf"{path}:2: not a ranking record"):
        load_rankings(path)


def test_the_held_out_split_is_by_prompt_and_stable():
    ids = [f"{i:016x}" for i in range(2000)]
    held = [i for i in ids if in_validation(i, 0.1, 0)]
    assert 150 < len(held) < 250
    assert held == [i for i in ids if in_validation(i, 0.1, 0)]
    assert held != [i for i in ids if in_validation(i, 0.1, 1)]


def short_writes(monkeypatch, keep: int | None):
    """os.write in rankings.py writes only the first `keep` bytes (None: fails with ENOSPC, writing nothing)."""
    import errno
    import os

    from llm.feedback import rankings

    real = os.write

    def write(fd, data):
        if keep is None:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data[:keep])

    monkeypatch.setattr(rankings.os, "write", write)
    return lambda: monkeypatch.setattr(rankings.os, "write", real)


@pytest.mark.parametrize("keep", [163, None])
def test_a_short_or_failed_write_leaves_nothing_and_the_next_answer_is_a_whole_line(tmp_path, monkeypatch, keep):
    from llm.feedback.rankings import WriteFailed

    path = tmp_path / "r.jsonl"
    store = RankingFile(path)
    store.add(ranking([[0], [1], [2], [3]]))
    before = path.read_bytes()
    space_freed = short_writes(monkeypatch, keep)
    with pytest.raises(WriteFailed, match=rf"{path}: the answer was not saved \(.*\); is the disk full\?"):
        store.add(ranking([[1], [0], [2], [3]], prompt=[{"role": "user", "content": "Say dog."}]))
    assert path.read_bytes() == before
    space_freed()
    store.add(ranking([[2], [1], [0], [3]], prompt=[{"role": "user", "content": "Say cow."}]))
    assert [e.prompt[0]["content"] for e in load_rankings(path)] == ["Say cat 2 times.", "Say cow."]
    assert [e.prompt[0]["content"] for e in RankingFile(path).in_force().values()] == ["Say cat 2 times.", "Say cow."]


def test_a_fragment_left_by_another_writer_is_cut_before_the_next_append(tmp_path):
    path = tmp_path / "r.jsonl"
    store = RankingFile(path)
    store.add(ranking([[0], [1], [2], [3]]))
    with path.open("ab") as f:
        f.write(b'{"id": "abc", "prom')  # another process died inside its write, after this one opened the file
    store.add(ranking([[1], [0], [2], [3]], prompt=[{"role": "user", "content": "Say dog."}]))
    assert len(load_rankings(path)) == 2 and path.read_bytes().count(b"\n") == 2


def test_another_processs_answers_are_in_force_without_appending_and_a_stale_answer_is_refused(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "r.jsonl"
    mine = RankingFile(path)
    other = ("import sys; from llm.feedback.rankings import RankingFile; from llm.data.rankings import Ranking; "
             "from llm.chat import Reply; "
             "RankingFile(sys.argv[1]).add(Ranking([{'role': 'user', 'content': 'Say cat 2 times.'}], "
             "[Reply('x'), Reply('y')], [[1], [0]], rater='other'))")
    subprocess.run([sys.executable, "-c", other, str(path)], check=True, timeout=60)
    [theirs] = mine.in_force().values()
    assert theirs.rater == "other"

    with pytest.raises(AlreadyRanked):  # one rater per prompt: the other process's answer stands
        mine.add(ranking([[0], [1], [2], [3]]), check=not_answered(theirs.id, "person"))
    assert [e.rater for e in load_rankings(path)] == ["other"]



def rated(order, rater, prompt=PROMPT):
    return Ranking(prompt, [Reply(t) for t in ("a", "b", "c", "d")], order, rater=rater)


def test_two_raters_on_one_prompt_are_both_in_force_and_a_rater_is_refused_a_second_answer(tmp_path):
    path = tmp_path / "r.jsonl"
    store, id_ = RankingFile(path), rated([[0], [1], [2], [3]], "ana").id
    store.add(rated([[0], [1], [2], [3]], "ana"), check=not_answered(id_, "ana", raters_per_prompt=2))
    store.add(rated([[3], [2], [1], [0]], "bo"), check=not_answered(id_, "bo", raters_per_prompt=2))
    with pytest.raises(AlreadyRanked, match="of yours"):
        store.add(rated([[1], [0], [2], [3]], "ana"), check=not_answered(id_, "ana", raters_per_prompt=2))
    with pytest.raises(AlreadyRanked, match="by another page"):  # two raters were asked for; a third is not wanted
        store.add(rated([[1], [0], [2], [3]], "chen"), check=not_answered(id_, "chen", raters_per_prompt=2))
    assert [(e.rater, e.ranking[0]) for e in load_rankings(path)] == [("ana", [0]), ("bo", [3])]
    assert list(RankingFile(path).in_force()) == [(id_, "ana"), (id_, "bo")]


def test_an_undo_withdraws_only_its_raters_answer(tmp_path):
    path = tmp_path / "r.jsonl"
    store = RankingFile(path)
    ana = store.add(rated([[0], [1], [2], [3]], "ana"))
    store.add(rated([[3], [2], [1], [0]], "bo"))
    store.undo(ana.id, "ana")
    assert [e.rater for e in load_rankings(path)] == ["bo"]
    store.undo(ana.id, "ana")  # nothing of ana's left: bo's answer stays
    assert [e.rater for e in load_rankings(path)] == ["bo"]


def test_a_file_from_before_several_raters_still_loads_and_its_undo_withdraws_the_prompts_latest(tmp_path):
    path = tmp_path / "r.jsonl"
    replies = [{"text": "a"}, {"text": "b"}]
    lines = [{"prompt": PROMPT, "replies": replies, "ranking": [[0], [1]]},  # no rater, no id
             {"prompt": [{"role": "user", "content": "Say dog."}], "replies": replies, "ranking": [[1], [0]], "rater": "person"},
             {"undo": Ranking(PROMPT, [Reply("a"), Reply("b")], [[0], [1]]).id}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [(e.prompt[0]["content"], e.rater) for e in load_rankings(path)] == [("Say dog.", "person")]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines[:2]))
    assert [e.rater for e in load_rankings(path)] == ["", "person"]
