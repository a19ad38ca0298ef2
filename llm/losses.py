"""The loss math of every stage, as pure functions of tensors.

Stages run the model and pick out the positions that matter; these functions turn logits, log-probs
and scores into losses and the statistics a stage logs. Logits are taken in float32: a softmax in
bf16 rounds the probabilities of everything but the likeliest tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # a target no loss counts (prompt tokens, padding): F.cross_entropy's default ignore_index


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy of every target that is not IGNORE, and how many there were.

    logits (..., V) line up with targets (...); the sum, not the mean, so the training loop can
    average over all tokens of an accumulated batch.
    """
    flat = targets.flatten()
    loss = F.cross_entropy(logits.float().flatten(0, -2), flat, ignore_index=IGNORE, reduction="sum")
    return loss, int((flat != IGNORE).sum())


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) under softmax(logits / temperature), for logits (..., V) and tokens (...).

    temperature 0 (greedy sampling) scores under the plain softmax.
    """
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    return F.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy in nats of softmax(logits / temperature) at each position (..., V) -> (...)."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Per-pair -log sigmoid(r_chosen - r_rejected - margin): the reward model's ranking loss."""
    return -F.logsigmoid(chosen - rejected - margin)


def reward_model_losses(chosen: torch.Tensor, rejected: torch.Tensor, margin: float, center_coef: float,
                        weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Bradley-Terry per pair plus center_coef * (r_chosen + r_rejected)^2, which keeps rewards near 0
    (the ranking alone leaves their offset free), each times its pair's weight (1 when None);
    statistics are the same weighted sums."""
    weights = torch.ones_like(chosen) if weights is None else weights.to(chosen.dtype)
    losses = (bradley_terry(chosen, rejected, margin) + center_coef * (chosen + rejected) ** 2) * weights
    diff = (chosen - rejected).detach()
    return losses, {"accuracy": ((diff > 0).float() * weights).sum(), "margin": (diff * weights).sum()}


def dpo_losses(policy: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor,
               beta: float, loss: str, smoothing: float) -> torch.Tensor:
    """Per-pair DPO losses from summed reply log-probs; the tensors hold the chosen rows, then the rejected.

    sigmoid: -(1 - e) log sigmoid(h) - e log sigmoid(-h), h = beta * (chosen log-ratio - rejected log-ratio)
    ipo: (h' - 1 / (2 beta))^2, with h' built from per-token average log-ratios
    """
    half = policy.shape[0] // 2
    if loss == "ipo":
        ratio = (policy - reference) / lengths.clamp(min=1)
        h = ratio[:half] - ratio[half:]
        return (h - 1.0 / (2 * beta)) ** 2
    ratio = policy - reference
    h = beta * (ratio[:half] - ratio[half:])
    return -(1 - smoothing) * F.logsigmoid(h) - smoothing * F.logsigmoid(-h)


def dpo_pair_stats(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """TRL's DPO statistics, as sums over pairs (the loop averages them)."""
    half = policy.shape[0] // 2
    rewards = beta * (policy - reference).detach()
    chosen, rejected = rewards[:half], rewards[half:]
    return {
        "rewards/chosen": chosen.sum(),
        "rewards/rejected": rejected.sum(),
        "rewards/margins": (chosen - rejected).sum(),
        "rewards/accuracies": (chosen > rejected).float().sum(),
        "logps/chosen": policy[:half].detach().sum(),
        "logps/rejected": policy[half:].detach().sum(),
    }


@dataclass
class PolicyLoss:
    per_token: torch.Tensor  # (B, T) clipped surrogate loss, zero on padding
    ratio: torch.Tensor  # (B, T) pi_new / pi_old, 1 on padding
    stats: dict  # sums over reply tokens


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip_ratio: float, clip_ratio_high: float | None = None) -> PolicyLoss:
    """PPO's clipped surrogate per token: max(-A * r, -A * clip(r, 1 - eps, 1 + eps_high)).

    eps_high = eps is PPO's; a larger eps_high is DAPO's clip-higher (Yu et al. 2025), which lets a rare
    token's probability rise further in one step than a likely token's may fall.
    """
    high = clip_ratio if clip_ratio_high is None else clip_ratio_high
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    clipped = ratio.clamp(1 - clip_ratio, 1 + high)
    per_token = torch.max(-advantages * ratio, -advantages * clipped) * mask
    with torch.no_grad():
        stats = {
            "loss/policy": per_token.sum(),
            "policy/clipfrac": (((ratio < 1 - clip_ratio) | (ratio > 1 + high)) & mask).float().sum(),
            "policy/approxkl": (0.5 * log_ratio**2 * mask).sum(),
        }
    return PolicyLoss(per_token, ratio, stats)


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_value: float) -> torch.Tensor:
    """The critic's clipped squared error per token: 0.5 * max((v - R)^2, (v_clipped - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip_value, clip_value)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)
