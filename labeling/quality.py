"""Agreement and consensus: pure functions of rankings and labels.

A ranking is a list of groups of completion ids, best first; a group holds ties.
"""

import math
from collections import Counter, defaultdict
from itertools import combinations


def ranked_pairs_of(groups):
    """Every (better, worse) pair a ranking orders; tied completions give none."""
    return [(better, worse) for n, high in enumerate(groups) for low in groups[n + 1:]
            for better in high for worse in low]


def positions(groups):
    return {cid: rank for rank, group in enumerate(groups) for cid in group}


def pairwise_agreement(a, b):
    """InstructGPT's agreement between two rankings: the share of completion pairs both order
    strictly that they order the same way. None when they share no such pair."""
    pa, pb = positions(a), positions(b)
    same = total = 0
    for x, y in combinations(sorted(pa.keys() & pb.keys()), 2):
        da, db = pa[x] - pa[y], pb[x] - pb[y]
        if da and db:
            total += 1
            same += (da > 0) == (db > 0)
    return same / total if total else None


def kendall_tau_b(a, b):
    """Kendall's tau-b between two rankings of the same completions, ties corrected; None when undefined."""
    pa, pb = positions(a), positions(b)
    concordant = discordant = tied_a = tied_b = 0
    for x, y in combinations(sorted(pa.keys() & pb.keys()), 2):
        da, db = pa[x] - pa[y], pb[x] - pb[y]
        if da and db:
            if (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
        elif da:
            tied_b += 1
        elif db:
            tied_a += 1
    denominator = math.sqrt((concordant + discordant + tied_a) * (concordant + discordant + tied_b))
    return (concordant - discordant) / denominator if denominator else None


def krippendorff_alpha(units, level="nominal"):
    """Krippendorff's alpha over `units`: for each unit, the values its coders gave (None for none).

    `level` is nominal (flags), ordinal (1-7 ratings as ranks) or interval. Units with fewer than two
    values are not pairable and left out. None when there is no disagreement to expect.
    """
    coincidences = defaultdict(float)
    for unit in units:
        values = [v for v in unit if v is not None]
        if len(values) < 2:
            continue
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    coincidences[(c, k)] += 1 / (len(values) - 1)
    totals = Counter()
    for (c, _), weight in coincidences.items():
        totals[c] += weight
    n = sum(totals.values())
    if n <= 1:
        return None
    distance = _distance(level, totals)
    observed = sum(weight * distance(c, k) for (c, k), weight in coincidences.items())
    expected = sum(totals[c] * totals[k] * distance(c, k) for c in totals for k in totals) / (n - 1)
    return 1 - observed / expected if expected else None


def _distance(level, totals):
    if level == "nominal":
        return lambda c, k: float(c != k)
    if level == "interval":
        return lambda c, k: float(c - k) ** 2
    if level == "ordinal":
        ordered = sorted(totals)

        def ordinal(c, k):
            low, high = sorted((c, k))
            between = sum(totals[g] for g in ordered if low <= g <= high)
            return (between - (totals[c] + totals[k]) / 2) ** 2

        return ordinal
    raise ValueError(f"Unknown level of measurement {level!r}: nominal, ordinal or interval.")


def mean_agreement(rankings):
    """Mean pairwise agreement over every two labelers of one task; None for fewer than two."""
    scores = [s for a, b in combinations(rankings, 2) if (s := pairwise_agreement(a, b)) is not None]
    return sum(scores) / len(scores) if scores else None


def unanimous_pairs(rankings):
    """The (better, worse) pairs that every ranking orders the same way, in the first ranking's order."""
    first, *others = rankings
    orders = [positions(groups) for groups in others]
    return [(x, y) for x, y in ranked_pairs_of(first) if all(p[x] < p[y] for p in orders)]


def ranked_pairs_consensus(rankings):
    """One ranking from several by Tideman's ranked pairs (Tideman 1987).

    Each pair's majority is locked in, strongest first (most votes for the winner, then the
    largest margin, then by ids so the result is reproducible), unless it would close a cycle with
    pairs already locked. The consensus groups are then read off the locked graph: completions
    no remaining completion beats, best first. Pairs without a majority (tied votes) lock
    nothing, so completions nobody separates share a group.
    """
    ids = sorted({cid for groups in rankings for group in groups for cid in group})
    votes = {}
    for groups in rankings:
        for pair in ranked_pairs_of(groups):
            votes[pair] = votes.get(pair, 0) + 1
    majorities = [(votes[(x, y)], votes[(x, y)] - votes.get((y, x), 0), x, y)
                  for (x, y) in votes if votes[(x, y)] > votes.get((y, x), 0)]
    majorities.sort(key=lambda m: (-m[0], -m[1], m[2], m[3]))
    beats = {cid: set() for cid in ids}
    for _, _, winner, loser in majorities:
        if not _reaches(beats, loser, winner):
            beats[winner].add(loser)
    beaten = {cid: {w for w in ids if cid in beats[w]} for cid in ids}
    groups, left = [], set(ids)
    while left:
        top = sorted(cid for cid in left if not beaten[cid] & left)
        groups.append(top)
        left -= set(top)
    return groups


def _reaches(beats, start, goal):
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(beats[node])
    return False
