"""The ranking session: tabs hold distinct prompts, a restart never repeats one, undo puts it back."""

import itertools

import pytest

from llm.chat import Reply
from llm.errors import DataError
from llm.feedback.rankings import RankingFile
from llm.feedback.session import Item, RankingSession, builtin_items, file_items


def fake_sample(prompts, seed):
    return [[Reply(f"{p[-1]['content']} #{seed % 97} r{i}") for i in range(3)] for p in prompts]


def items(n=10):
    return iter([Item([{"role": "user", "content": f"q{i}"}]) for i in range(n)])


def session(path, n=10):
    return RankingSession(RankingFile(path), items(n), fake_sample, target=5, checkpoint="ck", sampling={"k": 3})


def test_each_tab_keeps_its_prompt_across_reloads_and_two_tabs_never_share_one(tmp_path):
    s = session(tmp_path / "r.jsonl")
    a, b = s.current("tab-a"), s.current("tab-b")
    assert a.id != b.id
    assert s.current("tab-a") is a and s.current("tab-a").replies == a.replies


def test_a_restart_never_shows_a_prompt_already_given(tmp_path):
    path = tmp_path / "r.jsonl"
    s = session(path)
    shown = []
    for status in ("ranked", "skipped", "all_bad"):
        item = s.current()
        shown.append(item.prompt[0]["content"])
        s.give(item.id, [[0], [2], [1]] if status == "ranked" else [], status)
    assert shown == ["q0", "q1", "q2"]
    assert s.progress() == {"ranked": 1, "done": 3, "target": 5}
    restarted = session(path)
    assert restarted.current().prompt[0]["content"] == "q3"
    records = RankingFile(path).in_force()
    assert [r.status for r in records.values()] == ["ranked", "skipped", "all_bad"]
    assert all(r.checkpoint == "ck" and r.sampling == {"k": 3} for r in records.values())


def test_giving_for_a_prompt_the_tab_does_not_hold_is_refused(tmp_path):
    s = session(tmp_path / "r.jsonl")
    a, b = s.current("a"), s.current("b")
    with pytest.raises(ValueError, match="not the one this tab shows"):
        s.give(b.id, [[0], [1], [2]], tab="a")
    s.give(a.id, [[0], [1], [2]], tab="a")
    with pytest.raises(ValueError, match="not the one this tab shows"):
        s.give(a.id, [[0], [1], [2]], tab="a")  # a second submit of the same ranking


def test_undo_withdraws_the_tabs_last_ranking_and_shows_its_replies_again(tmp_path):
    path = tmp_path / "r.jsonl"
    s = session(path)
    first = s.current()
    s.give(first.id, [[2], [1], [0]])
    s.current()  # the next prompt, now held
    back = s.undo()
    assert back.id == first.id and back.replies == first.replies
    assert RankingFile(path).in_force() == {}
    assert s.undo() is None
    s.give(first.id, [[0], [1], [2]])
    assert s.current().prompt[0]["content"] == "q1"  # the prompt the undo displaced


def test_a_typed_prompt_becomes_the_tabs_and_the_displaced_one_comes_back(tmp_path):
    s = session(tmp_path / "r.jsonl")
    held = s.current()
    mine = s.type_prompt("  What is Python? ")
    assert mine.prompt == [{"role": "user", "content": "What is Python?"}] and len(mine.replies) == 3
    s.give(mine.id, [[0], [1], [2]])
    assert s.current().id == held.id
    with pytest.raises(ValueError, match="already in the rankings file"):
        s.type_prompt("What is Python?")


def test_prompts_run_out_when_every_one_is_done(tmp_path):
    s = session(tmp_path / "r.jsonl", n=2)
    for _ in range(2):
        s.give(s.current().id, [], "skipped")
    assert s.current() is None


def test_builtin_prompts_carry_their_task_and_files_give_prompts(tmp_path):
    first = list(itertools.islice(builtin_items(), 3))
    assert all(i.task and i.prompt[0]["content"] == i.task.prompt for i in first)
    (tmp_path / "p.jsonl").write_text('{"prompt": "hello"}\n\n{"prompt": [{"role": "user", "content": "hi"}]}\n')
    assert [i.prompt for i in file_items(tmp_path / "p.jsonl")] == [[{"role": "user", "content": "hello"}],
                                                                     [{"role": "user", "content": "hi"}]]
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    assert len(list(file_items(tmp_path / "p.txt"))) == 2
    (tmp_path / "bad.jsonl").write_text('{"prompt": "fine"}\n{"prompt": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected a JSON object with a 'prompt'.*robot"):
        file_items(tmp_path / "bad.jsonl")  # at once, not when the bad prompt's turn comes


def test_two_sessions_on_one_file_never_silently_replace_each_others_answer(tmp_path):
    from llm.data.rankings import load_rankings
    from llm.feedback.rankings import AlreadyRanked

    path = tmp_path / "r.jsonl"
    first, second = session(path), session(path)  # two servers, or serve.py while rank.py --rater fills
    a, b = first.current("t"), second.current("t")
    assert a.id == b.id  # neither knows what the other holds: both show q0
    first.give(a.id, [[0], [1], [2]], tab="t")
    with pytest.raises(AlreadyRanked, match="already ranked by another page"):
        second.give(b.id, [[2], [1], [0]], tab="t")
    assert [e.ranking for e in load_rankings(path)] == [[[0], [1], [2]]]
    assert second.current("t").prompt[0]["content"] == "q1"  # it sees the other's answer and moves on


def test_an_undo_never_withdraws_another_pages_answer_and_a_failed_undo_can_be_retried(tmp_path, monkeypatch):
    from llm.data.rankings import Ranking
    from llm.feedback import rankings
    from llm.feedback.rankings import AlreadyRanked, WriteFailed

    path = tmp_path / "r.jsonl"
    s = session(path)
    given = s.give(s.current("t").id, [[0], [1], [2]], tab="t")
    real = rankings.os.write
    monkeypatch.setattr(rankings.os, "write", lambda fd, data: real(fd, data[:5]))
    with pytest.raises(WriteFailed):
        s.undo("t")
    monkeypatch.setattr(rankings.os, "write", real)
    assert s.undo("t").id == given.id  # the failed undo was kept, not lost
    s.give(given.id, [[1], [0], [2]], tab="t")
    other = RankingFile(path)  # another process withdraws that answer and gives its own
    other.undo(given.id, "person")
    other.add(Ranking(given.prompt, given.replies, [[2], [1], [0]], rater="other"))
    with pytest.raises(AlreadyRanked, match="replaced by another page"):
        s.undo("t")
    assert [key for key in RankingFile(path).in_force()] == [(given.id, "other")]


def test_an_abandoned_tabs_prompt_goes_to_the_next_tab_after_the_hold_expires(tmp_path):
    now = [0.0]
    s = RankingSession(RankingFile(tmp_path / "r.jsonl"), items(5), fake_sample, hold_s=600, clock=lambda: now[0])
    abandoned = [s.current(f"unused-{i}").id for i in range(5)]  # five tabs opened and closed
    assert s.current("rater") is None
    now[0] = 601.0
    mine = s.current("rater")
    assert mine is not None and mine.id in abandoned
    s.give(mine.id, [[0], [1], [2]], tab="rater")
    with pytest.raises(ValueError, match="not the one this tab shows"):
        s.give(abandoned[0], [[0], [1], [2]], tab="unused-0")  # a tab coming back after the hold finds it gone


def test_an_answer_does_not_wait_while_another_tab_samples(tmp_path):
    import threading

    started, finish = threading.Event(), threading.Event()

    def slow_sample(prompts, seed):
        if prompts[0][0]["content"] == "q1":
            started.set()
            finish.wait(30)
        return fake_sample(prompts, seed)

    s = RankingSession(RankingFile(tmp_path / "r.jsonl"), items(), slow_sample)
    first = s.current("a")
    sampling = threading.Thread(target=s.current, args=("b",))
    sampling.start()
    assert started.wait(30)
    try:
        answered = threading.Thread(target=s.give, args=(first.id, [[0], [1], [2]], "ranked", "a"))
        answered.start()
        answered.join(5)
        assert not answered.is_alive(), "the answer waited behind another tab's sampling"
    finally:
        finish.set()
        sampling.join(30)
    assert s.current("b").prompt[0]["content"] == "q1"


def test_the_model_lock_is_granted_in_the_order_asked():
    import threading
    import time

    from llm.feedback.replies import FairLock

    lock, order = FairLock(), []
    lock.acquire()

    def take(name):
        with lock:
            order.append(name)

    waiters = []
    for name in ("sampler", "second"):
        waiters.append(threading.Thread(target=take, args=(name,)))
        waiters[-1].start()
        while len(lock.waiting) < len(waiters):
            time.sleep(0.001)
    lock.release()
    take("worker again")  # the chat worker, re-taking the lock at once, goes behind those already waiting
    for waiter in waiters:
        waiter.join(10)
    assert order == ["sampler", "second", "worker again"]
    assert lock.acquire(timeout=0.01) and not lock.acquire(timeout=0.01)


def test_each_prompt_goes_to_n_distinct_raters_who_rank_the_same_replies_and_never_see_it_twice(tmp_path):
    path = tmp_path / "r.jsonl"
    s = RankingSession(RankingFile(path), items(3), fake_sample, raters_per_prompt=2)
    ana = s.current("a", "ana")
    assert s.current("b", "bo").id == ana.id  # another rater may hold the same prompt at once
    assert s.current("a2", "ana").id != ana.id  # another tab of the same rater may not
    s.give(ana.id, [[0], [1], [2]], tab="a")
    assert s.current("a", "ana").id != ana.id  # never the prompt ana answered
    s.give(ana.id, [[2], [1], [0]], tab="b")
    assert s.current("c", "chen").id != ana.id  # two raters answered it: done
    entries = RankingFile(path).in_force()
    assert list(entries) == [(ana.id, "ana"), (ana.id, "bo")]
    assert entries[(ana.id, "ana")].replies == entries[(ana.id, "bo")].replies


def test_a_restarted_session_gives_a_prompt_to_a_second_rater_with_the_first_raters_replies(tmp_path):
    path = tmp_path / "r.jsonl"
    first = RankingSession(RankingFile(path), items(2), fake_sample, raters_per_prompt=2, rater="ana")
    for _ in range(2):
        first.give(first.current().id, [[0], [1], [2]])
    assert first.current() is None  # ana answered both: nothing left for her
    given = [e.replies for e in RankingFile(path).in_force().values()]
    second = RankingSession(RankingFile(path), items(2), lambda prompts, seed: pytest.fail("sampled again"),
                            raters_per_prompt=2, rater="bo")
    for replies in given:
        item = second.current()
        assert item.replies == replies
        second.give(item.id, [[2], [1], [0]])
    assert second.current() is None and len(RankingFile(path).in_force()) == 4


def test_an_undo_withdraws_the_tabs_raters_answer_only(tmp_path):
    path = tmp_path / "r.jsonl"
    s = RankingSession(RankingFile(path), items(3), fake_sample, raters_per_prompt=2)
    item = s.current("a", "ana")
    assert s.current("b", "bo").id == item.id
    s.give(item.id, [[0], [1], [2]], tab="a")
    s.give(item.id, [[2], [1], [0]], tab="b")
    assert s.undo("a", "bo") is None  # bo cannot undo through ana's tab
    assert s.undo("b", "bo").id == item.id
    assert [e.rater for e in RankingFile(path).in_force().values()] == ["ana"]
    assert s.current("b").id == item.id  # back before bo, who may rank it again
