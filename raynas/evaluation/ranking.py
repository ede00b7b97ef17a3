"""How well one ranking of architectures predicts another: Kendall tau and Spearman rho with bootstrap
intervals.

OPANAS trusts its super-net as far as its ranking of sub-nets agrees with standalone training
(Sec. 4.3, Table 5: Kendall tau 0.61 on 15 sub-nets). With 10-20 architectures a point value says
little on its own, so every coefficient comes with a percentile bootstrap 95 % interval (resamples with
a constant side are dropped). Standalone AP is itself noisy: with several seeds per architecture the
bootstrap resamples the architectures *and*, within each, its seeds, so the interval counts the seed
noise too (issue 27); with one seed per architecture that is the plain bootstrap over architectures.
Two predictors of the same architectures (two super-nets) are compared paired: each resample scores
both on the same draw, so what they share (which architectures, which seeds) does not widen the interval
of their difference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = (2.5, 97.5)  # percentiles of a 95 % interval


def _coefficients(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    tau = stats.kendalltau(x, y).statistic
    rho = stats.spearmanr(x, y).statistic
    return float(tau), float(rho)


def _seed_table(per_seed: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)``: the seeds' values of each architecture in a row (NaN-padded) and how many
    each has."""
    rows = [np.asarray(values, dtype=float).ravel() for values in per_seed]
    if any(len(row) == 0 for row in rows):
        raise ValueError("every architecture needs at least one seed's value")
    counts = np.array([len(row) for row in rows])
    table = np.full((len(rows), counts.max(initial=1)), np.nan)
    for i, row in enumerate(rows):
        table[i, : len(row)] = row
    return table, counts


def _checked(predictors: Sequence[Sequence[float]], per_seed: Sequence[Sequence[float]]):
    xs = [np.asarray(p, dtype=float) for p in predictors]
    table, counts = _seed_table(per_seed)
    if any(x.ndim != 1 or len(x) != len(counts) for x in xs):
        shapes = [x.shape for x in xs]
        raise ValueError(f"need 1-d predictions of all {len(counts)} architectures, got shapes {shapes}")
    if len(counts) < 3:
        raise ValueError(f"rank agreement needs at least 3 architectures, got {len(counts)}")
    values = table[np.arange(table.shape[1]) < counts[:, None]]
    if not (all(np.isfinite(x).all() for x in xs) and np.isfinite(values).all()):
        raise ValueError("rank agreement needs finite scores (an architecture without a metric?)")
    return xs, table, counts


def _resamples(table: np.ndarray, counts: np.ndarray, bootstrap: int, seed: int) -> Iterator:
    """``(picked architectures, their mean over resampled seeds)`` of each bootstrap resample. The
    architectures come from one generator (the draws of a one-level bootstrap with this ``seed``), the
    seeds within each from another, so zero seed noise gives exactly the architecture-only intervals."""
    archs, within = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    n, width = len(counts), table.shape[1]
    for _ in range(bootstrap):
        pick = archs.integers(n, size=n)
        drawn = counts[pick]
        columns = (within.random((n, width)) * drawn[:, None]).astype(int)  # each in [0, its count)
        used = np.arange(width) < drawn[:, None]
        values = np.where(used, table[pick[:, None], columns], 0.0)
        yield pick, values.sum(axis=1) / drawn


def _interval(samples: list) -> tuple[list[float], list[float]]:
    if not samples:
        return [np.nan, np.nan], [np.nan, np.nan]
    low, high = np.percentile(samples, CONFIDENCE, axis=0).tolist()
    return low, high


def rank_agreement_over_seeds(
    predicted: Sequence[float],
    per_seed: Sequence[Sequence[float]],
    bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Kendall tau (tau-b) and Spearman rho of ``predicted`` vs each architecture's mean over its seeds
    (``per_seed[i]``: architecture i's values, one per seed; counts may differ), each with a two-level
    bootstrap 95 % interval: architectures drawn with replacement, then each drawn architecture's seeds
    with replacement. Keys as :func:`rank_agreement`'s."""
    (x,), table, counts = _checked([predicted], per_seed)
    mean = np.nansum(table, axis=1) / counts
    samples = [
        _coefficients(x[pick], y)
        for pick, y in _resamples(table, counts, bootstrap, seed)
        if np.ptp(x[pick]) > 0 and np.ptp(y) > 0
    ]
    tau, rho = _coefficients(x, mean)
    low, high = _interval(samples)
    return {
        "n": len(x),
        "kendall_tau": tau,
        "kendall_tau_low": low[0],
        "kendall_tau_high": high[0],
        "spearman_rho": rho,
        "spearman_rho_low": low[1],
        "spearman_rho_high": high[1],
    }


def rank_agreement(
    predicted: Sequence[float], actual: Sequence[float], bootstrap: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Kendall tau (tau-b, ties allowed) and Spearman rho of ``predicted`` vs ``actual``, each with a
    bootstrap 95 % interval over the architectures: ``{"n", "kendall_tau", "kendall_tau_low",
    "kendall_tau_high", "spearman_rho", "spearman_rho_low", "spearman_rho_high"}``."""
    y = np.asarray(actual, dtype=float)
    if y.ndim != 1 or np.shape(predicted) != y.shape:
        shapes = f"{np.shape(predicted)} and {y.shape}"
        raise ValueError(f"need two equally long 1-d sequences, got shapes {shapes}")
    return rank_agreement_over_seeds(predicted, y[:, None], bootstrap, seed)


def paired_difference(
    predicted: Sequence[float],
    reference: Sequence[float],
    per_seed: Sequence[Sequence[float]],
    bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """How much better ``predicted`` ranks the architectures than ``reference`` does (two super-nets'
    scores of the same architectures, in the same order): tau(predicted) - tau(reference) and the same for
    rho, against each architecture's mean over its seeds (``per_seed`` as in
    :func:`rank_agreement_over_seeds`), each with a paired two-level bootstrap 95 % interval (both scored
    on every resample): ``{"n", "kendall_tau_diff", "kendall_tau_diff_low", "kendall_tau_diff_high",
    "spearman_rho_diff", "spearman_rho_diff_low", "spearman_rho_diff_high"}``."""
    (x, ref), table, counts = _checked([predicted, reference], per_seed)
    mean = np.nansum(table, axis=1) / counts
    samples = [
        np.subtract(_coefficients(x[pick], y), _coefficients(ref[pick], y))
        for pick, y in _resamples(table, counts, bootstrap, seed)
        if np.ptp(x[pick]) > 0 and np.ptp(ref[pick]) > 0 and np.ptp(y) > 0
    ]
    tau, rho = np.subtract(_coefficients(x, mean), _coefficients(ref, mean)).tolist()
    low, high = _interval(samples)
    return {
        "n": len(x),
        "kendall_tau_diff": tau,
        "kendall_tau_diff_low": low[0],
        "kendall_tau_diff_high": high[0],
        "spearman_rho_diff": rho,
        "spearman_rho_diff_low": low[1],
        "spearman_rho_diff_high": high[1],
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
