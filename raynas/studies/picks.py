"""Which architectures of a scored pool to train standalone when measuring how well a super-net ranks.

Evolution decides among the best candidates of its pool, so that is where the super-net's ranking must
hold. Picks spread evenly in *score* (``raynas.evaluation.spread_picks``) follow the pool's skew: on a
pool with a long tail of bad networks half of them come from the bottom quarter, and the rank correlation
then says whether the super-net punishes skip / none edges, not whether it orders the candidates that
evolution chooses between (issue 27). These picks are stratified by *rank* instead, with the top quarter
of the pool over-represented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: the part of the pool (by rank) that ``top_share`` of the picks come from
TOP_FRACTION = 0.25


def _one_per_stratum(ranked: np.ndarray, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` entries of ``ranked``: it is cut into ``count`` contiguous strata of (nearly) equal
    size, and one entry is drawn at random from each."""
    if count == 0:
        return []
    return [int(rng.choice(stratum)) for stratum in np.array_split(ranked, count)]


def stratified_by_rank(
    scores: Sequence[float], count: int, top_share: float = 0.5, seed: int = 0
) -> list[int]:
    """Indices of ``count`` entries of ``scores`` (higher is better), best rank first: ``top_share`` of
    them (rounded) from the top quarter of the ranks, the rest from the other ranks, each part stratified
    by rank (one random pick per equal stretch of ranks), so bunched scores still give picks across the
    whole order. Deterministic for a ``seed``; tied scores are ranked by index."""
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError("scores must be a 1-d sequence of finite numbers (an architecture without a score?)")
    if not 2 <= count <= len(values):
        raise ValueError(f"need 2 <= count <= {len(values)} (the pool's size), got count={count}")
    if not 0.0 <= top_share <= 1.0:
        raise ValueError(f"top_share must lie in [0, 1], got {top_share}")
    ranked = np.argsort(-values, kind="stable")  # ranked[0]: the best entry
    top = max(1, math.ceil(TOP_FRACTION * len(values)))
    from_top = min(top, max(round(top_share * count), count - (len(values) - top)))
    rng = np.random.default_rng(seed)
    picked = _one_per_stratum(ranked[:top], from_top, rng) + _one_per_stratum(
        ranked[top:], count - from_top, rng
    )
    rank_of = {int(index): r for r, index in enumerate(ranked)}
    return sorted(picked, key=rank_of.__getitem__)
