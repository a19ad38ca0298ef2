"""DPO: learn from preference pairs directly, against a frozen reference, with no reward model.

With h = beta * [(log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))]:
  sigmoid (Rafailov et al. 2023):        -log sigmoid(h), or with label smoothing e (conservative DPO)
                                         -(1 - e) log sigmoid(h) - e log sigmoid(-h)
  ipo (Azar et al. 2023):                (h' - 1 / (2 beta))^2, h' built from per-token average log-probs
With `dpo.nll_coef` > 0 the chosen reply's per-token NLL is added (RPO, Pang et al. 2024).
The reference's log-probabilities come from a forward pass of the frozen reference on each training
batch (TRL's default), so only the pairs trained on pay for one; the fixed validation batches keep theirs.
"""

from __future__ import annotations

import dataclasses

import torch

from llm.config import DPOConfig
from llm.data.batching import EpochBatches, fixed_batches
from llm.data.builtin_tasks import builtin_tasks
from llm.data.pairs import collate_pairs, load_pair_data
from llm.eval.policy import PolicyEvaluator
from llm.eval.tasks import rater_ranked_sampler
from llm.load import frozen_reference, load_gpt, load_reward_model, read, with_adapters
from llm.losses import dpo_losses, dpo_pair_stats, token_logprobs
from llm.model import model_size
from llm.stages.launch import Built
from llm.train.loop import LossOutput, Stage, to_device
from llm.train.runtime import Runtime


def reply_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's reply tokens, and the number of reply tokens."""
    ids = batch["input_ids"]
    logps = token_logprobs(model(ids)[:, :-1], ids[:, 1:])
    mask = batch["reply_mask"]
    return (logps * mask).sum(dim=1), mask.sum(dim=1)


class DPOStage(Stage):
    name = "dpo"
    early_stop_metric = "val_loss"

    def __init__(self, cfg: DPOConfig, policy, reference, train_pairs, val_pairs, pad_id: int,
                 evaluator: PolicyEvaluator | None, runtime: Runtime):
        self.cfg, self.s, self.model, self.pad_id, self.evaluator = cfg, cfg.dpo, policy, pad_id, evaluator
        self.device, self.reference = runtime.device, reference
        self.source = EpochBatches(train_pairs, [len(p) for p in train_pairs], cfg.train.batch_size, cfg.train.seed,
                                   self.collate, runtime.dist.rank, runtime.dist.world_size)
        self.val_batches = fixed_batches(val_pairs, [len(p) for p in val_pairs], cfg.train.batch_size, self.collate)

    def collate(self, pairs) -> dict:
        return collate_pairs(pairs, self.pad_id)

    @torch.no_grad()
    def reference_logps(self, batch) -> torch.Tensor:
        """The frozen reference's summed reply log-probs for a batch (kept in a batch that already has them)."""
        if "ref_logps" not in batch:
            batch["ref_logps"] = reply_logps(self.reference, batch)[0]
        return batch["ref_logps"]

    def loss(self, model, batch) -> LossOutput:
        logps, lengths = reply_logps(model, batch)
        reference = self.reference_logps(batch)
        losses = dpo_losses(logps, reference, lengths, self.s.beta, self.s.loss, self.s.label_smoothing)
        metrics = dpo_pair_stats(logps, reference, self.s.beta)
        if self.s.nll_coef:
            # keeps the chosen reply likely: without it DPO can lower both sides, and a rejected reply
            # that is a prefix of the chosen one drags the chosen one down with it
            half = logps.shape[0] // 2
            nll = -logps[:half] / lengths[:half].clamp(min=1)
            losses = losses + self.s.nll_coef * nll
            metrics["nll/chosen"] = nll.detach().sum()
        return LossOutput(losses.sum(), losses.shape[0], tokens=int(batch["attention_mask"].sum()), metrics=metrics)

    def evaluate(self, model) -> dict:
        total, count, sums = 0.0, 0, {}
        for i, batch in enumerate(self.val_batches):
            self.val_batches[i] = batch = to_device(batch, self.device)  # its reference log-probs stay with it
            out = self.loss(model, batch)
            total += float(out.loss)
            count += out.count
            for key, value in out.metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        metrics = {"val_loss": total / count, **{f"val_{k}": v / count for k, v in sums.items()}}
        if self.evaluator is not None:
            policy_metrics, self.last_replies = self.evaluator.evaluate(model)
            metrics.update(policy_metrics)
        return metrics

    def samples(self, model) -> list[dict] | None:
        return self.evaluator.side_by_side(self.last_replies) if self.evaluator is not None else None

    def eval_items(self) -> dict[str, dict[str, bool]] | None:
        return self.evaluator.last_items if self.evaluator is not None else None

    def frozen_models(self) -> list:
        return [self.reference, *([self.evaluator.reference] if self.evaluator is not None else [])]

    def flops_per_token(self) -> float:
        return model_size(self.model.config).flops_per_token


def build(cfg: DPOConfig, runtime: Runtime) -> Built:
    init = read(cfg.init_from)  # read and checksummed once: the policy and (without adapters) the reference copy it
    policy = load_gpt(init, "cpu", dropout=cfg.model.dropout)
    with_adapters(policy.model, cfg)
    reference = frozen_reference(policy.model, init, runtime.device)
    cfg = dataclasses.replace(cfg, model=policy.model.config)
    tok = policy.tokenizer
    data = load_pair_data(cfg.data, tok, cfg.model.block_size,
                          rater_ranked_sampler(cfg.run_dir, cfg.data, reference, tok, runtime.precision, runtime.device))
    evaluator = None
    if cfg.eval.n_prompts:
        judge = load_reward_model(cfg.eval.reward_model, runtime.device)[0] if cfg.eval.reward_model else None
        with runtime.precision.autocast():
            evaluator = PolicyEvaluator(tok, builtin_tasks("val", cfg.eval.n_prompts, 0, cfg.eval.kinds), reference, judge, cfg.eval,
                                        runtime.dist)
    stage = DPOStage(cfg, policy.model.train(), reference, data.train, data.val, tok.pad_id, evaluator, runtime)
    return Built(stage, cfg, tok.to_json(), data.log,
                 [f"[dpo] {len(data.train):,} training / {len(data.val):,} validation pairs from {cfg.init_from}; "
                  f"beta {cfg.dpo.beta}, loss {cfg.dpo.loss}"])
