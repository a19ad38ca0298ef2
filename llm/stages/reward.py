"""Reward model: learn to score replies the way the preference data ranked them (Bradley-Terry).

loss = -logsigmoid(r_chosen - r_rejected - margin) + center_coef * (r_chosen + r_rejected)^2

Metrics use TRL's names where one exists: accuracy (r_chosen > r_rejected), margin, and the mean and
spread of rewards; built-in pairs also report accuracy by the kind of wrong reply.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from llm.config import RewardConfig
from llm.data.batching import EpochBatches, fixed_batches
from llm.data.pairs import PairData, collate_pairs, collate_units, load_pair_data, units
from llm.eval.rankings import ranked_groups, top1_best
from llm.eval.tasks import rater_ranked_sampler
from llm.load import load_for_finetuning
from llm.losses import bradley_terry, reward_model_losses
from llm.model import model_size
from llm.reward_model import RewardModel, sequence_rewards
from llm.stages.launch import Built
from llm.train.loop import LossOutput, Stage, to_device
from llm.train.runtime import Runtime


def pair_rewards(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    rewards = sequence_rewards(model, batch["input_ids"], batch["attention_mask"])
    half = rewards.shape[0] // 2
    return rewards[:half], rewards[half:]


class RewardStage(Stage):
    name = "reward"
    model_kind = "reward"
    early_stop_metric = "val_accuracy"
    early_stop_mode = "max"

    def __init__(self, cfg: RewardConfig, model: RewardModel, pad_id: int, data: PairData, runtime: Runtime):
        self.cfg, self.data, self.device, self.pad_id = cfg, data, runtime.device, pad_id
        self.model = model
        train = units(data.train) if cfg.data.ranking_groups else [[example] for example in data.train]
        lengths = [max(len(e) for e in unit) for unit in train]
        self.source = EpochBatches(train, lengths, cfg.train.batch_size, cfg.train.seed,
                                   lambda batch: collate_units(batch, pad_id), runtime.dist.rank, runtime.dist.world_size)
        self.val_batches = fixed_batches(data.val, [len(e) for e in data.val], cfg.train.batch_size, self.collate)
        self.unseen_batches = {axis: fixed_batches(examples, [len(e) for e in examples], cfg.train.batch_size, self.collate)
                               for axis, examples in data.unseen.items()}

    def collate(self, examples):
        return collate_pairs(examples, self.pad_id)

    def loss(self, model, batch) -> LossOutput:
        chosen, rejected = pair_rewards(model, batch)
        weights = batch["weights"]  # a ranking's pairs share one unit of weight
        losses, metrics = reward_model_losses(chosen, rejected, self.cfg.margin, self.cfg.center_coef, weights)
        return LossOutput(losses.sum(), float(weights.sum()), tokens=int(batch["attention_mask"].sum()), metrics=metrics)

    def evaluate(self, model) -> dict:
        chosen, rejected, kinds = self.scored(model, self.val_batches)
        metrics = reward_metrics(chosen, rejected, kinds, self.cfg.margin)
        groups = ranked_groups(self.data.val)
        if groups:
            metrics["val_top1_best"] = top1_best(model, groups, self.pad_id)
        for axis, batches in self.unseen_batches.items():  # pairs of a person's own words or phrasings, apart
            chosen, rejected, _ = self.scored(model, batches)
            metrics[f"{axis}/val_accuracy"] = float((chosen > rejected).float().mean())
        return metrics

    def scored(self, model, batches) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        chosen, rejected, kinds = [], [], []
        for batch in batches:
            c, r = pair_rewards(model, to_device(batch, self.device))
            chosen.append(c.float().cpu())
            rejected.append(r.float().cpu())
            kinds += batch["kinds"]
        return torch.cat(chosen), torch.cat(rejected), kinds

    def flops_per_token(self) -> float:
        return model_size(self.model.config).flops_per_token


def reward_metrics(chosen: torch.Tensor, rejected: torch.Tensor, kinds: list[str], margin: float = 0.0) -> dict:
    diff = chosen - rejected
    both = torch.cat([chosen, rejected])
    metrics = {
        "val_loss": float(bradley_terry(chosen, rejected, margin).mean()),
        "val_accuracy": float((diff > 0).float().mean()),
        "val_margin": float(diff.mean()),
        "rewards/chosen": float(chosen.mean()),
        "rewards/rejected": float(rejected.mean()),
        "rewards/mean": float(both.mean()),
        "rewards/std": float(both.std()),
    }
    by_kind = defaultdict(list)
    for kind, d in zip(kinds, diff.tolist()):
        if kind:
            by_kind[kind].append(d > 0)
    if by_kind:
        metrics["val_accuracy_by_kind"] = {k: sum(v) / len(v) for k, v in sorted(by_kind.items())}
    return metrics


def build(cfg: RewardConfig, runtime: Runtime) -> Built:
    base, cfg = load_for_finetuning(cfg, "cpu")
    model = RewardModel(base.model)
    sampler = rater_ranked_sampler(cfg.run_dir, cfg.data, base.model, base.tokenizer, runtime.precision, runtime.device)
    data = load_pair_data(cfg.data, base.tokenizer, cfg.model.block_size, sampler)
    stage = RewardStage(cfg, model, base.tokenizer.pad_id, data, runtime)
    return Built(stage, cfg, base.tokenizer.to_json(), data.log,
                 [f"[reward] {len(data.train):,} training / {len(data.val):,} validation pairs; dropped {dropped(data.log)}"])


def dropped(log: dict) -> str:
    parts = []
    for split in ("train", "val"):
        stats = log[split]
        parts.append(f"{split}: {stats['dropped_identical']} identical, {stats['dropped_empty']} empty, "
                     f"{stats['dropped_too_long']} too long")
    return "; ".join(parts)
