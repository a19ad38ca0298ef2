"""A reward model's agreement with a rankings file, by hand on a model whose score is a reply's last token id."""

import torch

from llm.eval.rankings import rankings_agreement
from llm.feedback.rankings import Ranking, Reply


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
