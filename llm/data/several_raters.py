"""Rankings of one prompt by several raters: the orders they can be compared on, and which raters' pairs
the reward stage takes (data.raters): all, some by name, or the majority's order.

A reply is known by its text and whether it finished, not by its place in the list, so two raters compare
on the same two texts even if their replies came in another order.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm.chat import Reply
from llm.data.preferences import PreferencePair
from llm.data.rankings import Ranking, order_pair, ranking_pairs
from llm.errors import ConfigError
from llm.settings_checks import RATER_CHOICES

ALL, MAJORITY = RATER_CHOICES

Order = tuple[Reply, Reply]  # (better, worse)


def orders(ranking: Ranking) -> list[Order]:
    """The (better, worse) replies a ranking orders, each once, best first; none for ties, skips or all bad."""
    return list(dict.fromkeys(pair_replies(p) for p in ranking_pairs(ranking)))


def pair_replies(pair: PreferencePair) -> Order:
    return Reply(pair.chosen, pair.chosen_complete), Reply(pair.rejected, pair.rejected_complete)


def by_prompt(rankings: Sequence[Ranking]) -> dict[str, list[Ranking]]:
    """The rankings of each prompt id, prompts and raters in the order first given."""
    out: dict[str, list[Ranking]] = {}
    for ranking in rankings:
        out.setdefault(ranking.id, []).append(ranking)
    return out


def majority_pairs(rankings: Sequence[Ranking]) -> list[PreferencePair]:
    """One prompt's pairs in the order most of its raters gave: a rater who tied or skipped the two replies
    casts no vote, and a pair with as many votes each way is dropped. With one rater, that rater's order."""
    votes: dict[Order, int] = {}
    for ranking in rankings:
        for order in orders(ranking):
            votes[order] = votes.get(order, 0) + 1
    first = rankings[0]
    return [order_pair(first.prompt, better, worse, first.id) for (better, worse), count in votes.items()
            if count > votes.get((worse, better), 0)]


def pairs_by_prompt(rankings: Sequence[Ranking], raters: Sequence[str], path: str) -> dict[str, list[PreferencePair]]:
    """Each prompt's pairs from the raters chosen: [ALL], [MAJORITY], or names (a name that ranked
    nothing in the file is a ConfigError naming data.raters and the file)."""
    prompts = by_prompt(rankings)
    if list(raters) == [MAJORITY]:
        return {id_: majority_pairs(entries) for id_, entries in prompts.items()}
    if list(raters) != [ALL]:
        known = dict.fromkeys(r.rater for r in rankings)
        missing = [name for name in raters if name not in known]
        if missing:
            raise ConfigError(f"key 'data.raters': rater {missing[0]!r} ranked nothing in {path} "
                              f"(its raters: {', '.join(map(repr, known)) or 'none'})")
        prompts = {id_: [e for e in entries if e.rater in raters] for id_, entries in prompts.items()}
    return {id_: [pair for entry in entries for pair in ranking_pairs(entry)] for id_, entries in prompts.items()}
