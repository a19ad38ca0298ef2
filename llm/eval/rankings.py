"""How well a reward model agrees with rankings: pairwise accuracy, and how often its top-scored reply is ranked best."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm.data.pairs import PairExample, tokenize_pairs
from llm.data.sampled_pairs import KIND as SAMPLE_KIND
from llm.feedback.rankings import Ranking, ranking_pairs
from llm.reward_model import RewardModel, score_sequences
from llm.tokenizer import Tokenizer


def ranked_groups(pairs: list[PairExample]) -> list[tuple[list[list[int]], set[tuple[int, ...]]]]:
    """Per ranked prompt (one ranking, or the rater-ranked samples of one prompt): every reply seen (prompt +
    reply ids) and the best ones, those never ranked below another.

    A ranking's replies are the K that were ranked. The rater-ranked samples (source builtin_samples) also
    hold the ideal reply (the answer in the preferred style) that stands in when no sample is best; since a
    best sample's text is that ideal reply, there top-1 asks whether the rater's best reply scores above
    every sample that is not best, an easier question than picking the best among the samples alone."""
    groups: dict[tuple, tuple[dict, set]] = {}
    for pair in pairs:
        if pair.group:
            key = ("ranking", pair.group)
        elif pair.kind.startswith(SAMPLE_KIND):
            key = ("prompt", tuple(pair.prompt))
        else:
            continue
        replies, worse = groups.setdefault(key, ({}, set()))
        for reply in (pair.chosen, pair.rejected):
            replies.setdefault(tuple(pair.prompt + reply), None)
        worse.add(tuple(pair.prompt + pair.rejected))
    return [([list(seq) for seq in replies], set(replies) - worse) for replies, worse in groups.values()]


@torch.no_grad()
def top1_best(model: RewardModel, groups, pad_id: int) -> float:
    """The share of held-out prompts on which the reward model scores one of the rater's best replies highest."""
    hits = 0
    for sequences, best in groups:
        scores = score_sequences(model, sequences, pad_id)
        hits += tuple(sequences[max(range(len(scores)), key=scores.__getitem__)]) in best
    return hits / len(groups)


@torch.no_grad()
def rankings_agreement(model: RewardModel, tok: Tokenizer, rankings: Sequence[Ranking], max_len: int, pad_id: int) -> dict:
    """{"pairs", "pairwise_accuracy", "rankings", "top1_best", "verdicts"}: the share of the rankings' pairs the
    model orders as the ranker did (a tie in score is a miss), of rankings whose top-scored reply is one ranked
    best, and each pair's verdict by (ranking id, pair number), to compare two models item by item."""
    pairs, _ = tokenize_pairs(tok, [p for r in rankings for p in ranking_pairs(r)], max_len)
    if not pairs:
        return {"pairs": 0, "pairwise_accuracy": float("nan"), "rankings": 0, "top1_best": float("nan"), "verdicts": {}}
    chosen = score_sequences(model, [p.prompt + p.chosen for p in pairs], pad_id)
    rejected = score_sequences(model, [p.prompt + p.rejected for p in pairs], pad_id)
    groups = ranked_groups(pairs)
    verdicts = {(p.group, i): c > r for i, (p, c, r) in enumerate(zip(pairs, chosen, rejected))}
    return {"pairs": len(pairs), "pairwise_accuracy": sum(verdicts.values()) / len(pairs),
            "rankings": len(groups), "top1_best": top1_best(model, groups, pad_id), "verdicts": verdicts}
