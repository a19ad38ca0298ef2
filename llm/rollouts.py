"""PPO rollouts: sample replies, score them, and turn scores and KL into per-token advantages.

A rollout batch is laid out as `[left-padded prompt | right-padded reply]`, so every reply starts at
the same column `offset` and the logits that predict reply token t sit at column offset - 1 + t.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llm.generate import SamplingParams, sample_replies
from llm.losses import token_logprobs
from llm.model import GPT
from llm.reward_model import RewardModel, sequence_rewards


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy.

    k1 = log p - log q is unbiased but can be negative; k3 = (q/p - 1) - log(q/p) is unbiased and never
    negative (Schulman, "Approximating KL divergence", 2020).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"key 'ppo.kl_estimator' must be k1 or k3; got {estimator!r}")


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over (B, T) reply tokens; the value after the last token is 0."""
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[1])):
        live = mask[:, t].to(rewards.dtype)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        # padding after a reply ends contributes nothing and passes nothing back
        advantages[:, t] = advantage * live
        next_value = torch.where(live.bool(), values[:, t], next_value)
        next_advantage = torch.where(live.bool(), advantage, next_advantage)
    return advantages, advantages + values * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    selected = values[mask]
    if selected.numel() < 2:
        return values
    return ((values - selected.mean()) / (selected.std() + eps)) * mask


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor  # (B, offset + R)
    attention_mask: torch.Tensor  # (B, offset + R)
    reply_mask: torch.Tensor  # (B, R) real reply tokens
    offset: int  # column where replies start
    finished: torch.Tensor  # (B,) the reply ended with a stop token
    scores: torch.Tensor  # (B,) reward model score (with the missing-end penalty)
    logprobs: torch.Tensor  # (B, R) under the policy that sampled
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    kl: torch.Tensor  # (B, R) per-token KL estimate
    advantages: torch.Tensor = None
    returns: torch.Tensor = None

    def reply_slice(self, full: torch.Tensor) -> torch.Tensor:
        """The columns of a (B, offset + R, ...) output that predict the reply tokens."""
        return full[:, self.offset - 1 : self.offset - 1 + self.reply_mask.shape[1]]

    @property
    def replies(self) -> torch.Tensor:
        return self.input_ids[:, self.offset :]


@torch.no_grad()
def collect(policy: GPT, critic: RewardModel | None, reference: GPT, reward_model: RewardModel, prompts: Sequence[Sequence[int]],
            params: SamplingParams, pad_id: int, generator: torch.Generator, kl_estimator: str, missing_end_penalty: float) -> RolloutBatch:
    """Sample replies and evaluate them under the policy, the reference, the critic (values 0 without one) and the reward model."""
    input_ids, attention_mask, reply_mask, offset, finished = sample_replies(policy, prompts, params, pad_id, generator)
    batch = RolloutBatch(input_ids, attention_mask, reply_mask, offset, finished, None, None, None, None, None)
    replies = batch.replies
    batch.logprobs = token_logprobs(batch.reply_slice(policy(input_ids, attention_mask=attention_mask)), replies, params.temperature)
    batch.ref_logprobs = token_logprobs(batch.reply_slice(reference(input_ids, attention_mask=attention_mask)), replies, params.temperature)
    if critic is None:
        batch.values = torch.zeros(reply_mask.shape, device=reply_mask.device)
    else:
        batch.values = batch.reply_slice(critic(input_ids, attention_mask)).float() * reply_mask
    scores = sequence_rewards(reward_model, input_ids, attention_mask).float()
    batch.scores = scores - missing_end_penalty * (~finished).float()
    batch.kl = kl_per_token(batch.logprobs, batch.ref_logprobs, kl_estimator) * reply_mask
    return batch


def assign_advantages(batch: RolloutBatch, kl_coef: float, gamma: float, lam: float, whiten_advantages: bool) -> None:
    """Per-token reward = -kl_coef * KL, plus the score on each reply's last token; then GAE."""
    rewards = -kl_coef * batch.kl
    last = batch.reply_mask.long().sum(dim=1) - 1
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += batch.scores
    advantages, returns = gae(rewards, batch.values, batch.reply_mask, gamma, lam)
    batch.advantages = whiten(advantages, batch.reply_mask) if whiten_advantages else advantages
    batch.returns = returns


def assign_group_advantages(batch: RolloutBatch, kl_coef: float, group: int, whiten_advantages: bool) -> None:
    """RLOO (Ahmadian et al. 2024): rows come in groups of `group` replies to one prompt; a reply's
    return is its score minus kl_coef times its summed KL, and its advantage is that return minus the
    mean return of the other replies in its group, given to every token of the reply."""
    if group < 2 or batch.scores.shape[0] % group:
        raise ValueError(f"RLOO needs groups of 2 or more replies per prompt; got {batch.scores.shape[0]} replies in groups of {group}")
    returns = (batch.scores - kl_coef * batch.kl.sum(dim=1)).view(-1, group)
    baseline = (returns.sum(dim=1, keepdim=True) - returns) / (group - 1)
    advantages = (returns - baseline).reshape(-1, 1) * batch.reply_mask
    batch.advantages = whiten(advantages, batch.reply_mask) if whiten_advantages else advantages
    batch.returns = returns.reshape(-1, 1) * batch.reply_mask
