"""How well one ranking of architectures predicts another: Kendall tau and Spearman rho with bootstrap
intervals.

OPANAS trusts its super-net as far as its ranking of sub-nets agrees with standalone training
(Sec. 4.3, Table 5: Kendall tau 0.61 on 15 sub-nets). With 10-15 architectures a point value says
little on its own, so every coefficient comes with a percentile bootstrap 95 % interval over the
architectures (resampled with replacement; resamples with a constant side are dropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def _coefficients(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    tau = stats.kendalltau(x, y).statistic
    rho = stats.spearmanr(x, y).statistic
    return float(tau), float(rho)


def rank_agreement(
    predicted: Sequence[float], actual: Sequence[float], bootstrap: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Kendall tau (tau-b, ties allowed) and Spearman rho of ``predicted`` vs ``actual``, each with a
    bootstrap 95 % interval: ``{"n", "kendall_tau", "kendall_tau_low", "kendall_tau_high",
    "spearman_rho", "spearman_rho_low", "spearman_rho_high"}``."""
    x = np.asarray(predicted, dtype=float)
    y = np.asarray(actual, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two equally long 1-d sequences, got shapes {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"rank agreement needs at least 3 architectures, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("rank agreement needs finite scores (an architecture without a metric?)")
    tau, rho = _coefficients(x, y)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        pick = rng.integers(len(x), size=len(x))
        if np.ptp(x[pick]) == 0 or np.ptp(y[pick]) == 0:
            continue
        samples.append(_coefficients(x[pick], y[pick]))
    low, high = (np.percentile(samples, [2.5, 97.5], axis=0) if samples else np.full((2, 2), np.nan)).tolist()
    return {
        "n": len(x),
        "kendall_tau": tau,
        "kendall_tau_low": low[0],
        "kendall_tau_high": high[0],
        "spearman_rho": rho,
        "spearman_rho_low": low[1],
        "spearman_rho_high": high[1],
    }


def spread_picks(scores: Sequence[float], count: int) -> list[int]:
    """Indices of ``count`` entries spread evenly over the range of ``scores`` (lowest and highest
    included): for each of ``count`` evenly spaced target values, the nearest unused entry."""
    values = np.asarray(scores, dtype=float)
    if count < 2 or count > len(values):
        raise ValueError(f"need 2 <= count <= {len(values)} entries, got count={count}")
    targets = np.linspace(values.min(), values.max(), count)
    picked: list[int] = []
    for target in targets:
        order = np.argsort(np.abs(values - target), kind="stable")
        picked.append(int(next(i for i in order if i not in picked)))
    return sorted(picked, key=lambda i: (values[i], i))
