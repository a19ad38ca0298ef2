"""PPO against a learned reward model with a KL penalty to the SFT reference (the InstructGPT recipe).

Each iteration samples replies to `rollout_batch` prompts, scores them with the frozen reward model,
the task checker or a weighted sum of both (`ppo.rewards`), subtracts a per-token KL penalty to the
frozen reference, computes advantages (GAE with the critic, or RLOO or GRPO over each prompt's group
of replies), and then takes `epochs` passes of clipped policy and value updates over minibatches.
Every minibatch is one step of the shared training loop; the rollout buffer is the batch source's
state, so a checkpoint taken in the middle of an iteration resumes exactly.

Under torchrun each process samples `rollout_batch` prompts of its own (as `train.batch_size` is per
process), and the processes then share their scored rollouts: advantages, statistics, the KL controller
and the guardrail see the whole batch, and every step's minibatch is cut into one part per process.
So N processes of `rollout_batch` b and `minibatch` m train as one process of N*b and N*m does.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from llm.chat import chat_sampling, seeded
from llm.config import PPOConfig, PPOSettings, StyleMix
from llm.data import sources
from llm.data.builtin_tasks import builtin_tasks
from llm.data.chat import collate_chat, task_conversation, tokenize_conversations
from llm.data.tasks import Task
from llm.device import Precision
from llm.distributed import DistInfo, max_across, my_block
from llm.errors import ConfigError, TrainingError
from llm.eval.policy import PolicyEvaluator
from llm.eval.tasks import checked_samples
from llm.generate import SharedDraws
from llm.load import frozen_reference, gpt_from, read, reward_model_from, tokenizer_of, with_adapters
from llm.losses import IGNORE, entropy, ppo_policy_loss, ppo_value_loss, token_logprobs, token_nll
from llm.model import GPT, model_size
from llm.reward_model import RewardModel
from llm.rollouts import (
    RolloutBatch,
    assign_advantages,
    assign_group_advantages,
    collect,
    gather_rollouts,
    group_stats,
    score,
    source_rewards,
)
from llm.stages.launch import Built
from llm.tokenizer import Tokenizer, render_prompt
from llm.train.checkpoint import LoadedCheckpoint
from llm.train.loop import LossOutput, Stage
from llm.train.runtime import Runtime

MINIBATCH_KEYS = ("input_ids", "attention_mask", "reply_mask", "logprobs", "values", "advantages", "returns")


class ActorCritic(nn.Module):
    """The trainable pair: the policy (a GPT) and its critic (a GPT trunk with a value head; None for RLOO and GRPO)."""

    def __init__(self, policy: GPT, critic: RewardModel | None):
        super().__init__()
        self.policy, self.critic = policy, critic
        self.config = policy.config

    def forward(self, input_ids, attention_mask, ptx_input_ids=None):
        """Policy logits and values of the rollouts, and (PPO-ptx) policy logits of SFT conversations.

        One forward call does all of it, as DistributedDataParallel expects one forward per backward.
        """
        logits = self.policy(input_ids, attention_mask=attention_mask)
        values = self.critic(input_ids, attention_mask) if self.critic is not None else None
        ptx_logits = self.policy(ptx_input_ids) if ptx_input_ids is not None else None
        return logits, values, ptx_logits


class KLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): nudged each iteration toward the target KL."""

    def __init__(self, settings: PPOSettings):
        self.coef, self.settings = settings.kl_coef, settings

    def update(self, kl: float, n_replies: int) -> None:
        s = self.settings
        if not s.adaptive_kl:
            return
        error = float(np.clip(kl / s.target_kl - 1.0, -0.2, 0.2))
        self.coef *= 1.0 + error * n_replies / s.kl_horizon


class RolloutSource:
    """Minibatches of PPO rollouts: a new batch of rollouts whenever the last one is used up.

    The buffer holds every process's rollouts, so it is the same on each; `next_batch` hands this process
    its part of each minibatch.
    """

    def __init__(self, model: ActorCritic, reference: GPT, reward_model: RewardModel | None, prompts: list[list[int]],
                 tasks: list[Task | None], tok: Tokenizer, settings: PPOSettings, precision: Precision, seed: int,
                 ptx_examples: list | None = None, dist: DistInfo = DistInfo()):
        self.model, self.reference, self.reward_model, self.tasks = model, reference, reward_model, tasks
        self.weights = {r.source: r.weight for r in settings.rewards}
        self.ptx_examples = ptx_examples or []
        self.prompts, self.tok, self.s, self.precision, self.seed = prompts, tok, settings, precision, seed
        self.dist = dist
        if len(prompts) < dist.world_size:
            raise ConfigError(f"{len(prompts)} PPO prompts cannot give each of {dist.world_size} processes one; add prompts (ppo.prompts)")
        self.kl = KLController(settings)
        self.iteration, self.position, self.buffer = 0, 0, []
        self.stats: dict = {}

    @property
    def prompts_per_process(self) -> int:
        return min(self.s.rollout_batch, len(self.prompts) // self.dist.world_size)

    @property
    def rollouts_per_iteration(self) -> int:
        """Every process's together."""
        return self.prompts_per_process * self.dist.world_size * self.s.samples_per_prompt

    @property
    def minibatch_rows(self) -> int:
        return self.s.minibatch * self.dist.world_size

    @property
    def steps_per_iteration(self) -> int:
        return self.s.epochs * math.ceil(self.rollouts_per_iteration / self.minibatch_rows)

    def next_batch(self) -> dict:
        if self.position >= len(self.buffer):
            self.refill()
        batch = self.buffer[self.position]
        self.position += 1
        if "ptx_targets" in batch:
            batch = {**batch, "ptx_weight": ptx_weight(batch)}
        return own_part(batch, self.dist) if self.dist.enabled else batch

    def refill(self) -> None:
        rng = np.random.default_rng([self.seed, self.iteration])
        world, group = self.dist.world_size, self.s.samples_per_prompt
        chosen = rng.choice(len(self.prompts), size=self.prompts_per_process * world, replace=False)
        mine = my_block(len(chosen), self.dist)
        rows = [chosen[i] for i in mine for _ in range(group)]
        draws = SharedDraws(seeded(self.model.policy, int(rng.integers(2**62))), len(chosen) * group, mine.start * group)
        rollouts = self.rollout([self.prompts[i] for i in rows], [self.tasks[i] for i in rows], draws)
        rollouts = gather_rollouts(rollouts, self.dist, self.tok.pad_id)
        self.check_kl(rollouts)
        if self.s.advantage == "gae":
            assign_advantages(rollouts, self.kl.coef, self.s.gamma, self.s.lam, self.s.whiten_advantages)
        else:
            assign_group_advantages(rollouts, self.kl.coef, group, self.s.whiten_advantages, self.s.advantage)
        self.stats = rollout_stats(rollouts, self.kl.coef, self.iteration, group)
        self.kl.update(self.stats["objective/kl"], self.rollouts_per_iteration)  # per reply, as TRL counts
        self.buffer = minibatches(rollouts, self.minibatch_rows, self.s.epochs, rng)
        if self.ptx_examples:
            for batch in self.buffer:
                picked = rng.choice(len(self.ptx_examples), size=self.s.ptx_batch * world, replace=False)
                ptx = collate_chat([self.ptx_examples[i] for i in picked], self.tok.pad_id)
                batch["ptx_input_ids"], batch["ptx_targets"] = ptx["input_ids"], ptx["targets"]
        self.position = 0
        self.iteration += 1

    def rollout(self, prompts: list[list[int]], tasks: list[Task | None], draws: SharedDraws) -> RolloutBatch:
        """This process's rollouts, scored; `draws` places its rows in the batch every process samples together."""
        policy = self.model.policy
        params = chat_sampling(self.tok, self.s.max_new_tokens, self.s.temperature, self.s.top_k)
        was_training = self.model.training
        self.model.eval()
        try:
            with self.precision.autocast():
                batch = collect(policy, self.model.critic, self.reference, prompts, params, self.tok.pad_id, draws, self.s.kl_estimator)
                replies = [self.tok.decode(row[mask].tolist()) for row, mask in zip(batch.replies, batch.reply_mask)]
                rewards = source_rewards(list(self.weights), batch, self.reward_model, tasks, replies)
        finally:
            self.model.train(was_training)
        score(batch, rewards, self.weights, self.s.missing_end_penalty)
        return batch

    def check_kl(self, rollouts: RolloutBatch) -> None:
        kl = float(rollouts.kl.sum(dim=1).mean())
        if not math.isfinite(kl) or kl > self.s.max_kl:
            raise TrainingError(f"PPO guardrail: KL to the reference is {kl:.3f} per reply at iteration {self.iteration}, "
                                f"past ppo.max_kl={self.s.max_kl}; stopping, the last checkpoint is intact "
                                "(lower optim.lr or raise ppo.kl_coef)")

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "position": self.position, "kl_coef": self.kl.coef, "buffer": self.buffer, "stats": self.stats}

    def load_state_dict(self, state: dict) -> None:
        self.iteration, self.position, self.kl.coef = int(state["iteration"]), int(state["position"]), float(state["kl_coef"])
        self.buffer, self.stats = state["buffer"], state["stats"]


def minibatches(rollouts: RolloutBatch, size: int, epochs: int, rng: np.random.Generator) -> list[dict]:
    """`epochs` shuffled passes over the rollouts, cut into minibatches trimmed to their longest reply."""
    out = []
    n = rollouts.input_ids.shape[0]
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(n))
        for start in range(0, n, size):
            rows = order[start : start + size].to(rollouts.input_ids.device)
            width = int(rollouts.reply_mask[rows].sum(dim=1).max())
            batch = {
                "input_ids": rollouts.input_ids[rows, : rollouts.offset + width],
                "attention_mask": rollouts.attention_mask[rows, : rollouts.offset + width],
                **{k: getattr(rollouts, k)[rows, :width] for k in MINIBATCH_KEYS[2:]},
                "offset": rollouts.offset,
            }
            out.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in batch.items()})
    return out


def ptx_weight(batch: dict) -> float:
    """What the ptx loss's summed NLL is multiplied by: the loop divides a step's loss by its reply tokens, so
    this many reply tokens per ptx token make the ptx term come out as ptx_coef times the ptx mean NLL."""
    return float(batch["reply_mask"].sum()) / max(int((batch["ptx_targets"] != IGNORE).sum()), 1)


def own_part(batch: dict, dist: DistInfo) -> dict:
    """This process's share of a minibatch every process holds whole: its rows of the rollouts and of the
    ptx conversations, trimmed to its longest reply."""
    part = dict(batch)
    for prefix in ("", "ptx_"):
        if prefix + "input_ids" not in batch:
            continue
        rows = my_block(batch[prefix + "input_ids"].shape[0], dist)
        for key, value in batch.items():
            if torch.is_tensor(value) and key.startswith(prefix) and (prefix or key in MINIBATCH_KEYS):
                part[key] = value[rows.start : rows.stop]
    width = int(part["reply_mask"].sum(dim=1).max())
    for key in MINIBATCH_KEYS:
        part[key] = part[key][:, : part["offset"] + width] if key in ("input_ids", "attention_mask") else part[key][:, :width]
    return part


def rollout_stats(rollouts: RolloutBatch, kl_coef: float, iteration: int, group: int = 1) -> dict:
    kl = float(rollouts.kl.sum(dim=1).mean())
    scores = float(rollouts.scores.mean())
    groups = {}
    if group > 1:
        groups["rollout/frac_reward_zero_std"] = group_stats(rollouts.scores, group)["frac_reward_zero_std"]
        if "checker" in rollouts.rewards:  # the verifiable reward: how often a sampled reply is right, and a group has one
            groups.update({f"rollout/{k}": v for k, v in group_stats(rollouts.rewards["checker"], group).items() if "pass" in k})
    return {
        **groups,
        "iteration": iteration,
        "kl_coef": kl_coef,
        "objective/kl": kl,
        "objective/scores": scores,
        "objective/rlhf_reward": scores - kl_coef * kl,
        "rollout/reply_tokens": float(rollouts.reply_mask.sum(dim=1).float().mean()),
        "rollout/finished": float(rollouts.finished.float().mean()),
        **{f"reward/{name}": float(reward.mean()) for name, reward in rollouts.rewards.items()},  # unweighted, per source
    }


class PPOStage(Stage):
    name = "ppo"
    model_kind = "actor_critic"
    early_stop_metric = "reward"
    early_stop_mode = "max"

    def __init__(self, cfg: PPOConfig, model: ActorCritic, source: RolloutSource, evaluator: PolicyEvaluator):
        self.cfg, self.s = cfg, cfg.ppo
        self.model, self.source, self.evaluator = model, source, evaluator
        if evaluator.reward_model is None:  # no judge, no reward metric: the best checkpoint is the most accurate one
            self.early_stop_metric = "exact_match"

    def loss(self, model, batch) -> LossOutput:
        s, offset, mask = self.s, batch["offset"], batch["reply_mask"]
        width = mask.shape[1]
        logits, values, ptx_logits = model(batch["input_ids"], batch["attention_mask"], batch.get("ptx_input_ids"))
        logits = logits[:, offset - 1 : offset - 1 + width]
        logprobs = token_logprobs(logits, batch["input_ids"][:, offset:], s.temperature)
        policy = ppo_policy_loss(logprobs, batch["logprobs"], batch["advantages"], mask, s.clip_ratio, s.clip_ratio_high or None)
        self.check_ratio(policy.ratio, mask, batch)
        total, metrics = policy.per_token.sum(), policy.stats
        metrics["objective/entropy"] = (entropy(logits.detach(), s.temperature) * mask).sum()
        if values is not None:
            value = ppo_value_loss(values[:, offset - 1 : offset - 1 + width], batch["values"], batch["returns"], s.clip_value) * mask
            total = total + s.vf_coef * value.sum()
            metrics["loss/value"] = value.detach().sum()
        if ptx_logits is not None:
            nll, _ = token_nll(ptx_logits, batch["ptx_targets"])
            ptx = nll * batch["ptx_weight"]  # of the whole minibatch, so that the processes' parts add up to it
            total = total + s.ptx_coef * ptx
            metrics["loss/ptx"] = ptx.detach()
        count = int(mask.sum()) if s.loss_norm == "token" else mask.shape[0] * s.max_new_tokens
        return LossOutput(total, count, tokens=int(batch["attention_mask"].sum()), metrics=metrics)

    def check_ratio(self, ratio: torch.Tensor, mask: torch.Tensor, batch: dict) -> None:
        ratio = ratio.detach()
        worst = float(ratio[mask].max()) if bool(mask.any()) else 1.0
        worst = worst if math.isfinite(worst) else math.inf
        dist = self.source.dist
        overall = max_across([worst], dist, ratio.device)[0]  # every process stops together, or none does
        if overall <= self.s.max_ratio:
            return
        if worst < overall:
            raise TrainingError(f"PPO guardrail: probability ratio {overall:.3g} past ppo.max_ratio={self.s.max_ratio} in another "
                                f"process's part of minibatch {self.source.position} at iteration {self.source.iteration}; "
                                f"stopping, the last checkpoint is intact")
        row, col = divmod(int((ratio * mask).flatten().argmax()), ratio.shape[1])
        token = self.source.tok.decode([int(batch["input_ids"][row, batch["offset"] + col])])
        old_p = float(batch["logprobs"][row, col].exp())
        # a single token this far from where the rollout left it is most often a reply the reward model
        # overrates, which PPO is learning to produce: a reward-hacking alarm, not a numerical one
        raise TrainingError(f"PPO guardrail: probability ratio {worst:.3g} past ppo.max_ratio={self.s.max_ratio} at iteration "
                            f"{self.source.iteration}, minibatch {self.source.position} of {len(self.source.buffer)}: token {token!r} "
                            f"went from probability {old_p:.3g} to {old_p * worst:.3g} "
                            f"(advantage {float(batch['advantages'][row, col]):.2f}); "
                            f"stopping, the last checkpoint is intact (check what the reward model scores highly, or lower optim.lr)")

    def evaluate(self, model) -> dict:
        metrics, self.last_replies = self.evaluator.evaluate(model.policy)
        return metrics

    def eval_items(self) -> dict[str, dict[str, bool]]:
        return self.evaluator.last_items

    def samples(self, model) -> list[dict]:
        return self.evaluator.side_by_side(self.last_replies)

    def log_extras(self) -> dict:
        return dict(self.source.stats)

    def next_batch_generates(self) -> bool:
        return self.source.position >= len(self.source.buffer)  # the buffer is spent: the next batch samples rollouts

    def frozen_models(self) -> list[nn.Module]:
        models = (self.source.reference, self.source.reward_model, self.evaluator.reference, self.evaluator.reward_model)
        return [m for m in models if m is not None]

    def flops_per_token(self) -> float:
        models = 2 if self.model.critic is not None else 1  # the policy, and the critic when there is one
        return models * model_size(self.model.config).flops_per_token


def rollout_prompts(settings: PPOSettings, tok: Tokenizer, max_prompt: int) -> tuple[list[list[int]], list[Task | None]]:
    """The prompts' tokens and, for each, the built-in task it asks (None for a file's prompt)."""
    rendered = [(render_prompt(tok, p.messages), p.task) for p in sources.prompts(settings).train]
    kept = [(ids, task) for ids, task in rendered if len(ids) <= max_prompt]
    if not kept:
        raise ConfigError(f"no PPO prompt fits in {max_prompt} tokens (model.block_size minus ppo.max_new_tokens)")
    prompts, tasks = zip(*kept)
    return list(prompts), list(tasks)


def edge_of_competence(reference: GPT, tok: Tokenizer, prompts: list[list[int]], tasks: list[Task | None], settings: PPOSettings,
                       seed: int, dist: DistInfo = DistInfo()) -> tuple[list[list[int]], list[Task | None], dict]:
    """The first ppo.edge_candidates prompts that the SFT model answers right sometimes but not always, judged by the
    task checker on samples_per_prompt replies each at the rollout temperature. A prompt it always or never gets right
    gives every reply of its group the same reward, and so no group advantage (DAPO filters these too)."""
    candidates = list(range(min(settings.edge_candidates, len(prompts))))
    if any(tasks[i] is None for i in candidates):
        raise ConfigError("ppo.edge_candidates needs built-in prompts: the task checker judges the SFT model's replies")
    right = checked_samples(reference, tok, [tasks[i] for i in candidates], settings.samples_per_prompt, settings.max_new_tokens,
                            settings.temperature, settings.top_k, seed, dist)
    rates = right.view(len(candidates), settings.samples_per_prompt).mean(dim=1).tolist()
    kept = [i for i, rate in zip(candidates, rates) if 0 < rate < 1]
    if not kept:
        raise ConfigError(f"none of {len(candidates)} PPO prompts is at the SFT model's edge (answered right sometimes, not always); "
                          f"raise ppo.edge_candidates or choose harder ppo.builtin_kinds")
    stats = {"candidates": len(candidates), "kept": len(kept), "always": sum(r == 1 for r in rates), "never": sum(r == 0 for r in rates),
             "pass@1": sum(rates) / len(rates)}
    return [prompts[i] for i in kept], [tasks[i] for i in kept], stats


def ptx_data(settings: PPOSettings, tok: Tokenizer, block_size: int, processes: int = 1) -> list:
    """Built-in SFT conversations for the PPO-ptx loss (none when ppo.ptx_coef is 0); a minibatch draws
    `ptx_batch` of them for each process."""
    if not settings.ptx_coef:
        return []
    tasks = builtin_tasks("train", max(settings.builtin_prompts // 4, settings.ptx_batch * processes), 2, settings.builtin_kinds)
    examples, _ = tokenize_conversations(tok, [task_conversation(t, StyleMix().weights()) for t in tasks], block_size + 1)
    return examples


def frozen(module: nn.Module, device) -> nn.Module:
    module.requires_grad_(False)
    return module.to(device).eval()


def make_critic(cfg: PPOConfig, policy_ckpt: LoadedCheckpoint, reward_ckpt: LoadedCheckpoint | None) -> RewardModel | None:
    """The value model, built from the checkpoints build() has read: a trainable copy, sharing no parameters."""
    if cfg.ppo.advantage != "gae":
        return None  # the group's other replies are the baseline
    if cfg.ppo.critic_init == "reward":
        critic = reward_model_from(reward_ckpt).train()
    else:
        critic = RewardModel(gpt_from(policy_ckpt))
        nn.init.zeros_(critic.head.weight)
    with_adapters(critic.trunk, cfg)  # its head trains whole
    return critic


def same_checkpoint(path: str, other: str, loaded: LoadedCheckpoint) -> bool:
    """Whether `path` names the run or checkpoint folder `other` named, read as `loaded`."""
    return Path(path).resolve() in (Path(other).resolve(), loaded.folder.resolve())


def build(cfg: PPOConfig, runtime: Runtime) -> Built:
    device = runtime.device
    # each checkpoint is read and checksummed once; every model below is its own copy of the weights. A reward model
    # that no reward source uses is still read when named: it judges the evaluation's replies
    policy_ckpt, reward_ckpt = read(cfg.policy), read(cfg.reward_model) if cfg.reward_model else None
    policy = with_adapters(gpt_from(policy_ckpt, dropout=cfg.model.dropout), cfg)
    reference = frozen_reference(policy, policy_ckpt, device)
    tok = tokenizer_of(policy_ckpt)
    reward_model = None
    if reward_ckpt is not None:
        if tokenizer_of(reward_ckpt).to_json() != tok.to_json():
            raise ConfigError(f"the reward model {cfg.reward_model} uses another tokenizer than the policy {cfg.policy}")
        reward_model = frozen(reward_model_from(reward_ckpt), device)
    # left on the CPU: the loop moves it to the device, a block at a time as it shards it under FSDP
    model = ActorCritic(policy.train(), make_critic(cfg, policy_ckpt, reward_ckpt))
    cfg = dataclasses.replace(cfg, model=policy.config)
    prompts, prompt_tasks = rollout_prompts(cfg.ppo, tok, cfg.model.block_size - cfg.ppo.max_new_tokens)
    if cfg.ppo.edge_candidates:
        with runtime.precision.autocast():
            prompts, prompt_tasks, edge = edge_of_competence(reference, tok, prompts, prompt_tasks, cfg.ppo, cfg.train.seed, runtime.dist)
        runtime.say(f"[ppo] edge of competence: {edge['kept']:,} of {edge['candidates']:,} prompts answered right sometimes "
                    f"(always {edge['always']:,}, never {edge['never']:,}; SFT's pass@1 {edge['pass@1']:.1%})")
    source = RolloutSource(model, reference, reward_model, prompts, prompt_tasks, tok, cfg.ppo, runtime.precision, cfg.train.seed,
                           ptx_data(cfg.ppo, tok, cfg.model.block_size, runtime.dist.world_size), runtime.dist)
    judge = reward_model  # frozen, so the judge can be the same module when it is the same checkpoint; None: no reward metrics
    if cfg.eval.reward_model and not (reward_ckpt is not None and same_checkpoint(cfg.eval.reward_model, cfg.reward_model, reward_ckpt)):
        judge = frozen(reward_model_from(read(cfg.eval.reward_model)), device)
    tasks = builtin_tasks("val", cfg.eval.n_prompts, 0, cfg.eval.kinds) if cfg.eval.n_prompts else []
    with runtime.precision.autocast():
        evaluator = PolicyEvaluator(tok, tasks, reference, judge, cfg.eval, runtime.dist)
    return Built(PPOStage(cfg, model, source, evaluator), cfg, tok.to_json(), lines=[
        f"[ppo] {len(source.prompts):,} prompts; {source.steps_per_iteration} "
        f"optimizer steps per iteration of {source.rollouts_per_iteration} "
        f"rollouts ({cfg.ppo.advantage}, reward {reward_formula(cfg.ppo)}); SFT exact match {evaluator.sft_metrics['exact_match']:.3f} "
        f"on {len(evaluator.tasks)} held-out tasks"])


def reward_formula(settings: PPOSettings) -> str:
    return " + ".join(f"{r.weight:g} * {r.source}" for r in settings.rewards)

