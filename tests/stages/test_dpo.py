import math
import signal

import pytest
import torch

from conftest_helpers import FOUR_ITEMS, REPO, check_eval_items, dpo_overrides, kill_and_resume, metric_losses, read_metrics
from llm.config import DPOConfig, load_config
from llm.stages.launch import run_stage


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
    cfg = load_config(DPOConfig, None, dpo_overrides(sft_run, tmp_path, "dpo") + [f"eval.reward_model={reward_run}"])
    run_stage("dpo", cfg)
    evals = read_metrics(cfg.run_dir, "eval")
    assert abs(evals[0]["val_loss"] - math.log(2)) < 1e-4 and abs(evals[0]["val_rewards/margins"]) < 1e-4
    # Held-out loss after 60 steps: 0.537-0.600 from 22 SFT models (train.seed 0-9 and 1337, each with AVX-512
    # and with AVX2 kernels), at least 0.09 below log 2. A step that did nothing would leave it at log 2, a
    # wrongly signed loss would raise it. Held-out accuracy (0.50-0.73 on 40 pairs) is too close to 0.5 to assert.
    assert evals[-1]["val_loss"] < math.log(2) - 0.03
    assert {"exact_match", "win_rate", "kl", "reward"} <= set(evals[-1])
    from llm.data.builtin_tasks import builtin_tasks

    record = check_eval_items(cfg.run_dir, builtin_tasks("val", 10, 0, ["first_word", "last_word"]))
    assert sum(record["step0"]["items"].values()) / 10 == evals[-1]["sft_exact_match"]  # step 0 is the SFT start
    train = read_metrics(cfg.run_dir, "train")
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
            "logps/chosen", "logps/rejected"} <= set(train[-1])


def test_dpo_overfits_four_pairs(sft_run, tmp_path):
    cfg = load_config(DPOConfig, None, dpo_overrides(sft_run, tmp_path, "fit") + FOUR_ITEMS + [
        "train.max_steps=40", "optim.lr=3e-3", "optim.schedule=constant", "eval.n_prompts=0"])
    run_stage("dpo", cfg)
    train = read_metrics(cfg.run_dir, "train")
    # Every batch holds the same four pairs. Over 44 runs (22 SFT models, train.seed 0-9 and 1337, each trained
    # and fitted with AVX-512 and with AVX2 kernels) the policy ranked all four above the reference from step 10
    # at the latest and kept the loss below log(2) / 4 from step 17; it ended at 0.03-0.06. A wrongly signed
    # loss moves every margin the other way; a step that did nothing leaves the loss at log 2.
    assert train[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert all(line["rewards/accuracies"] == 1.0 for line in train[-10:])
    assert train[-1]["loss"] < math.log(2) / 4


def test_dpo_resume_after_kill_reproduces_losses(sft_run, tmp_path):
    # 80 steps of 8 over 400 pairs (an epoch ends at step 50, after the kill), warm-up, dropout and the tiny config's
    # RPO term: a resume that lost the optimizer, the schedule, the data order or the RNG, or took its reference
    # log-probs from the resumed policy, changes a loss
    extra = ["data.sources=[{path: builtin}]", "train.max_steps=80", "checkpoint.save_every=10", "optim.warmup_steps=20",
             "model.dropout=0.1"]
    config = "configs/dpo/tiny.yaml"
    run_stage("dpo", load_config(DPOConfig, REPO / config, dpo_overrides(sft_run, tmp_path / "runs", "a") + extra))
    args = dpo_overrides(sft_run, tmp_path / "runs", "b") + extra
    kill_and_resume("scripts/dpo.py", config, args, tmp_path / "runs" / "b", signal.SIGKILL, 30, tmp_path)
    straight, resumed = metric_losses(tmp_path / "runs" / "a"), metric_losses(tmp_path / "runs" / "b")
    assert sorted(straight) == list(range(1, 81)) and resumed == straight
