"""How well a reward model agrees with rankings (pairwise accuracy, how often its top-scored reply is ranked
best), and how well the raters of one rankings file agree with each other."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch

from llm.data.pairs import PairExample, tokenize_pairs
from llm.data.rankings import Ranking, load_rankings, ranking_pairs
from llm.data.sampled_pairs import KIND as SAMPLE_KIND
from llm.data.several_raters import by_prompt, orders
from llm.eval.stats import paired_comparison, wilson_interval
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


def rater_agreement(rankings: Sequence[Ranking]) -> dict:
    """Inter-rater agreement as InstructGPT reported it (~73% among its labelers): on every prompt two or more
    raters ranked, for every two raters and every two replies both ordered (neither tied them), the share
    ordered the same way; overall and per rater pair, each with its count of pairs and 95% Wilson interval."""
    counts: dict[tuple[str, str], list[int]] = {}  # (rater, rater) -> [same order, pairs]
    prompts = 0
    for entries in by_prompt(rankings).values():
        ordered = {e.rater: set(orders(e)) for e in entries if e.status == "ranked"}
        if len(ordered) < 2:
            continue
        prompts += 1
        for first, second in combinations(sorted(ordered), 2):
            count = counts.setdefault((first, second), [0, 0])
            for better, worse in ordered[first]:
                if (better, worse) in ordered[second]:
                    count[0] += 1
                    count[1] += 1
                elif (worse, better) in ordered[second]:
                    count[1] += 1
    same, pairs = (sum(c[i] for c in counts.values()) for i in (0, 1))
    return {"prompts_with_several_raters": prompts, **share(same, pairs),
            "by_rater_pair": {f"{a} vs {b}": share(*count) for (a, b), count in sorted(counts.items())}}


def share(same: int, pairs: int) -> dict:
    return {"pairs": pairs, "agreement": same / pairs if pairs else None, "interval_95": wilson_interval(same, pairs)}


def rankings_file_report(path: str, scored: tuple | None = None, against: tuple | None = None) -> list[dict]:
    """What `score.py --rankings` prints, one JSON line each: the file's rater agreement with, given `scored`
    (model, tokenizer), that reward model's figures; and given `against` (a second model, tokenizer) the two
    models compared pair by pair (sign test)."""
    rankings = load_rankings(path)
    report = {"rankings_file": path}
    if scored is None:
        return [{**report, "raters": rater_agreement(rankings)}]
    result = rankings_agreement(scored[0], scored[1], rankings, scored[0].config.block_size, scored[1].pad_id)
    verdicts = result.pop("verdicts")
    lines = [{**report, **result, "raters": rater_agreement(rankings)}]
    if against is not None:
        other = rankings_agreement(against[0], against[1], rankings, against[0].config.block_size, against[1].pad_id)
        paired = paired_comparison(other.pop("verdicts"), verdicts)  # fixed: pairs the scored model gets and `against` misses
        lines.append({"against": other, "paired": paired})
    return lines
