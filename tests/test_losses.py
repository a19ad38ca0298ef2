import math

import pytest
import torch

from llm.losses import (
    IGNORE,
    bradley_terry,
    dpo_losses,
    dpo_pair_stats,
    entropy,
    ppo_policy_loss,
    ppo_value_loss,
    reward_model_losses,
    token_logprobs,
    token_nll,
)

LN = math.log


def test_token_nll_sums_the_counted_targets():
    # uniform over 3 (target 1: ln 3); probabilities 1/2, 1/4, 1/4 (target 0: ln 2); an ignored target
    logits = torch.tensor([[[0.0, 0.0, 0.0], [LN(2), 0.0, 0.0], [5.0, -5.0, 0.0]]])
    targets = torch.tensor([[1, 0, IGNORE]])
    loss, count = token_nll(logits, targets)
    assert count == 2 and loss.item() == pytest.approx(LN(6), rel=1e-6)


def test_token_nll_takes_logits_in_float32():
    logits = torch.tensor([[8.0, 0.0, 0.0]]).to(torch.bfloat16)
    loss, _ = token_nll(logits, torch.tensor([1]))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(8.0 + LN(1 + 2 * math.exp(-8)), rel=1e-6)


def test_token_logprobs_with_and_without_temperature():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    tokens = torch.tensor([0])
    assert token_logprobs(logits, tokens, 2.0).item() == pytest.approx(LN(math.e / (math.e + 2)), rel=1e-6)
    greedy = LN(math.e**2 / (math.e**2 + 2))
    assert token_logprobs(logits, tokens, 0.0).item() == pytest.approx(greedy, rel=1e-6)  # greedy scores the plain softmax
    assert token_logprobs(logits, tokens).item() == pytest.approx(greedy, rel=1e-6)


def test_entropy_by_hand():
    assert entropy(torch.zeros(4)).item() == pytest.approx(LN(4), rel=1e-6)
    h = -(0.75 * LN(0.75) + 0.25 * LN(0.25))
    assert entropy(torch.tensor([LN(3), 0.0])).item() == pytest.approx(h, rel=1e-6)
    assert entropy(torch.tensor([2 * LN(3), 0.0]), temperature=2.0).item() == pytest.approx(h, rel=1e-6)


def test_bradley_terry_and_the_centering_term():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.5])
    torch.testing.assert_close(bradley_terry(chosen, rejected, 0.5), torch.tensor([LN(1 + math.exp(-0.5)), LN(1 + math.exp(1.0))]))
    losses, stats = reward_model_losses(chosen, rejected, margin=0.0, center_coef=0.01)
    torch.testing.assert_close(losses, torch.tensor([LN(1 + math.exp(-1.0)) + 0.09, LN(1 + math.exp(0.5)) + 0.0025]))
    assert stats["accuracy"].item() == 1.0 and stats["margin"].item() == pytest.approx(0.5)


def test_dpo_losses_at_initialisation():
    policy = torch.tensor([-3.0, -5.0, -4.0, -2.0])  # chosen rows, then rejected rows
    lengths = torch.tensor([3, 4, 2, 5])
    for smoothing in (0.0, 0.2):
        sigmoid = dpo_losses(policy, policy.clone(), lengths, beta=0.1, loss="sigmoid", smoothing=smoothing)
        torch.testing.assert_close(sigmoid, torch.full((2,), LN(2)))
    ipo = dpo_losses(policy, policy.clone(), lengths, beta=0.1, loss="ipo", smoothing=0.0)
    torch.testing.assert_close(ipo, torch.full((2,), (1 / 0.2) ** 2))


def test_dpo_losses_by_hand_and_trl_statistics():
    reference = torch.tensor([-3.0, -3.0, -3.0, -3.0])
    better = torch.tensor([-2.0, -2.5, -4.0, -3.5])  # chosen up 1 and 0.5, rejected down 1 and 0.5
    h = 0.1 * torch.tensor([2.0, 1.0])
    torch.testing.assert_close(dpo_losses(better, reference, torch.ones(4), 0.1, "sigmoid", 0.0), -torch.nn.functional.logsigmoid(h))
    smoothed = dpo_losses(better, reference, torch.ones(4), 0.1, "sigmoid", 0.25)
    torch.testing.assert_close(smoothed, 0.75 * torch.log1p(torch.exp(-h)) + 0.25 * torch.log1p(torch.exp(h)))
    ipo = dpo_losses(better, reference, torch.tensor([2, 1, 2, 1]), 0.1, "ipo", 0.0)  # per-token log-ratios
    torch.testing.assert_close(ipo, torch.tensor([(1.0 - 5.0) ** 2, (1.0 - 5.0) ** 2]))
    m = dpo_pair_stats(better, reference, beta=0.1)
    torch.testing.assert_close(m["rewards/chosen"], torch.tensor(0.1 * (1.0 + 0.5)))
    torch.testing.assert_close(m["rewards/margins"], torch.tensor(0.1 * 3.0))
    assert m["rewards/accuracies"].item() == 2.0 and m["logps/rejected"].item() == -7.5


def test_ppo_policy_loss_clips_by_hand():
    old = torch.zeros(1, 3)
    new = torch.tensor([[LN(1.5), LN(0.5), 4.0]])  # the third token is padding
    advantages = torch.tensor([[1.0, -1.0, 7.0]])
    mask = torch.tensor([[True, True, False]])
    out = ppo_policy_loss(new, old, advantages, mask, clip_ratio=0.2)
    # A > 0, r = 1.5: max(-1.5, -1.2); A < 0, r = 0.5: max(0.5, 0.8); padding: 0
    torch.testing.assert_close(out.per_token, torch.tensor([[-1.2, 0.8, 0.0]]))
    torch.testing.assert_close(out.ratio, torch.tensor([[1.5, 0.5, 1.0]]))
    assert out.stats["loss/policy"].item() == pytest.approx(-0.4)
    assert out.stats["policy/clipfrac"].item() == 2.0
    assert out.stats["policy/approxkl"].item() == pytest.approx(0.5 * (LN(1.5) ** 2 + LN(0.5) ** 2))


def test_ppo_policy_loss_inside_the_clip_is_the_plain_surrogate():
    new = torch.tensor([[LN(1.1)]])
    out = ppo_policy_loss(new, torch.zeros(1, 1), torch.tensor([[2.0]]), torch.ones(1, 1, dtype=torch.bool), clip_ratio=0.2)
    assert out.per_token.item() == pytest.approx(-2.2) and out.stats["policy/clipfrac"].item() == 0.0


def test_ppo_value_loss_clips_by_hand():
    # v moved from 0 to 1, clip 0.5: the clipped value 0.5 is further from the return 2, so it counts
    assert ppo_value_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0]), 0.5).item() == pytest.approx(0.5 * 1.5**2)
    # return below: the unclipped error 1 is the larger
    assert ppo_value_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.0]), 0.5).item() == pytest.approx(0.5)


def test_clip_higher_raises_only_the_upper_bound():
    # DAPO: eps_low 0.2, eps_high 0.28; A > 0 at r = 1.5 is clipped at 1.28, A < 0 at r = 0.5 still at 0.8
    new = torch.tensor([[LN(1.5), LN(0.5), LN(1.25)]])
    advantages = torch.tensor([[1.0, -1.0, 1.0]])
    out = ppo_policy_loss(new, torch.zeros(1, 3), advantages, torch.ones(1, 3, dtype=torch.bool), clip_ratio=0.2, clip_ratio_high=0.28)
    torch.testing.assert_close(out.per_token, torch.tensor([[-1.28, 0.8, -1.25]]))
    assert out.stats["policy/clipfrac"].item() == 2.0  # 1.25 lies inside [0.8, 1.28]
