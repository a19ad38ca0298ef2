import copy

import pytest
import torch

from llm.config import ModelConfig
from llm.generate import SamplingParams
from llm.model import GPT
from llm.reward_model import RewardModel
from llm.rollouts import RolloutBatch, assign_advantages, assign_group_advantages, collect, gae, kl_per_token, whiten


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
    batch = collect(policy, critic, reference, reward, prompts, params, 0, torch.Generator().manual_seed(0), "k1", 1.0)
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


def test_missing_end_is_penalised():
    policy, critic, reward = models()
    params = SamplingParams(max_new_tokens=3, temperature=1.0, stop_ids=())
    generator = torch.Generator().manual_seed(0)
    plain = collect(policy, critic, policy, reward, [[1, 4]], params, 0, generator, "k1", 0.0)
    generator = torch.Generator().manual_seed(0)
    penalised = collect(policy, critic, policy, reward, [[1, 4]], params, 0, generator, "k1", 2.5)
    assert not bool(plain.finished[0])
    torch.testing.assert_close(penalised.scores, plain.scores - 2.5)


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


def test_rloo_rejects_replies_that_do_not_form_groups():
    mask = torch.ones(3, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="groups of 2"):
        assign_group_advantages(scored_batch([1.0, 2.0, 3.0], torch.zeros(3, 2), mask), 0.1, group=2, whiten_advantages=False)
