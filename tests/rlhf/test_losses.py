import math

import pytest
import torch

from rlhf.losses import ranking_loss, ranking_pairs, sft_loss


def test_equal_rewards_give_log_2():
    loss, _ = ranking_loss(torch.zeros(4), [[[0], [1], [2], [3]]])
    assert loss.item() == pytest.approx(math.log(2))


def test_a_ranking_of_three_with_a_tie_by_hand():
    # A > (B = C): pairs (A, B) and (A, C); the tie B = C gives none.
    rewards = torch.tensor([2.0, 1.0, -1.0])
    loss, accuracy = ranking_loss(rewards, [[[0], [1, 2]]])
    by_hand = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-3.0))) / 2
    assert loss.item() == pytest.approx(by_hand)
    assert accuracy == 1.0


def test_the_margin_is_subtracted_from_each_difference():
    loss, _ = ranking_loss(torch.tensor([1.0, 0.0]), [[[0], [1]]], margin=1.0)
    assert loss.item() == pytest.approx(math.log(2))


def test_each_prompt_weighs_the_same_whatever_its_k():
    # Prompt 1 (K=2) has loss log(1+e^-1); prompt 2 (K=4, all equal) has log 2 over its 6 pairs.
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    loss, _ = ranking_loss(rewards, [[[0], [1]], [[0], [1], [2], [3]]])
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1.0)) + math.log(2)) / 2)


def test_pairs_index_the_flattened_batch():
    better, worse, prompt = ranking_pairs([[[1], [0]], [[0, 1], [2]]])
    assert list(zip(better.tolist(), worse.tolist(), prompt.tolist())) == [(1, 0, 0), (2, 4, 1), (3, 4, 1)]


def test_a_prompt_whose_completions_all_tie_adds_nothing():
    loss, _ = ranking_loss(torch.tensor([3.0, 0.0, 1.0, 1.0], requires_grad=True), [[[0], [1]], [[0, 1]]])
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-3.0)))


def test_sft_loss_counts_only_labelled_tokens():
    # Vocabulary of 2; the logits make token 1 twice as likely (e^0 vs e^log2) at every position.
    logits = torch.tensor([[[0.0, math.log(2)]] * 4])
    labels = torch.tensor([[-100, -100, 1, 0]])  # predicted from positions 1 and 2
    expected = (-math.log(2 / 3) - math.log(1 / 3)) / 2
    assert sft_loss(logits, labels).item() == pytest.approx(expected)
