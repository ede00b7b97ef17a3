"""The rank-correlation bootstraps on hand-made data: over architectures and their seeds, and the paired
difference of two predictors of the same architectures (issue 27)."""

from __future__ import annotations

import numpy as np
import pytest

from raynas.evaluation.ranking import paired_difference, rank_agreement, rank_agreement_over_seeds

N = 12
TRUTH = np.arange(N, dtype=float)  # the architectures' true standalone AP, in order
NOISY = TRUTH + np.random.default_rng(0).normal(0, 2.0, N)  # a super-net that ranks them roughly


def test_without_seed_noise_it_is_the_bootstrap_over_architectures() -> None:
    """Two seeds that agree exactly: resampling them changes nothing, so the interval is the one-level
    bootstrap's, to the last bit (the same draws of architectures)."""
    one_level = rank_agreement(NOISY, TRUTH, bootstrap=300, seed=7)
    two_level = rank_agreement_over_seeds(NOISY, np.stack([TRUTH, TRUTH], axis=1), bootstrap=300, seed=7)
    assert two_level == one_level
    assert one_level["kendall_tau_low"] < one_level["kendall_tau"] < one_level["kendall_tau_high"]


def test_huge_seed_noise_widens_the_interval_but_not_the_point_value() -> None:
    """Seeds at truth +/- d with d far above the spread of the architectures: the mean over the two
    seeds is the truth (same tau), but a resample that draws one seed twice sees mostly noise."""
    d = 100.0 * np.random.default_rng(1).random(N)
    noisy_seeds = np.stack([TRUTH + d, TRUTH - d], axis=1)
    quiet = rank_agreement_over_seeds(NOISY, np.stack([TRUTH, TRUTH], axis=1), bootstrap=200)
    loud = rank_agreement_over_seeds(NOISY, noisy_seeds, bootstrap=200)
    assert loud["kendall_tau"] == pytest.approx(quiet["kendall_tau"])
    assert loud["spearman_rho"] == pytest.approx(quiet["spearman_rho"])
    width = {k: r["kendall_tau_high"] - r["kendall_tau_low"] for k, r in (("quiet", quiet), ("loud", loud))}
    assert width["loud"] > 1.3 * width["quiet"]
    assert loud["kendall_tau_low"] < quiet["kendall_tau_low"] - 0.3  # no longer sure it ranks at all


def test_architectures_may_have_different_numbers_of_seeds() -> None:
    """An interrupted run leaves some architectures at one seed: their own mean is used, not a NaN."""
    ragged = [[t] if i % 3 else [t - 0.1, t + 0.1, t] for i, t in enumerate(TRUTH)]
    result = rank_agreement_over_seeds(NOISY, ragged, bootstrap=200)
    assert result["kendall_tau"] == pytest.approx(rank_agreement(NOISY, TRUTH, bootstrap=1)["kendall_tau"])
    assert result["kendall_tau_low"] <= result["kendall_tau"] <= result["kendall_tau_high"]


@pytest.mark.parametrize(
    ("predicted", "per_seed", "message"),
    [
        ([0.1, 0.2, 0.3], [[1.0], [2.0], []], "at least one seed"),
        ([0.1, 0.2], [[1.0], [2.0]], "at least 3 architectures"),
        ([0.1, 0.2, 0.3], [[1.0], [np.nan], [3.0]], "finite"),
        ([0.1, 0.2, np.inf], [[1.0], [2.0], [3.0]], "finite"),
        ([0.1, 0.2, 0.3], [[1.0], [2.0], [3.0], [4.0]], "all 4 architectures"),
    ],
)
def test_bad_input_is_refused(predicted: list, per_seed: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rank_agreement_over_seeds(predicted, per_seed)


def test_a_predictor_paired_with_itself_differs_by_exactly_zero() -> None:
    result = paired_difference(NOISY, NOISY, TRUTH[:, None], bootstrap=200)
    assert result["n"] == N
    for key in ("kendall_tau_diff", "kendall_tau_diff_low", "kendall_tau_diff_high", "spearman_rho_diff"):
        assert result[key] == 0.0


def test_the_paired_interval_is_narrower_than_the_two_intervals_apart() -> None:
    """Two super-nets that share most of their errors (one swaps a single extra pair): unpaired, their
    intervals overlap almost entirely; paired, the difference is small and sure of its sign."""
    swapped = NOISY.copy()
    order = np.argsort(NOISY)
    swapped[order[4]], swapped[order[5]] = NOISY[order[5]], NOISY[order[4]]  # one more pair out of order
    seeds = np.stack([TRUTH, TRUTH + 0.01], axis=1)
    diff = paired_difference(NOISY, swapped, seeds, bootstrap=300)
    expected = (
        rank_agreement_over_seeds(NOISY, seeds, bootstrap=1)["kendall_tau"]
        - rank_agreement_over_seeds(swapped, seeds, bootstrap=1)["kendall_tau"]
    )
    assert diff["kendall_tau_diff"] == pytest.approx(expected)
    assert abs(diff["kendall_tau_diff"]) == pytest.approx(2 / (N * (N - 1) / 2))  # one pair of 66
    apart = [rank_agreement_over_seeds(p, seeds, bootstrap=300) for p in (NOISY, swapped)]
    unpaired_width = sum(r["kendall_tau_high"] - r["kendall_tau_low"] for r in apart)
    assert diff["kendall_tau_diff_high"] - diff["kendall_tau_diff_low"] < unpaired_width / 5
    assert diff["kendall_tau_diff_low"] <= diff["kendall_tau_diff"] <= diff["kendall_tau_diff_high"]


def test_a_perfect_predictor_beats_a_reversed_one_by_two() -> None:
    diff = paired_difference(TRUTH, -TRUTH, np.stack([TRUTH, TRUTH + 0.5], axis=1), bootstrap=200)
    assert diff["kendall_tau_diff"] == pytest.approx(2.0) and diff["spearman_rho_diff"] == pytest.approx(2.0)
    assert diff["kendall_tau_diff_low"] > 1.0
