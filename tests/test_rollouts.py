import copy
import math

import pytest
import torch
import torch.nn as nn

from llm.config import ModelConfig
from llm.data.tasks import Task
from llm.generate import SamplingParams
from llm.losses import token_logprobs
from llm.model import GPT
from llm.reward_model import RewardModel
from llm.rollouts import (
    RolloutBatch,
    assign_advantages,
    assign_group_advantages,
    checker_rewards,
    collect,
    gae,
    group_normalised_advantages,
    group_stats,
    kl_per_token,
    leave_one_out_advantages,
    score,
    source_rewards,
    weighted_score,
    whiten,
)


def test_gae_matches_a_hand_computed_example():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 9.0]])
    mask = torch.tensor([[True, True, True, False]])  # the last column is padding after the reply
    gamma, lam = 0.9, 0.8
    # deltas: t2 = 1 - 0.7 = 0.3; t1 = 0 + 0.9*0.7 - 0.6 = 0.03; t0 = 0 + 0.9*0.6 - 0.5 = 0.04
    a2 = 0.3
    a1 = 0.03 + 0.9 * 0.8 * a2
    a0 = 0.04 + 0.9 * 0.8 * a1
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor([[a0, a1, a2, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[a0 + 0.5, a1 + 0.6, a2 + 0.7, 0.0]]))


def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -2.0, -0.2])
    torch.testing.assert_close(kl_per_token(logp, ref, "k1"), logp - ref)
    k3 = kl_per_token(logp, ref, "k3")
    assert (k3 >= 0).all() and k3[1] == 0
    with pytest.raises(ValueError, match="k1 or k3"):
        kl_per_token(logp, ref, "k2")


def test_whiten_uses_only_real_tokens():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    out = whiten(values, mask)
    assert abs(float(out[mask].mean())) < 1e-6 and out[0, 3] == 0


def models():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=30, block_size=32, n_layer=1, n_head=2, n_embd=16)
    policy = GPT(cfg).eval()
    return policy, RewardModel(GPT(cfg)).eval(), RewardModel(GPT(cfg)).eval()


def test_rollout_logprobs_match_generation_and_kl_is_zero_against_itself():
    policy, critic, reward = models()
    reference = copy.deepcopy(policy)
    prompts = [[1, 4, 5], [1, 7], [1, 3, 3, 9, 2]]
    params = SamplingParams(max_new_tokens=6, temperature=0.9, stop_ids=(2,))
    batch = collect(policy, critic, reference, prompts, params, 0, torch.Generator().manual_seed(0), "k1")
    score(batch, source_rewards(["model"], batch, reward, [None] * 3, [""] * 3), {"model": 1.0}, 1.0)
    assert batch.kl.abs().max() == 0
    assert batch.input_ids.shape[1] == batch.offset + batch.reply_mask.shape[1]
    from llm.generate import generate

    again = generate(policy, prompts, params, 0, generator=torch.Generator().manual_seed(0))
    for row, (tokens, logprobs) in enumerate(zip(again.tokens, again.logprobs)):
        n = len(tokens)
        assert batch.replies[row, :n].tolist() == tokens and int(batch.reply_mask[row].sum()) == n
        torch.testing.assert_close(batch.logprobs[row, :n], torch.tensor(logprobs), atol=1e-5, rtol=1e-5)
    assign_advantages(batch, kl_coef=0.1, gamma=1.0, lam=1.0, whiten_advantages=False)
    # zero KL, gamma = lambda = 1: the return at every reply token is the final score
    first_returns = batch.returns[:, 0]
    torch.testing.assert_close(first_returns, batch.scores, atol=1e-5, rtol=1e-5)
    assert (batch.advantages[~batch.reply_mask] == 0).all()


class LastTokenScore(nn.Module):
    """A stand-in reward model: the score at each position is half the token id there."""

    def forward(self, input_ids, attention_mask):
        return input_ids.float() * 0.5


TASK = Task(kind="repeat", prompt="Repeat the word red 2 times.", answer="red red")


def test_checker_reward_is_one_for_a_finished_correct_reply_only():
    replies = ["red red", "  red   red ", "red", "red red"]
    finished = torch.tensor([True, True, True, False])  # the last one is right but hit the length limit
    torch.testing.assert_close(checker_rewards([TASK] * 4, replies, finished), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="built-in task"):
        checker_rewards([None], ["red red"], torch.tensor([True]))


def test_each_reward_source_and_their_weighted_sum_match_hand_values():
    # three replies, laid out [prompt | reply] with padding 0: the model source reads the last real token
    ids = torch.tensor([[5, 7, 8, 0], [5, 7, 4, 6], [5, 7, 9, 0]])
    mask = ids != 0
    batch = RolloutBatch(ids, mask, mask[:, 2:], 2, torch.tensor([True, True, False]), None, None, None, None, None)
    rewards = source_rewards(["model", "checker"], batch, LastTokenScore(), [TASK] * 3, ["red red", "red", "red red"])
    torch.testing.assert_close(rewards["model"], torch.tensor([4.0, 3.0, 4.5]))  # half of 8, 6, 9
    torch.testing.assert_close(rewards["checker"], torch.tensor([1.0, 0.0, 0.0]))  # the third did not stop
    score(batch, rewards, {"model": 0.5, "checker": 2.0}, missing_end_penalty=1.0)
    # 0.5 * model + 2 * checker, and the reply that did not stop loses 1
    torch.testing.assert_close(batch.scores, torch.tensor([2.0 + 2.0, 1.5 + 0.0, 2.25 + 0.0 - 1.0]))
    assert batch.rewards == rewards
    only_checker = weighted_score({"checker": rewards["checker"]}, {"checker": 1.0}, batch.finished, 1.0)
    torch.testing.assert_close(only_checker, torch.tensor([1.0, 0.0, -1.0]))


def test_missing_end_is_penalised():
    policy, critic, reward = models()
    params = SamplingParams(max_new_tokens=3, temperature=1.0, stop_ids=())
    batch = collect(policy, critic, policy, [[1, 4]], params, 0, torch.Generator().manual_seed(0), "k1")
    assert not bool(batch.finished[0])
    rewards = source_rewards(["model"], batch, reward, [None], [""])
    torch.testing.assert_close(weighted_score(rewards, {"model": 1.0}, batch.finished, 2.5), rewards["model"] - 2.5)


def test_aligned_rollouts_are_the_same_rollouts_in_a_wider_layout():
    """Processes align their rollouts to the widest prompt and reply among them before sharing them."""
    policy, critic, _ = models()
    params = SamplingParams(max_new_tokens=4, temperature=1.0, stop_ids=())
    batch = collect(policy, critic, policy, [[1, 4], [1, 4, 5]], params, 0, torch.Generator().manual_seed(0), "k1")
    batch.scores, batch.rewards = torch.tensor([1.0, 2.0]), {"model": torch.tensor([1.0, 2.0])}
    wide = batch.aligned(batch.offset + 2, batch.reply_mask.shape[1] + 3, pad_id=0)
    assert wide.offset == 5 and wide.input_ids.shape == (2, 5 + 7) and wide.reply_mask.shape == (2, 7)
    assert torch.equal(wide.replies[:, :4], batch.replies) and not wide.reply_mask[:, 4:].any() and not wide.attention_mask[:, :2].any()
    for name in ("logprobs", "ref_logprobs", "values", "kl"):
        assert torch.equal(getattr(wide, name)[:, :4], getattr(batch, name)) and not getattr(wide, name)[:, 4:].any()
    assert wide.scores is batch.scores and wide.rewards is batch.rewards
    # the policy reads the same log-probabilities for the replies from the wider layout
    logits = policy(wide.input_ids, attention_mask=wide.attention_mask)
    torch.testing.assert_close(token_logprobs(wide.reply_slice(logits), wide.replies)[:, :4], batch.logprobs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="cannot align"):
        batch.aligned(batch.offset - 1, 4, 0)


def scored_batch(scores, kl, mask):
    n, width = mask.shape
    zeros = torch.zeros(n, width)
    return RolloutBatch(torch.zeros(n, 1 + width, dtype=torch.long), torch.ones(n, 1 + width, dtype=torch.bool), mask, 1,
                        torch.ones(n, dtype=torch.bool), torch.tensor(scores), zeros, zeros, zeros, kl * mask)


def test_rloo_advantage_is_the_return_minus_the_mean_of_the_other_replies():
    mask = torch.tensor([[True, True, False]] * 3 + [[True, False, False]] * 3)
    kl = torch.tensor([[0.5, 0.5, 9.0]] + [[0.0, 0.0, 0.0]] * 5)  # 9.0 sits on padding and must not count
    batch = scored_batch([1.0, 2.0, 6.0, 4.0, 4.0, 4.0], kl, mask)
    assign_group_advantages(batch, kl_coef=0.2, group=3, whiten_advantages=False)
    # group 1 returns: 1 - 0.2 * 1.0 = 0.8, 2, 6; each minus the mean of the other two
    expected = torch.tensor([0.8 - 4.0, 2.0 - 3.4, 6.0 - 1.4, 0.0, 0.0, 0.0])
    torch.testing.assert_close(batch.advantages, expected[:, None] * mask)
    # a group whose replies all score the same teaches nothing
    assert (batch.advantages[3:] == 0).all()


@pytest.mark.parametrize("estimator", ["rloo", "grpo", "dr_grpo"])
def test_group_advantages_reject_replies_that_do_not_form_groups(estimator):
    mask = torch.ones(3, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="groups of 2"):
        assign_group_advantages(scored_batch([1.0, 2.0, 3.0], torch.zeros(3, 2), mask), 0.1, 2, False, estimator)


def test_leave_one_out_advantages_match_hand_values():
    # each minus the mean of the other two: 1 - 2.5, 2 - 2, 3 - 1.5
    torch.testing.assert_close(leave_one_out_advantages(torch.tensor([1.0, 2.0, 3.0]), 3), torch.tensor([-1.5, 0.0, 1.5]))


def test_group_normalised_advantages_match_hand_values():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0, 0.7, 0.7, 0.7, 0.7])
    out = group_normalised_advantages(scores, group=4)
    # group 1: mean 0.5, Bessel-corrected std sqrt(4 * 0.25 / 3) = 0.57735; eps 1e-4 is added to the std
    half = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    # group 2: mean 0.75, deviations -0.75 (x3) and 2.25, std sqrt((3 * 0.5625 + 5.0625) / 3) = 1.5
    low, high = -0.75 / (1.5 + 1e-4), 2.25 / (1.5 + 1e-4)
    expected = torch.tensor([half, -half, -half, half, low, low, low, high, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(out, expected)
    assert (out[8:] == 0).all()  # a tied group (std 0) gets exactly 0, not rounding error over eps


def test_grpo_advantage_is_the_normalised_score_less_the_centred_kl_penalty():
    mask = torch.tensor([[True, True, False]] * 2 + [[True, False, False]] * 2)
    kl = torch.tensor([[0.5, 0.5, 9.0], [0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.6, 0.0, 0.0]])  # 9.0 sits on padding
    batch = scored_batch([2.0, 0.0, 1.0, 1.0], kl, mask)
    assign_group_advantages(batch, kl_coef=0.5, group=2, whiten_advantages=False, estimator="grpo")
    # group 1: scores 2 and 0, mean 1, std sqrt(2); KLs 1.0 and 0.0, mean 0.5
    z = 1.0 / (math.sqrt(2) + 1e-4)
    # group 2 ties on score (advantage 0 from it); KLs 0.2 and 0.6, mean 0.4: only the KL term is left
    expected = torch.tensor([z - 0.5 * 0.5, -z + 0.5 * 0.5, 0.5 * 0.2, -0.5 * 0.2])
    torch.testing.assert_close(batch.advantages, expected[:, None] * mask)
    # the return is the same as RLOO's: the score less kl_coef times the summed KL
    torch.testing.assert_close(batch.returns[:, 0], torch.tensor([1.5, 0.0, 0.9, 0.7]))


def test_dr_grpo_centres_scores_without_dividing_by_the_spread():
    mask = torch.ones(4, 2, dtype=torch.bool)
    batch = scored_batch([1.0, 0.0, 0.0, 0.0], torch.zeros(4, 2), mask)
    assign_group_advantages(batch, kl_coef=0.5, group=2, whiten_advantages=False, estimator="dr_grpo")
    torch.testing.assert_close(batch.advantages[:, 0], torch.tensor([0.5, -0.5, 0.0, 0.0]))


def test_group_stats_pass_at_k_and_the_share_of_groups_with_one_reward():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    stats = group_stats(rewards, 3)
    # groups (1, 0, 0), (0, 1, 1), (0, 0, 0): two have a right reply, one is all the same
    assert stats == {"pass@1": pytest.approx(3 / 9), "pass@3": pytest.approx(2 / 3), "frac_reward_zero_std": pytest.approx(1 / 3)}
