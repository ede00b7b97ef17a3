"""NSGA-II's selection order (Deb et al. 2002): non-dominated rank, then crowding distance.

Points are tuples in which every coordinate is *higher is better* (negate a minimised objective
first, :func:`oriented`). A point with a missing value (``None``: a failed trial) is dominated by every
complete point and ranked after all of them. Pure Python: the populations here are tens to hundreds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, ...] | None

MODES = ("max", "min")


def oriented(values: Sequence[float | None], modes: Sequence[str]) -> Point:
    """``values`` turned higher-is-better (``min`` objectives negated); ``None`` when any is missing."""
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return tuple(v if mode == "max" else -v for v, mode in zip(values, modes))


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def non_dominated_fronts(points: Sequence[Point]) -> list[list[int]]:
    """Indices grouped into fronts: front 0 is the Pareto front, front 1 the front once 0 is removed, ...
    Missing points form the last front."""
    complete = [i for i, p in enumerate(points) if p is not None]
    dominated_by = {i: 0 for i in complete}
    dominating: dict[int, list[int]] = {i: [] for i in complete}
    for i in complete:
        for j in complete:
            if i != j and dominates(points[i], points[j]):
                dominating[i].append(j)
                dominated_by[j] += 1
    fronts, current = [], [i for i in complete if dominated_by[i] == 0]
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in dominating[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        current = sorted(following)
    missing = [i for i, p in enumerate(points) if p is None]
    return fronts + ([missing] if missing else [])


def crowding_distances(points: Sequence[tuple[float, ...]]) -> list[float]:
    """Crowding distance of each point within one front: the extremes of every objective get ``inf``,
    the others the sum over objectives of the normalised gap between their two neighbours."""
    n = len(points)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for axis in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][axis])
        low, high = points[order[0]][axis], points[order[-1]][axis]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(order, order[1:], order[2:]):
            distance[here] += (points[after][axis] - points[before][axis]) / (high - low)
    return distance


def nsga2_order(points: Sequence[Point]) -> list[int]:
    """Indices best first: lower front first, then larger crowding distance, then lower index."""
    order: list[int] = []
    for front in non_dominated_fronts(points):
        if points[front[0]] is None:
            order += sorted(front)
            continue
        crowding = crowding_distances([points[i] for i in front])
        order += [i for _, _, i in sorted(zip([-c for c in crowding], front, front))]
    return order


def pareto_mask(points: Sequence[Point]) -> list[bool]:
    """``True`` for the points on the Pareto front (front 0)."""
    fronts = non_dominated_fronts(points)
    front = set(fronts[0]) if fronts and points[fronts[0][0]] is not None else set()
    return [i in front for i in range(len(points))]
