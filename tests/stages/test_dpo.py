import math

import torch

from conftest_helpers import read_metrics
from llm.config import DPOConfig, load_config
from llm.stages.dpo import dpo_losses, pair_metrics, run


def test_losses_at_initialisation():
    policy = torch.tensor([-3.0, -5.0, -4.0, -2.0])  # chosen rows, then rejected rows
    lengths = torch.tensor([3, 4, 2, 5])
    sigmoid = dpo_losses(policy, policy.clone(), lengths, beta=0.1, loss="sigmoid", smoothing=0.0)
    torch.testing.assert_close(sigmoid, torch.full((2,), math.log(2)))
    smoothed = dpo_losses(policy, policy.clone(), lengths, beta=0.1, loss="sigmoid", smoothing=0.2)
    torch.testing.assert_close(smoothed, torch.full((2,), math.log(2)))
    ipo = dpo_losses(policy, policy.clone(), lengths, beta=0.1, loss="ipo", smoothing=0.0)
    torch.testing.assert_close(ipo, torch.full((2,), (1 / 0.2) ** 2))


def test_loss_falls_when_chosen_gains_and_metrics_follow_trl():
    reference = torch.tensor([-3.0, -3.0, -3.0, -3.0])
    better = torch.tensor([-2.0, -2.5, -4.0, -3.5])
    assert (dpo_losses(better, reference, torch.ones(4), 0.1, "sigmoid", 0.0) < math.log(2)).all()
    m = pair_metrics(better, reference, beta=0.1)
    torch.testing.assert_close(m["rewards/chosen"], torch.tensor(0.1 * (1.0 + 0.5)))
    assert float(m["rewards/accuracies"]) == 2.0 and float(m["rewards/margins"]) > 0


def test_nll_term_adds_the_chosen_per_token_nll(monkeypatch):
    from types import SimpleNamespace

    import llm.stages.dpo as dpo

    stage = dpo.DPOStage.__new__(dpo.DPOStage)
    stage.s = SimpleNamespace(beta=0.1, loss="sigmoid", label_smoothing=0.0, nll_coef=0.5)
    # one pair, policy equal to the reference: the DPO part is log 2; the chosen reply has 3 tokens, log-prob -3
    monkeypatch.setattr(dpo, "reply_logps", lambda model, batch: (torch.tensor([-3.0, -6.0]), torch.tensor([3, 2])))
    batch = {"ref_logps": torch.tensor([-3.0, -6.0]), "attention_mask": torch.ones(2, 4, dtype=torch.bool)}
    out = stage.loss(None, batch)
    torch.testing.assert_close(out.loss, torch.tensor(math.log(2) + 0.5 * 3.0 / 3))
    torch.testing.assert_close(out.metrics["nll/chosen"], torch.tensor(1.0))


def test_dpo_stage_starts_at_log2_and_improves(sft_run, reward_run, tmp_path):
    overrides = [
        f"init_from={sft_run}", f"out_dir={tmp_path}", "name=dpo", "data.builtin_train=400", "data.builtin_val=40",
        "data.builtin_kinds=[first_word, last_word]", "optim.lr=1e-3", "optim.warmup_steps=0", "train.batch_size=8",
        "train.max_steps=30", "train.epochs=0", "train.max_time_s=0", "train.dtype=float32", "train.eval_every=15",
        "train.log_every=1", "train.progress=false", "checkpoint.save_every=15", "eval.n_prompts=10",
        "eval.kinds=[first_word, last_word]", "eval.max_new_tokens=8", f"eval.reward_model={reward_run}",
    ]
    cfg = load_config(DPOConfig, None, overrides)
    run(cfg)
    evals = read_metrics(cfg.run_dir, "eval")
    assert abs(evals[0]["val_loss"] - math.log(2)) < 1e-4 and abs(evals[0]["val_rewards/margins"]) < 1e-4
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] and evals[-1]["val_rewards/accuracies"] > 0.5
    assert {"exact_match", "win_rate", "kl", "reward"} <= set(evals[-1])
    assert (cfg.run_dir / "ref_logps.safetensors").is_file()
    train = read_metrics(cfg.run_dir, "train")
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"} <= set(train[-1])
