"""Agreement measures and consensus against values worked out by hand and against the krippendorff package."""

import math
import random

import krippendorff
import numpy as np
import pytest

from labeling import quality

A, B, C, D = 1, 2, 3, 4


def test_pairwise_agreement_counts_pairs_both_order_and_leaves_ties_out():
    assert quality.pairwise_agreement([[A], [B], [C]], [[B], [A], [C]]) == pytest.approx(2 / 3)
    assert quality.pairwise_agreement([[A], [B], [C]], [[A, B], [C]]) == 1.0  # A-B is tied in one: left out
    assert quality.pairwise_agreement([[A, B]], [[A, B]]) is None


def test_kendall_tau_b_corrects_for_ties():
    assert quality.kendall_tau_b([[A], [B], [C], [D]], [[A], [B], [C], [D]]) == 1.0
    assert quality.kendall_tau_b([[A], [B], [C], [D]], [[D], [C], [B], [A]]) == -1.0
    # five concordant pairs, B-C tied in the second: 5 / sqrt(6 * 5)
    assert quality.kendall_tau_b([[A], [B], [C], [D]], [[A], [B, C], [D]]) == pytest.approx(5 / math.sqrt(30))


def test_ranked_pairs_breaks_a_cycle_at_its_weakest_link():
    cycle = [[[A], [B], [C]], [[B], [C], [A]], [[C], [A], [B]]]  # A>B, B>C, C>A each 2 to 1
    assert quality.ranked_pairs_consensus(cycle) == [[A], [B], [C]]  # C>A would close the cycle: left out


def test_ranked_pairs_keeps_ties_nobody_separates_and_follows_the_majority():
    assert quality.ranked_pairs_consensus([[[A, B], [C]], [[A, B], [C]]]) == [[A, B], [C]]
    assert quality.ranked_pairs_consensus([[[A], [B], [C]], [[A], [B], [C]], [[C], [B], [A]]]) == [[A], [B], [C]]
    assert quality.ranked_pairs_consensus([[[A], [B]], [[B], [A]]]) == [[A, B]]  # one each: no majority


# Krippendorff's own example (Content Analysis, 2004; 2011 "Computing Krippendorff's alpha"):
# four coders, twelve units, None where a coder gave no value.
CODERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
UNITS = [list(unit) for unit in zip(*CODERS, strict=True)]


@pytest.mark.parametrize("level, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorffs_alpha_matches_his_worked_example(level, published):
    assert quality.krippendorff_alpha(UNITS, level) == pytest.approx(published, abs=5e-4)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorffs_alpha_matches_the_krippendorff_package(level):
    rng = random.Random(7)
    for _ in range(20):
        coders, units = rng.randint(2, 5), rng.randint(5, 30)
        values = [1, 2] if level == "nominal" else list(range(1, 8))
        data = [[rng.choice(values) if rng.random() > 0.2 else None for _ in range(units)] for _ in range(coders)]
        reference = krippendorff.alpha(
            reliability_data=np.array([[np.nan if v is None else v for v in row] for row in data], dtype=float),
            level_of_measurement=level,
        )
        ours = quality.krippendorff_alpha([list(unit) for unit in zip(*data, strict=True)], level)
        assert ours == pytest.approx(reference, abs=1e-9)


def test_alpha_is_none_without_pairable_values():
    assert quality.krippendorff_alpha([[1, None], [None, 2]]) is None
