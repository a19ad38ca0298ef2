import math
import signal
import subprocess
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest_helpers import FOUR_ITEMS, PYTHON, REPO, kill_and_resume, metric_losses, read_metrics, reward_overrides
from llm.data.tasks import REJECTION_KINDS
from llm.stages import reward
from llm.stages.reward import RewardStage, reward_metrics


def test_bradley_terry_loss_by_hand(monkeypatch):
    stage = RewardStage.__new__(RewardStage)
    stage.cfg = SimpleNamespace(margin=0.5, center_coef=0.01)
    # two pairs: chosen ahead by 1 (r = 2 vs 1), and behind by 0.5 (r = 0 vs 0.5)
    monkeypatch.setattr(reward, "pair_rewards", lambda model, batch: (torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.5])))
    mask = torch.ones(4, 3, dtype=torch.bool)
    out = stage.loss(None, {"attention_mask": mask, "weights": torch.ones(2)})
    expected = (math.log1p(math.exp(-(1.0 - 0.5))) + 0.01 * 3.0**2) + (math.log1p(math.exp(-(-0.5 - 0.5))) + 0.01 * 0.5**2)
    assert out.count == 2 and out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert float(out.metrics["accuracy"]) == 1.0 and float(out.metrics["margin"]) == pytest.approx(0.5)
    # the same two pairs from one ranking: each weighs 1/2, so the ranking counts as one item
    grouped = stage.loss(None, {"attention_mask": mask, "weights": torch.tensor([0.5, 0.5])})
    assert grouped.count == 1 and grouped.loss.item() == pytest.approx(expected / 2, rel=1e-6)
    assert float(grouped.metrics["accuracy"]) == 0.5


def test_pairs_of_one_ranking_share_a_batch_slot_weighted_to_count_once():
    from llm.data.pairs import PairExample, collate_units, units

    pairs = [PairExample([1], [2], [3], group="r1"), PairExample([1], [4], [5]), PairExample([1], [2], [5], group="r1"),
             PairExample([1], [3], [5], group="r1")]
    slots = units(pairs)
    assert [[p.rejected for p in slot] for slot in slots] == [[[3], [5], [5]], [[5]]]
    assert collate_units(slots, 0)["weights"].tolist() == pytest.approx([1 / 3] * 3 + [1.0])


def test_reward_metrics_by_hand():
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0, 0.5]), torch.tensor([0.0, 0.0, 3.0, -0.5])
    m = reward_metrics(chosen, rejected, ["truncated", "truncated", "wrong_answer", ""])
    assert m["val_accuracy"] == 0.5  # a tie is not a win
    assert m["val_margin"] == pytest.approx(0.25) and m["rewards/chosen"] == pytest.approx(0.875)
    assert m["val_loss"] == pytest.approx(float(-F.logsigmoid(chosen - rejected).mean()))
    assert m["val_accuracy_by_kind"] == {"truncated": 0.5, "wrong_answer": 0.0}  # an unnamed kind is left out


def test_reward_run_separates_held_out_pairs(reward_run):
    evals = read_metrics(reward_run, "eval")
    # The mean held-out margin r_chosen - r_rejected over 80 pairs: a random head starts it within 0.4 of 0, and
    # 60 steps raised it by 0.33-1.2 over 22 runs of the fixture chain (train.seed 0-9 and 1337, each with
    # AVX-512 and with AVX2 kernels). Held-out accuracy is not asserted: 0.33-0.65 at the start, 0.60-0.75 after.
    assert evals[0]["step"] == 0 and evals[-1]["val_margin"] > evals[0]["val_margin"] + 0.15
    assert set(evals[-1]["val_accuracy_by_kind"]) <= set(REJECTION_KINDS)


def test_reward_model_overfits_four_pairs(sft_run, tmp_path):
    from llm.config import RewardConfig, load_config
    from llm.stages.launch import run_stage

    cfg = load_config(RewardConfig, None, reward_overrides(sft_run, tmp_path, "fit") + FOUR_ITEMS + ["train.max_steps=60", "optim.lr=3e-3"])
    run_stage("reward", cfg)
    train = read_metrics(cfg.run_dir, "train")
    # Every batch holds the same four pairs. Over 44 runs (22 SFT models, train.seed 0-9 and 1337, each trained
    # and fitted with AVX-512 and with AVX2 kernels) all four were ranked right from step 23 at the latest, the
    # loss stayed below 0.1 from step 40 at the latest and ended at 0.0008 or less. A wrongly signed loss ranks
    # them backwards; a step that did nothing leaves a random head, right on about half of them.
    assert all(line["accuracy"] == 1.0 for line in train[-10:])
    assert train[-1]["loss"] < 0.1 < train[0]["loss"]


def test_score_script_prints_scores_best_first(reward_run):
    from llm.load import load_reward_model
    from llm.tokenizer import render_prompt

    prompt = "What is the first word in: red fox?"
    candidates = ["red", "fox", "red fox", "blue", "the first word is red"]
    # each reply's reward computed here, one unpadded sequence at a time: the score at its end-of-turn token
    model, tok, _ = load_reward_model(reward_run)
    context = render_prompt(tok, [{"role": "user", "content": prompt}])
    with torch.no_grad():
        expected = {r: float(model(torch.tensor([context + tok.encode(r) + [tok.end_id]]))[0, -1]) for r in candidates}
    ranked = sorted(candidates, key=expected.get, reverse=True)
    # The tiny reward model puts some replies within 0.001 of each other, but best and worst apart (0.13 and 3.2
    # in the two fixture models seen): given worst first, a script that kept the order given, or paired sorted
    # scores with unsorted replies, prints the worst reply first or the best score beside it.
    assert expected[ranked[0]] - expected[ranked[-1]] > 0.02, expected
    args = [x for r in reversed(ranked) for x in ("--response", r)]
    done = subprocess.run([PYTHON, "scripts/score.py", "--checkpoint", str(reward_run), "--prompt", prompt, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = [line.split("\t", 1) for line in done.stdout.strip().splitlines()]
    replies = [reply for _, reply in printed]
    assert sorted(replies) == sorted(candidates), done.stdout
    for score, reply in printed:  # printed with 4 decimals; batching and padding move a score by ~1e-6
        assert float(score) == pytest.approx(expected[reply], abs=2e-4), (reply, expected, done.stdout)
    # best first by the rewards computed here (replies closer than the tolerance may come in either order)
    assert all(expected[a] >= expected[b] - 2e-4 for a, b in zip(replies, replies[1:])), (expected, done.stdout)


def test_score_script_rejects_a_non_reward_checkpoint(sft_run):
    done = subprocess.run([PYTHON, "scripts/score.py", "--checkpoint", str(sft_run), "--prompt", "x", "--response", "y"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a reward model" in done.stderr


def test_reward_resume_after_kill_reproduces_losses(sft_run, tmp_path):
    from llm.config import RewardConfig, load_config
    from llm.stages.launch import run_stage

    base = reward_overrides(sft_run, tmp_path / "runs", "a") + ["train.max_steps=80", "checkpoint.save_every=10"]
    run_stage("reward", load_config(RewardConfig, REPO / "configs/reward/tiny.yaml", base))
    args = reward_overrides(sft_run, tmp_path / "runs", "b") + ["train.max_steps=80", "checkpoint.save_every=10"]
    kill_and_resume("scripts/reward.py", "configs/reward/tiny.yaml", args, tmp_path / "runs" / "b", signal.SIGKILL, 30, tmp_path)
    assert metric_losses(tmp_path / "runs" / "b") == metric_losses(tmp_path / "runs" / "a")


def test_top1_best_counts_prompts_whose_highest_scored_reply_the_rater_ranks_best():
    from llm.data.pairs import PairExample
    from llm.data.sampled_pairs import KIND, STYLE_KIND
    from llm.eval.rankings import ranked_groups, top1_best

    class LastToken(torch.nn.Module):  # a sequence's reward is its last token id
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids, mask):
            return ids.float()

    pairs = [
        PairExample([1], [9], [5], STYLE_KIND), PairExample([1], [9], [7], KIND),  # best scored highest
        PairExample([2], [3], [8], KIND),  # a worse reply scored highest
        PairExample([3], [4], [2], "off_by_one"),  # a hand-made pair: not a sampled group
    ]
    groups = ranked_groups(pairs)
    assert [sorted(map(tuple, seqs)) for seqs, _ in groups] == [[(1, 5), (1, 7), (1, 9)], [(2, 3), (2, 8)]]
    assert top1_best(LastToken(), groups, pad_id=0) == 0.5
