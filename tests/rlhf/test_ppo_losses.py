import math

import pytest
import torch

from rlhf.kl import AdaptiveKL
from rlhf.losses import gae, kl_penalty, policy_loss, token_rewards, value_loss, whiten


def test_gae_by_hand():
    # Two tokens, gamma 1, lambda 0.5: delta_1 = r1 + V2 - V1 = 0 + 2 - 1 = 1; delta_2 = r2 - V2 = 3 - 2 = 1.
    # A_2 = 1; A_1 = delta_1 + 0.5 * A_2 = 1.5; returns = A + V.
    rewards, values, mask = torch.tensor([[0.0, 3.0, 0.0]]), torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[1.0, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert advantages.tolist() == [[1.5, 1.0, 0.0]]
    assert returns.tolist() == [[2.5, 3.0, 0.0]]


def test_gae_discounts_with_gamma():
    advantages, _ = gae(torch.tensor([[1.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2), gamma=0.5, lam=1.0)
    assert advantages.tolist() == [[1.5, 1.0]]


def test_the_clipped_objective_by_hand():
    # Ratios e^0.5 = 1.65 (positive advantage: clipped at 1.2) and e^-0.5 = 0.61 (negative advantage: clipped at 0.8).
    logprobs, old = torch.tensor([[0.5, -0.5]]), torch.zeros(1, 2)
    loss, clipped = policy_loss(logprobs, old, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), clip=0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert clipped == 1.0
    # Inside the clip range nothing is clipped and the loss is -ratio * advantage.
    loss, clipped = policy_loss(torch.tensor([[0.1]]), torch.zeros(1, 1), torch.tensor([[2.0]]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(-2 * math.exp(0.1)) and clipped == 0.0


def test_padding_takes_no_part_in_the_objective():
    loss, _ = policy_loss(torch.tensor([[0.0, 5.0]]), torch.zeros(1, 2), torch.tensor([[1.0, 100.0]]),
                          torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(-1.0)


def test_the_clipped_value_loss_by_hand():
    # Old value 0, new 1, return 2: unclipped error 1, clipped value 0.2 gives error 1.8^2 = 3.24; the worse counts.
    loss = value_loss(torch.tensor([[1.0]]), torch.zeros(1, 1), torch.tensor([[2.0]]), torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 1.8 ** 2)
    # Moving towards the return inside the clip: plain squared error.
    loss = value_loss(torch.tensor([[0.1]]), torch.zeros(1, 1), torch.tensor([[0.5]]), torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.4 ** 2)


def test_the_kl_penalty_per_token_and_the_score_on_the_last_one():
    logprobs, ref = torch.tensor([[-1.0, -2.0, -0.5]]), torch.tensor([[-1.5, -1.0, -0.5]])
    kl = kl_penalty(logprobs, ref)
    assert kl.tolist() == [[0.5, -1.0, 0.0]]
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    rewards = token_rewards(torch.tensor([2.0]), kl * mask, mask, beta=0.1)
    assert rewards[0].tolist() == pytest.approx([-0.05, 2.1, 0.0])


def test_whitening_gives_zero_mean_and_unit_variance_over_real_tokens():
    values, mask = torch.tensor([[1.0, 3.0, 50.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    assert whiten(values, mask)[0].tolist() == pytest.approx([-1.0, 1.0, 0.0], abs=1e-4)


def test_the_adaptive_controller_moves_beta_towards_the_target():
    controller = AdaptiveKL(beta=0.1, target=6.0, horizon=100)
    controller.update(kl=12.0, episodes=10)  # error clipped at +20%
    assert controller.beta == pytest.approx(0.1 * 1.02)
    controller.update(kl=3.0, episodes=10)  # error -50% clipped at -20%
    assert controller.beta == pytest.approx(0.1 * 1.02 * 0.98)
