"""Statistics of human evaluations: pure functions of judgments.

A judgment orders the outputs of several model versions on one prompt, as a ranking does (groups
of ties, best first). Between two versions it is a win (1), a tie (0.5) or a loss (0) for the
first. Judgments of one prompt are not independent (the same prompt is easy or hard for every
model), so intervals are percentile bootstrap intervals that resample prompts, as InstructGPT's
and Chatbot Arena's do.

Bradley-Terry strengths come from `choix` (the maximum-likelihood estimate by iterative Luce
spectral ranking) on the matrix of wins, a tie counting half to each side, with a little
regularisation so that a version that never won still gets a finite strength. Strengths are
log-odds: a version `d` above another beats it with probability 1 / (1 + e^-d).
"""

from collections import defaultdict
from dataclasses import dataclass

import choix
import numpy as np
from scipy import sparse

CONFIDENCE = 0.95
RESAMPLES = 2000
BT_RESAMPLES = 1000  # each a Bradley-Terry fit: half as many, as Chatbot Arena draws
ALPHA = 0.01  # the regularisation of the Bradley-Terry fit: a prior of a hundredth of a tie between every pair
CHUNK = 250  # resamples drawn at a time, which bounds the memory one bootstrap takes


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int  # observations behind it (judgments, ratings)
    prompts: int

    def as_dict(self):
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n, "prompts": self.prompts}


def outcome(groups, first, second):
    """1 if `first` is ranked above `second` in `groups`, 0.5 for a tie, 0 below; None if either is absent."""
    place = {member: rank for rank, group in enumerate(groups) for member in group}
    if first not in place or second not in place:
        return None
    return 0.5 if place[first] == place[second] else float(place[first] < place[second])


def clustered_mean(clusters, *, confidence=CONFIDENCE, resamples=RESAMPLES, seed=0):
    """The mean of every value, with a percentile bootstrap interval that resamples the clusters (prompts) whole.

    `clusters` is a list of lists of numbers, one list per prompt; empty lists are left out. None when
    there are no values at all.
    """
    means = ClusteredMeans()
    for n, cluster in enumerate(clusters):
        for value in cluster:
            means.add("mean", n, value)
    return means.estimates(confidence=confidence, resamples=resamples, seed=seed).get("mean")


class ClusteredMeans:
    """Several means over the same clusters (prompts), each with its percentile bootstrap interval from the same
    draws of clusters: one pass of resampling for every number of an evaluation. A measure that has no value in a
    cluster leaves it out of its mean, and a draw without any of its clusters out of its interval."""

    def __init__(self):
        self.sums, self.counts = defaultdict(float), defaultdict(int)  # by (measure, cluster)
        self.measures, self.clusters = {}, {}

    def add(self, measure, cluster, value, count=1):
        """Add a value of `measure` in `cluster` (or the sum of `count` values)."""
        self.measures.setdefault(measure, len(self.measures))
        self.clusters.setdefault(cluster, len(self.clusters))
        self.sums[measure, cluster] += value
        self.counts[measure, cluster] += count

    def estimates(self, *, confidence=CONFIDENCE, resamples=RESAMPLES, seed=0):
        """{measure: Estimate} for every measure added."""
        if not self.measures:
            return {}
        sums = np.zeros((len(self.clusters), len(self.measures)))
        counts = np.zeros_like(sums)
        for (measure, cluster), total in self.sums.items():
            at = self.clusters[cluster], self.measures[measure]
            sums[at], counts[at] = total, self.counts[measure, cluster]
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = _resampled(len(self.clusters), resamples, seed,
                              lambda weights: (weights @ sums) / (weights @ counts))
            lows, highs = np.nanquantile(boot, [(1 - confidence) / 2, 1 - (1 - confidence) / 2], axis=0)
        return {measure: Estimate(float(sums[:, n].sum() / counts[:, n].sum()), float(lows[n]), float(highs[n]),
                                  int(counts[:, n].sum()), int((counts[:, n] > 0).sum()))
                for measure, n in self.measures.items()}


def bradley_terry(wins, *, alpha=ALPHA):
    """Log-strengths (mean 0) of the versions from `wins`, where wins[i, j] counts i's wins over j."""
    strengths = choix.ilsr_pairwise_dense(np.asarray(wins, dtype=float), alpha=alpha)
    return strengths - strengths.mean()


def bradley_terry_intervals(per_prompt, *, versions=None, alpha=ALPHA, confidence=CONFIDENCE,
                            resamples=BT_RESAMPLES, seed=0):
    """(strengths, lows, highs) of the versions: the fit on all judgments, and percentile bootstrap intervals
    that resample prompts. `per_prompt` has one wins matrix per prompt: an array of shape (prompts, versions,
    versions), or a scipy sparse matrix of shape (prompts, versions × versions) with `versions` given."""
    if sparse.issparse(per_prompt):
        flat = sparse.csr_matrix(per_prompt, dtype=float)
    else:
        per_prompt = np.asarray(per_prompt, dtype=float)
        versions = per_prompt.shape[1]
        flat = per_prompt.reshape(per_prompt.shape[0], versions * versions)
    prompts = flat.shape[0]
    strengths = bradley_terry(np.asarray(flat.sum(axis=0)).reshape(versions, versions), alpha=alpha)

    def fits(weights):
        totals = np.asarray(weights @ flat).reshape(len(weights), versions, versions)
        return np.stack([bradley_terry(total, alpha=alpha) for total in totals])

    boot = _resampled(prompts, resamples, seed, fits)
    lows, highs = np.quantile(boot, [(1 - confidence) / 2, 1 - (1 - confidence) / 2], axis=0)
    return strengths, lows, highs


def win_probability(strength_difference):
    """The chance that a version beats another whose strength is `strength_difference` lower."""
    return float(1 / (1 + np.exp(-strength_difference)))


def _resampled(clusters, resamples, seed, statistic):
    """`statistic(weights)` for bootstrap draws of the clusters, each row of `weights` counting how often each
    cluster was drawn; drawn CHUNK resamples at a time, concatenated."""
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, resamples, CHUNK):
        rows = min(CHUNK, resamples - start)
        draws = rng.integers(0, clusters, size=(rows, clusters)) + clusters * np.arange(rows)[:, None]
        weights = np.bincount(draws.ravel(), minlength=rows * clusters).reshape(rows, clusters).astype(float)
        parts.append(np.asarray(statistic(weights)))
    return np.concatenate(parts)

