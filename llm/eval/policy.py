"""How a preference-optimised policy compares with the SFT model it started from, on held-out prompts.

The reward model's verdicts (mean score, win rate against SFT) sit beside the task checker's true
exact-match accuracy, which the reward model never sees: reward hacking shows as reward up and true
accuracy down. KL to the reference is measured on sampled replies, where it is an expectation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm.chat import Reply, chat_prompt_ids, chat_sampling, seeded
from llm.config import PolicyEvalConfig
from llm.data.tasks import Task
from llm.distributed import DistInfo, my_block, sum_across
from llm.eval.tasks import HeldOutSets, checked_samples, greedy_replies, item_verdicts, task_metrics
from llm.generate import SharedDraws, sample_replies
from llm.losses import token_logprobs
from llm.model import GPT
from llm.reward_model import RewardModel, score_sequences
from llm.rollouts import group_stats
from llm.tokenizer import Tokenizer


class PolicyEvaluator:
    def __init__(self, tok: Tokenizer, tasks: Sequence[Task], reference: GPT, reward_model: RewardModel | None, cfg: PolicyEvalConfig,
                 dist: DistInfo = DistInfo()):
        """Under torchrun every process must make it, and every evaluation: the processes split the greedy replies."""
        self.tok, self.tasks, self.reference, self.reward_model, self.cfg = tok, list(tasks), reference, reward_model, cfg
        self.dist = dist
        self.prompts = [chat_prompt_ids(tok, t.prompt) for t in self.tasks]
        self.sft_replies = self.replies(reference)
        self.sft_scores = self.scores(self.sft_replies)
        self.sft_metrics = self.task_metrics(self.sft_replies)
        self.held_out = HeldOutSets.build(tok, cfg.unseen, cfg.kinds)
        self.sft_unseen, self.sft_unseen_items = self.unseen_metrics(reference)
        self.sft_unseen.update(self.pass_at_k(reference))
        self.last_items: dict[str, dict[str, bool]] = {}  # item_verdicts of the last evaluation, kept in eval_items.json

    def replies(self, model: GPT) -> list[Reply]:
        return greedy_replies(model, self.tok, [t.prompt for t in self.tasks], self.cfg.max_new_tokens, self.dist)

    def scores(self, replies: Sequence[Reply]) -> list[float] | None:
        if self.reward_model is None:
            return None
        return score_sequences(self.reward_model, [p + list(r.tokens) for p, r in zip(self.prompts, replies)], self.tok.pad_id)

    def task_metrics(self, replies: Sequence[Reply]) -> dict:
        return task_metrics(self.tasks, replies, self.cfg.prefer_style)

    def unseen_metrics(self, model: GPT) -> tuple[dict, dict[str, dict[str, bool]]]:
        """Exact match and best-possible share on the unseen axes: new words, new phrasings, both."""
        return self.held_out.evaluate(model, self.tok, self.cfg.max_new_tokens, self.cfg.prefer_style, self.dist)

    def pass_at_k(self, model: GPT) -> dict:
        """pass@1 and pass@k of replies sampled at temperature 1 on the first eval.pass_prompts new-words-new-phrasings
        tasks: RL sharpens what the model can already sometimes do (pass@1 toward pass@k), and rarely adds to pass@k."""
        k, tasks = self.cfg.pass_k, self.held_out.tasks.get("new_both", [])[: self.cfg.pass_prompts]
        if not k or not tasks:
            return {}
        right = checked_samples(model, self.tok, tasks, k, self.cfg.max_new_tokens, 1.0, 0, 4321, self.dist)
        stats = group_stats(right, k)
        return {f"new_both/{key}": stats[key] for key in ("pass@1", f"pass@{k}")}

    def evaluate(self, policy: GPT) -> tuple[dict, list[Reply]]:
        # the step-0 policy is the reference itself: its replies, scores and KL (0) are known already
        same = same_weights(policy, self.reference)
        replies = self.sft_replies if same else self.replies(policy)
        self.last_items = item_verdicts(self.tasks, replies, self.cfg.prefer_style)
        metrics = {**self.task_metrics(replies), "sft_exact_match": self.sft_metrics["exact_match"],
                   "sft_best_possible": self.sft_metrics["best_possible"]}
        unseen, unseen_items = (self.sft_unseen, self.sft_unseen_items) if same else self.unseen_metrics(policy)
        if not same:
            unseen = {**unseen, **self.pass_at_k(policy)}
        metrics.update(unseen)
        self.last_items.update(unseen_items)
        metrics.update({f"sft_{key}": value for key, value in self.sft_unseen.items()})
        scores = self.sft_scores if same else self.scores(replies)
        if scores is not None:
            wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, self.sft_scores)]
            metrics.update(reward=mean(scores), sft_reward=mean(self.sft_scores), win_rate=mean(wins))
        metrics["kl"] = 0.0 if same else self.sampled_kl(policy)
        return metrics, replies

    def sampled_kl(self, policy: GPT) -> float:
        """Mean over prompts of the summed per-token log-ratio of replies sampled at temperature 1. Under torchrun
        each process samples its block of every batch of 64, with the draws one process alone would make."""
        params = chat_sampling(self.tok, self.cfg.max_new_tokens, temperature=1.0)
        total = 0.0
        for number, start in enumerate(range(0, len(self.prompts), 64)):
            batch = self.prompts[start : start + 64]
            rows = my_block(len(batch), self.dist)
            if not rows:
                continue
            draws = SharedDraws(seeded(policy, 1234 + number), len(batch), rows.start)
            ids, mask, reply_mask, offset, _ = sample_replies(policy, [batch[i] for i in rows], params, self.tok.pad_id, draws)
            replies = ids[:, offset:]
            width = reply_mask.shape[1]
            cut = slice(offset - 1, offset - 1 + width)
            logp = token_logprobs(policy(ids, attention_mask=mask)[:, cut], replies, 1.0)
            ref = token_logprobs(self.reference(ids, attention_mask=mask)[:, cut], replies, 1.0)
            total += float(((logp - ref) * reply_mask).sum())
        return sum_across([total], self.dist, next(policy.parameters()).device)[0] / max(len(self.prompts), 1)

    def side_by_side(self, replies: Sequence[Reply]) -> list[dict]:
        out = []
        for i in range(min(self.cfg.n_samples, len(self.tasks))):
            row = {"prompt": self.tasks[i].prompt, "answer": self.tasks[i].answer,
                   "sft": self.sft_replies[i].text, "policy": replies[i].text}
            out.append(row)
        return out


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Bit for bit the same parameters (a policy that has not taken a step yet)."""
    pa, pb = list(a.parameters()), list(b.parameters())
    return len(pa) == len(pb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(pa, pb))


def mean(values: Sequence[float]) -> float:
    return sum(values) / max(len(values), 1)
