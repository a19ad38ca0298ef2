"""A reward model's agreement with a rankings file, by hand on a model whose score is a reply's last token id."""

import torch

from llm.chat import Reply
from llm.data.rankings import Ranking
from llm.eval.rankings import rankings_agreement


class LastToken(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, mask):
        return ids.float()


class Letters:
    """A tokenizer stand-in: one id per character (a=1 ...), no end-of-turn, the prompt rendered as [99]."""
    pad_id, end_id = 0, None

    def encode(self, text):
        return [ord(c) - 96 for c in text]


def test_pairwise_accuracy_and_top1_count_what_the_ranker_said(monkeypatch):
    import llm.data.pairs as pairs

    monkeypatch.setattr(pairs, "render_prompt", lambda tok, turns: [99])
    monkeypatch.setattr(pairs, "reply_ids", lambda tok, text, complete: tok.encode(text))
    prompt = [{"role": "user", "content": "q"}]
    # scores are the letters' positions: c=3 > b=2 > a=1
    agree = Ranking(prompt, [Reply("a"), Reply("c"), Reply("b")], [[1], [2], [0]])  # c > b > a: all 3 pairs right
    upset = Ranking([{"role": "user", "content": "r"}], [Reply("a"), Reply("c"), Reply("b")], [[0], [1, 2]])  # a first: 0 of 2
    out = rankings_agreement(LastToken(), Letters(), [agree, upset], max_len=10, pad_id=0)
    assert out["pairs"] == 5 and out["pairwise_accuracy"] == 3 / 5
    assert out["rankings"] == 2 and out["top1_best"] == 0.5
    assert sorted(out["verdicts"].values()) == [False, False, True, True, True]


def test_rater_agreement_counts_pairs_both_raters_ordered_per_rater_pair_with_an_interval():
    from llm.eval.rankings import rater_agreement
    from tests.data.test_several_raters import RANKINGS

    # p1: ana-bo agree on a>c, b>c, not a/b (2 of 3); ana-chen on a>b, a>c (chen tied b, c: 2 of 2);
    # bo-chen on a>c, not a/b (1 of 2). p3: ana-bo disagree (0 of 1). p2 has one rater: not counted.
    out = rater_agreement(RANKINGS)
    assert out["prompts_with_several_raters"] == 2
    assert (out["pairs"], out["agreement"]) == (8, 5 / 8)
    assert {pair: (f["pairs"], f["agreement"]) for pair, f in out["by_rater_pair"].items()} == {
        "ana vs bo": (4, 0.5), "ana vs chen": (2, 1.0), "bo vs chen": (2, 0.5)}
    low, high = out["interval_95"]
    assert low < 5 / 8 < high and out["by_rater_pair"]["ana vs chen"]["interval_95"][1] == 1.0


def test_rater_agreement_of_three_pairs_in_four_and_of_a_file_with_one_rater_per_prompt():
    from llm.eval.rankings import rater_agreement
    from llm.eval.stats import wilson_interval

    replies = [Reply("w"), Reply("x"), Reply("y"), Reply("z")]
    prompt = [{"role": "user", "content": "q"}]
    ana = Ranking(prompt, replies, [[0], [1], [2], [3]], rater="ana")  # w > x > y > z
    bo = Ranking(prompt, replies, [[0, 2], [1, 3]], rater="bo")  # w, y over x, z: w>x, w>z, y>z agree with ana, y>x does not
    out = rater_agreement([ana, bo])
    assert (out["pairs"], out["agreement"], out["interval_95"]) == (4, 0.75, wilson_interval(3, 4))
    assert rater_agreement([ana])["pairs"] == 0 and rater_agreement([ana])["agreement"] is None


def test_score_script_prints_the_raters_agreement_without_a_checkpoint(tmp_path):
    import json
    import subprocess
    import sys

    from llm.feedback.rankings import RankingFile
    from tests.data.test_several_raters import RANKINGS

    store = RankingFile(tmp_path / "r.jsonl")
    for entry in RANKINGS:
        store.add(entry)
    done = subprocess.run([sys.executable, "scripts/score.py", "--rankings", str(store.path), "--raters-only"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["rankings_file"] == str(store.path)
    assert (printed["raters"]["pairs"], printed["raters"]["agreement"]) == (8, 5 / 8)
    missing = subprocess.run([sys.executable, "scripts/score.py", "--rankings", str(store.path)],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "--raters-only" in missing.stderr


def test_the_file_report_puts_the_raters_agreement_beside_the_models_figures(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import llm.data.pairs as pairs
    from llm.eval.rankings import rankings_file_report
    from llm.feedback.rankings import RankingFile

    monkeypatch.setattr(pairs, "render_prompt", lambda tok, turns: [99])
    monkeypatch.setattr(pairs, "reply_ids", lambda tok, text, complete: tok.encode(text))
    model = LastToken()
    model.config = SimpleNamespace(block_size=10)
    store = RankingFile(tmp_path / "r.jsonl")
    for rater, order in (("ana", [[1], [2], [0]]), ("bo", [[1], [0], [2]])):  # c > b > a, and c > a > b
        store.add(Ranking([{"role": "user", "content": "q"}], [Reply("a"), Reply("c"), Reply("b")], order, rater=rater))
    mine, paired = rankings_file_report(str(store.path), (model, Letters()), (model, Letters()))
    assert (mine["pairs"], mine["pairwise_accuracy"], mine["rankings"], mine["top1_best"]) == (6, 5 / 6, 2, 1.0)
    assert (mine["raters"]["pairs"], mine["raters"]["agreement"]) == (3, 2 / 3)
    assert paired["paired"]["n"] == 6 and paired["paired"]["fixed"] == paired["paired"]["broken"] == 0
