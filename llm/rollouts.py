"""PPO rollouts: sample replies, score them, and turn scores and KL into per-token advantages.

A rollout batch is laid out as `[left-padded prompt | right-padded reply]`, so every reply starts at
the same column `offset` and the logits that predict reply token t sit at column offset - 1 + t.

A reply's score is a weighted sum of reward sources (`ppo.rewards`): the reward model's score of the
whole sequence, and the task checker's verdict (1.0 for a finished reply it accepts, else 0.0, as in
RL with verifiable rewards); a reply that hit the length limit then loses `missing_end_penalty`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from llm.data.tasks import Task, is_correct
from llm.distributed import DistInfo, cat_across, max_across
from llm.generate import SamplingParams, SharedDraws, sample_replies
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
    scores: torch.Tensor  # (B,) weighted sum of the reward sources, less the missing-end penalty
    logprobs: torch.Tensor  # (B, R) under the policy that sampled
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    kl: torch.Tensor  # (B, R) per-token KL estimate
    advantages: torch.Tensor = None
    returns: torch.Tensor = None
    rewards: dict[str, torch.Tensor] = None  # each reward source's (B,) reward, unweighted

    def reply_slice(self, full: torch.Tensor) -> torch.Tensor:
        """The columns of a (B, offset + R, ...) output that predict the reply tokens."""
        return full[:, self.offset - 1 : self.offset - 1 + self.reply_mask.shape[1]]

    @property
    def replies(self) -> torch.Tensor:
        return self.input_ids[:, self.offset :]

    def aligned(self, offset: int, width: int, pad_id: int) -> RolloutBatch:
        """The same rollouts with replies starting at column `offset` and `width` reply columns: padding added
        before the prompts and after the replies, as a batch with a longer prompt or reply would have had."""
        left, right = offset - self.offset, width - self.reply_mask.shape[1]
        if left < 0 or right < 0:
            raise ValueError(f"cannot align rollouts at offset {self.offset}, width {self.reply_mask.shape[1]} to {offset}, {width}")
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("input_ids", "attention_mask"):
                value = F.pad(value, (left, right), value=pad_id if f.name == "input_ids" else 0)
            elif torch.is_tensor(value) and value.dim() == 2:  # the (B, R) reply columns
                value = F.pad(value, (0, right), value=0)
            out[f.name] = value
        return RolloutBatch(**{**out, "offset": offset})


def gather_rollouts(batch: RolloutBatch, info: DistInfo, pad_id: int) -> RolloutBatch:
    """Every process's scored rollouts in one batch, in rank order, the same on every process (a collective
    call). Advantages, statistics and the KL controller then see all of them, as one process would."""
    if not info.enabled:
        return batch
    offset, width = max_across([batch.offset, batch.reply_mask.shape[1]], info, batch.input_ids.device)
    batch = batch.aligned(int(offset), int(width), pad_id)
    out = {f.name: getattr(batch, f.name) for f in fields(batch)}
    for name, value in out.items():
        if torch.is_tensor(value):
            out[name] = cat_across(value, info)
    out["rewards"] = {name: cat_across(value, info) for name, value in sorted(batch.rewards.items())}
    return RolloutBatch(**out)


@torch.no_grad()
def collect(policy: GPT, critic: RewardModel | None, reference: GPT, prompts: Sequence[Sequence[int]], params: SamplingParams,
            pad_id: int, generator: torch.Generator | SharedDraws, kl_estimator: str) -> RolloutBatch:
    """Sample replies and evaluate them under the policy, the reference and the critic (values 0 without one); `score` scores them."""
    input_ids, attention_mask, reply_mask, offset, finished = sample_replies(policy, prompts, params, pad_id, generator)
    batch = RolloutBatch(input_ids, attention_mask, reply_mask, offset, finished, None, None, None, None, None)
    replies = batch.replies
    batch.logprobs = token_logprobs(batch.reply_slice(policy(input_ids, attention_mask=attention_mask)), replies, params.temperature)
    batch.ref_logprobs = token_logprobs(batch.reply_slice(reference(input_ids, attention_mask=attention_mask)), replies, params.temperature)
    if critic is None:
        batch.values = torch.zeros(reply_mask.shape, device=reply_mask.device)
    else:
        batch.values = batch.reply_slice(critic(input_ids, attention_mask)).float() * reply_mask
    batch.kl = kl_per_token(batch.logprobs, batch.ref_logprobs, kl_estimator) * reply_mask
    return batch


def checker_rewards(tasks: Sequence[Task | None], replies: Sequence[str], finished: torch.Tensor) -> torch.Tensor:
    """1.0 for a reply that ended with a stop token and that the task checker accepts, else 0.0.

    A reply cut at the length limit scores 0 even when its text is the answer: it did not stop.
    """
    if any(task is None for task in tasks):
        raise ValueError("the checker reward needs the built-in task of every prompt; a file's prompts have none")
    right = [bool(done) and is_correct(task, reply) for task, reply, done in zip(tasks, replies, finished.tolist(), strict=True)]
    return torch.tensor(right, dtype=torch.float32, device=finished.device)


@torch.no_grad()
def source_rewards(sources: Sequence[str], batch: RolloutBatch, reward_model: RewardModel | None, tasks: Sequence[Task | None],
                   replies: Sequence[str]) -> dict[str, torch.Tensor]:
    """Each named source's (B,) reward of the batch's replies (decoded as `replies`, asked by `tasks`), unweighted."""
    out = {}
    for source in sources:
        if source == "model":
            out[source] = sequence_rewards(reward_model, batch.input_ids, batch.attention_mask).float()
        elif source == "checker":
            out[source] = checker_rewards(tasks, replies, batch.finished)
        else:
            raise ValueError(f"unknown reward source {source!r}; sources are model and checker")
    return out


def weighted_score(rewards: Mapping[str, torch.Tensor], weights: Mapping[str, float], finished: torch.Tensor,
                   missing_end_penalty: float) -> torch.Tensor:
    """sum over sources of weight * reward, less `missing_end_penalty` for each reply that did not stop."""
    total = sum(weights[name] * reward for name, reward in rewards.items())
    return total - missing_end_penalty * (~finished).float()


def score(batch: RolloutBatch, rewards: Mapping[str, torch.Tensor], weights: Mapping[str, float], missing_end_penalty: float) -> None:
    batch.rewards = dict(rewards)
    batch.scores = weighted_score(rewards, weights, batch.finished, missing_end_penalty)


def assign_advantages(batch: RolloutBatch, kl_coef: float, gamma: float, lam: float, whiten_advantages: bool) -> None:
    """Per-token reward = -kl_coef * KL, plus the score on each reply's last token; then GAE."""
    rewards = -kl_coef * batch.kl
    last = batch.reply_mask.long().sum(dim=1) - 1
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += batch.scores
    advantages, returns = gae(rewards, batch.values, batch.reply_mask, gamma, lam)
    batch.advantages = whiten(advantages, batch.reply_mask) if whiten_advantages else advantages
    batch.returns = returns


def leave_one_out_advantages(returns: torch.Tensor, group: int) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): each of the (N,) returns, in groups of `group` consecutive replies to
    one prompt, minus the mean return of the other replies in its group."""
    grouped = returns.view(-1, group)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group - 1)
    return (grouped - baseline).reshape(-1)


def group_normalised_advantages(scores: torch.Tensor, group: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO (Shao et al. 2024, DeepSeekMath): each of the (N,) scores, in groups of `group` consecutive
    replies to one prompt, minus its group's mean, over its group's standard deviation plus `eps`.

    The standard deviation is Bessel-corrected (torch.std, as in DeepSeekMath, TRL's GRPOTrainer and
    OpenRLHF's group_norm); eps is TRL's. A group whose scores all tie gets exactly 0: it says nothing
    about which reply is better, and dividing rounding error by eps would make it say something.
    """
    grouped = scores.view(-1, group)
    normalised = (grouped - grouped.mean(dim=1, keepdim=True)) / (grouped.std(dim=1, keepdim=True) + eps)
    tied = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    return torch.where(tied, torch.zeros_like(normalised), normalised).reshape(-1)


def group_centred(scores: torch.Tensor, group: int) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025): each score minus its group's mean, not divided by the group's deviation,
    which weights nearly-solved and nearly-failed prompts (small deviation) up against the rest."""
    grouped = scores.view(-1, group)
    return (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)


def group_stats(rewards: torch.Tensor, group: int) -> dict[str, float]:
    """For (N,) 0/1 rewards in groups of `group` replies to one prompt: pass@1 (the mean), pass@group (the share of
    groups with a reply rewarded 1), and the share of groups whose replies all got the same reward, which
    carry no signal for a group advantage (TRL's frac_reward_zero_std)."""
    grouped = rewards.view(-1, group)
    return {"pass@1": float(grouped.mean()), f"pass@{group}": float((grouped.max(dim=1).values > 0).float().mean()),
            "frac_reward_zero_std": float((grouped == grouped[:, :1]).all(dim=1).float().mean())}


def assign_group_advantages(batch: RolloutBatch, kl_coef: float, group: int, whiten_advantages: bool, estimator: str = "rloo") -> None:
    """Advantages without a critic; rows come in groups of `group` replies to one prompt, and each
    reply's advantage is given to every one of its tokens. A reply's return is its score minus kl_coef
    times its summed KL.

    rloo: the return minus the mean return of the other replies in its group.
    grpo: the group-normalised score, less kl_coef times the reply's KL minus its group's mean KL. The
    KL term is centred but not divided by the group's deviation: it keeps its scale of kl_coef per
    nat, where dividing it too would blow a tied group's small KL differences up to full-size advantages.
    """
    if group < 2 or batch.scores.shape[0] % group:
        raise ValueError(f"{estimator} needs groups of 2 or more replies per prompt; "
                         f"got {batch.scores.shape[0]} replies in groups of {group}")
    kl = batch.kl.sum(dim=1)
    returns = batch.scores - kl_coef * kl
    if estimator == "rloo":
        per_reply = leave_one_out_advantages(returns, group)
    elif estimator in ("grpo", "dr_grpo"):
        grouped_kl = kl.view(-1, group)
        centred_kl = (grouped_kl - grouped_kl.mean(dim=1, keepdim=True)).reshape(-1)
        scaled = group_normalised_advantages(batch.scores, group) if estimator == "grpo" else group_centred(batch.scores, group)
        per_reply = scaled - kl_coef * centred_kl
    else:
        raise ValueError(f"unknown group advantage {estimator!r}; estimators are rloo, grpo and dr_grpo")
    advantages = per_reply[:, None] * batch.reply_mask
    batch.advantages = whiten(advantages, batch.reply_mask) if whiten_advantages else advantages
    batch.returns = returns[:, None] * batch.reply_mask
