"""Statistics of human evaluations against numbers worked by hand and against reference implementations:
scipy.stats.bootstrap for the intervals, choix's pairwise fit for Bradley-Terry."""

import math

import choix
import numpy as np
import pytest
from scipy import stats

from labeling.evaluation_stats import (
    bradley_terry,
    bradley_terry_intervals,
    clustered_mean,
    outcome,
    win_probability,
)


def test_an_outcome_is_a_win_a_tie_or_a_loss_for_the_first():
    groups = [["a"], ["b", "c"], ["d"]]
    assert [outcome(groups, "a", "b"), outcome(groups, "b", "c"), outcome(groups, "d", "c")] == [1.0, 0.5, 0.0]
    assert outcome(groups, "a", "e") is None


def test_a_win_rate_counts_ties_as_half():
    estimate = clustered_mean([[1, 0.5], [0], [1]])  # three prompts, four judgments
    assert estimate.value == pytest.approx(2.5 / 4) and (estimate.n, estimate.prompts) == (4, 3)
    assert 0 <= estimate.low <= estimate.value <= estimate.high <= 1


def test_every_prompt_alike_gives_no_spread_and_no_values_give_nothing():
    assert clustered_mean([[1, 0], [1, 0], [0.5]]).as_dict() == {"value": 0.5, "low": 0.5, "high": 0.5, "n": 5,
                                                                "prompts": 3}
    assert clustered_mean([[], []]) is None


def test_the_interval_is_scipys_percentile_bootstrap_when_each_prompt_has_one_judgment():
    rng = np.random.default_rng(7)
    outcomes = rng.choice([0.0, 0.5, 1.0], p=[0.3, 0.2, 0.5], size=300)
    ours = clustered_mean([[value] for value in outcomes], resamples=20000, seed=1)
    theirs = stats.bootstrap((outcomes,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                             random_state=2).confidence_interval
    assert ours.value == pytest.approx(outcomes.mean())
    assert ours.low == pytest.approx(theirs.low, abs=0.006) and ours.high == pytest.approx(theirs.high, abs=0.006)


def test_resampling_prompts_widens_the_interval_when_a_prompts_judgments_agree():
    # Twenty prompts, each judged ten times alike: as informative as twenty judgments, not two hundred.
    clusters = [[float(n % 2)] * 10 for n in range(20)]
    by_prompt = clustered_mean(clusters, seed=3)
    as_if_independent = clustered_mean([[value] for cluster in clusters for value in cluster], seed=3)
    assert by_prompt.high - by_prompt.low > 2.5 * (as_if_independent.high - as_if_independent.low)


def test_bradley_terry_by_hand_with_a_tie():
    # a beats b three times and loses once: strengths ln 3 apart; a tie counts half to each side.
    assert np.diff(bradley_terry([[0, 3], [1, 0]], alpha=0)[::-1])[0] == pytest.approx(math.log(3))
    assert np.diff(bradley_terry([[0, 1.5], [0.5, 0]], alpha=0)[::-1])[0] == pytest.approx(math.log(3))
    assert win_probability(math.log(3)) == pytest.approx(0.75)


def test_bradley_terry_is_choixs_fit_of_the_same_pairs():
    rng = np.random.default_rng(0)
    truth = np.array([1.0, 0.3, 0.0, -1.2])
    pairs = [(i, j) if rng.random() < win_probability(truth[i] - truth[j]) else (j, i)
             for i, j in (rng.choice(4, size=2, replace=False) for _ in range(400))]
    wins = np.zeros((4, 4))
    for winner, loser in pairs:
        wins[winner, loser] += 1
    reference = choix.ilsr_pairwise(4, pairs, alpha=0.01)
    assert bradley_terry(wins) == pytest.approx(reference - reference.mean(), abs=1e-6)
    assert list(np.argsort(-bradley_terry(wins))) == [0, 1, 2, 3]


def test_a_version_with_no_wins_gets_a_finite_lowest_strength():
    wins = np.array([[0, 4, 2], [1, 0, 3], [0, 0, 0]])
    strengths = bradley_terry(wins)
    assert np.isfinite(strengths).all() and strengths.argmin() == 2


def test_bradley_terry_intervals_cover_the_truth_and_resample_prompts():
    rng = np.random.default_rng(5)
    truth = np.array([0.8, 0.0, -0.8])
    per_prompt = np.zeros((300, 3, 3))
    for prompt in range(300):
        for i, j in ((0, 1), (1, 2), (0, 2)):
            if rng.random() < win_probability(truth[i] - truth[j]):
                per_prompt[prompt, i, j] += 1
            else:
                per_prompt[prompt, j, i] += 1
    strengths, lows, highs = bradley_terry_intervals(per_prompt, resamples=400, seed=1)
    assert (lows <= strengths).all() and (strengths <= highs).all()
    assert (lows <= truth - truth.mean()).all() and (truth - truth.mean() <= highs).all()
    assert highs[1] < lows[0] and highs[2] < lows[1]  # 300 prompts tell the three apart
