"""The statistics every evidence table shares (raynas.studies.stats) on a hand-made CSV, and the
rank-stratified picks of the rank correlation (raynas.studies.picks) on a synthetic skewed pool.

The expected numbers are worked out here from the formulas (Welch-Satterthwaite degrees of freedom, the
t distribution, Holm's step-down), not read back from the code under test.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from raynas.evaluation import spread_picks
from raynas.studies import arms_markdown, compare_arms, holm, stratified_by_rank
from raynas.studies.stats import COLUMNS

# every arm but "noisy" and "one" has a sample std of exactly 0.01 (values m - 0.01, m + 0.01, m)
TABLE = """arm,seed,AP
base,0,0.30
base,1,0.32
base,2,0.31
good,0,0.40
good,1,0.42
good,2,0.41
bad,0,0.20
bad,1,0.22
bad,2,0.21
slight,0,0.33
slight,1,0.35
slight,2,0.34
same,2,0.30
same,0,0.32
same,1,0.31
noisy,0,0.28
noisy,1,0.36
noisy,2,0.38
one,0,0.50
"""


def rows(text: str = TABLE) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return compare_arms(rows(), "AP", "base").set_index("arm")


def by_hand(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch's interval and p for mean(a) - mean(b), from the textbook formulas."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    diff = np.mean(a) - np.mean(b)
    half = stats.t.ppf(0.975, df) * se
    return diff - half, diff + half, 2 * stats.t.sf(abs(diff) / se, df)


def test_means_stds_and_counts(table: pd.DataFrame) -> None:
    assert list(table.reset_index().columns) == list(COLUMNS)
    assert list(table.index) == ["base", "good", "bad", "slight", "same", "noisy", "one"]  # baseline first
    assert table.loc["good", "mean"] == pytest.approx(0.41)
    assert table.loc["good", "std"] == pytest.approx(0.01)
    assert table.loc["noisy", "std"] == pytest.approx(math.sqrt(((0.06**2) + (0.02**2) + (0.04**2)) / 2))
    assert table["n"].tolist() == [3, 3, 3, 3, 3, 3, 1]
    assert table.loc["good", "diff"] == pytest.approx(0.10)


def test_equal_variances_give_the_textbook_interval(table: pd.DataFrame) -> None:
    """Equal variances and sizes: df = 2(n-1) = 4, se = sqrt(2 * 0.01^2 / 3), interval diff +/- t * se."""
    half = stats.t.ppf(0.975, 4) * math.sqrt(2 * 0.01**2 / 3)
    assert half == pytest.approx(0.02267, abs=1e-5)
    assert (table.loc["good", "diff_low"], table.loc["good", "diff_high"]) == pytest.approx(
        (0.10 - half, 0.10 + half)
    )


@pytest.mark.parametrize("arm", ["good", "bad", "slight", "same", "noisy"])
def test_interval_and_p_match_welch_by_hand_and_scipy(table: pd.DataFrame, arm: str) -> None:
    data = rows()
    a = data.loc[data["arm"] == arm, "AP"].tolist()
    b = data.loc[data["arm"] == "base", "AP"].tolist()
    low, high, p = by_hand(a, b)
    assert (table.loc[arm, "diff_low"], table.loc[arm, "diff_high"]) == pytest.approx((low, high))
    assert table.loc[arm, "p"] == pytest.approx(p)
    assert table.loc[arm, "p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_holm_by_hand() -> None:
    # sorted: 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06 (monotone); NaN untested
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_holm_keeps_the_order_of_the_raw_p_values() -> None:
    raw = np.random.default_rng(0).uniform(0, 0.2, size=12)
    adjusted = np.asarray(holm(raw.tolist()))
    order = np.argsort(raw)
    assert (np.diff(adjusted[order]) >= 0).all(), "adjusted p-values follow the order of the raw ones"
    assert (adjusted >= raw).all() and (adjusted <= 1).all()
    assert adjusted[order[0]] == pytest.approx(12 * raw[order[0]])  # the smallest: Bonferroni


def test_holm_over_the_tested_arms_of_the_table(table: pd.DataFrame) -> None:
    """Five arms are tested ("one" has a single seed): "slight" is the third smallest p, times 3."""
    assert table["p_holm"].notna().sum() == 5
    assert table.loc["slight", "p_holm"] == pytest.approx(3 * table.loc["slight", "p"])
    assert table.loc["slight", "p"] < 0.05 <= table.loc["slight", "p_holm"]


def test_verdicts(table: pd.DataFrame) -> None:
    assert table["verdict"].to_dict() == {
        "base": "baseline",
        "good": "beats",
        "bad": "worse",
        "slight": "not told apart",  # p = 0.021 alone, but not after Holm over 5 arms
        "same": "not told apart",
        "noisy": "not told apart",
        "one": "n < 2",
    }
    one = table.loc["one"]
    assert math.isnan(one["std"]) and math.isnan(one["p"]) and math.isnan(one["p_holm"])


def test_lower_is_better_turns_the_verdicts() -> None:
    turned = compare_arms(rows(), "AP", "base", higher_is_better=False).set_index("arm")["verdict"]
    assert (turned["good"], turned["bad"]) == ("worse", "beats")


def test_zero_variance() -> None:
    """A constant arm against a varying baseline is a Welch test with df = n - 1 of the other side; two
    constant sides cannot be tested and say so."""
    text = "arm,seed,AP\nbase,0,0.30\nbase,1,0.32\nbase,2,0.31\nflat,0,0.2\nflat,1,0.2\nflat,2,0.2\n"
    flat = compare_arms(rows(text), "AP", "base").set_index("arm").loc["flat"]
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert (flat["diff_low"], flat["diff_high"]) == pytest.approx((-0.11 - half, -0.11 + half))
    assert flat["verdict"] == "worse"
    text = "arm,seed,AP\nbase,0,0.3\nbase,1,0.3\nflat,0,0.2\nflat,1,0.2\n"
    flat = compare_arms(rows(text), "AP", "base").set_index("arm").loc["flat"]
    assert flat["verdict"] == "no spread" and flat["std"] == 0 and math.isnan(flat["p"])


def test_a_single_seed_baseline_leaves_every_arm_untested() -> None:
    text = "arm,seed,AP\nbase,0,0.3\ngood,0,0.4\ngood,1,0.5\n"
    verdicts = compare_arms(rows(text), "AP", "base")["verdict"].tolist()
    assert verdicts == ["baseline", "n < 2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TABLE + "good,2,0.43\n", r"more than once: \[\('good', 2\)\]"),
        (TABLE + "late,0,\n", r"'AP' is missing or not a finite number for \(arm, seed\) \[\('late', 0\)\]"),
        (TABLE + "late,0,inf\n", "not a finite number"),
        (TABLE.replace("base,", "fpn,"), "baseline arm 'base' is not in the table"),
        (TABLE.replace("seed", "run"), r"lacks the column\(s\) \['seed'\]"),
    ],
    ids=["repeated-row", "missing-value", "infinite", "no-baseline", "no-seed-column"],
)
def test_a_table_that_would_mislead_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare_arms(rows(text), "AP", "base")


def test_markdown(table: pd.DataFrame) -> None:
    text = arms_markdown(compare_arms(rows(), "AP", "base"), scale=100, digits=1, metric="AP")
    lines = text.splitlines()
    assert lines[0].startswith("| arm | n | AP (mean +/- std) | difference to baseline [95 % CI] |")
    good = table.loc["good"]
    assert (
        f"| good | 3 | 41.0 +/- 1.0 | +10.0 [+7.7, +12.3] | < 0.001 | {good['p_holm']:.3g} | beats |" in lines
    )
    assert "| base | 3 | 31.0 +/- 1.0 | (baseline) | - | - | baseline |" in lines
    assert "| one | 1 | 50.0 +/- - | +19.0 | - | - | n < 2 |" in lines
    assert "nan" not in text.lower()
    assert "over the 5 tested arm(s)" in text


# -- picks for the rank correlation ----------------------------------------------------------------------


def skewed_pool(size: int = 100) -> np.ndarray:
    """Most scores bunched near 0.30 (a 1e-4 spread), a long tail of bad networks down to 0."""
    rng = np.random.default_rng(1)
    return np.concatenate([0.30 + 1e-4 * rng.random(size - size // 5), np.linspace(0.0, 0.2, size // 5)])


def ranks_of(scores: np.ndarray, picked: list[int]) -> list[int]:
    rank = np.empty(len(scores), dtype=int)
    rank[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
    return [int(rank[i]) for i in picked]


def test_picks_are_stratified_by_rank_not_by_score() -> None:
    scores = skewed_pool()
    picked = stratified_by_rank(scores, 20, top_share=0.5, seed=0)
    ranks = ranks_of(scores, picked)
    assert len(set(picked)) == 20 and ranks == sorted(ranks)  # distinct, best rank first
    top, rest = [r for r in ranks if r < 25], [r for r in ranks if r >= 25]
    assert len(top) == 10
    # one pick in each of 10 equal stretches of the top quarter's ranks, and of the other ranks'
    for picks, stretch in ((top, range(25)), (rest, range(25, 100))):
        strata = np.array_split(np.asarray(stretch), 10)
        assert all(r in stratum for r, stratum in zip(picks, strata, strict=True))
    # spreading by score value instead crowds into the tail: 3 in 4 picks from the bottom fifth of the pool
    by_value = ranks_of(scores, spread_picks(scores, 20))
    assert sum(r >= 80 for r in by_value) >= 15 and sum(r >= 80 for r in ranks) <= 3


@pytest.mark.parametrize(("count", "share"), [(20, 0.5), (21, 0.5), (24, 0.75), (12, 0.25)])
def test_the_top_quarter_gets_its_share(count: int, share: float) -> None:
    scores = skewed_pool()
    ranks = ranks_of(scores, stratified_by_rank(scores, count, top_share=share, seed=3))
    assert abs(sum(r < 25 for r in ranks) - share * count) <= 0.5


def test_picks_are_deterministic_for_a_seed() -> None:
    scores = skewed_pool()
    assert stratified_by_rank(scores, 20, seed=4) == stratified_by_rank(scores, 20, seed=4)
    assert stratified_by_rank(scores, 20, seed=4) != stratified_by_rank(scores, 20, seed=5)


def test_picks_of_a_whole_small_pool() -> None:
    """Asking for every architecture returns all of them, whatever the share."""
    scores = [0.3, 0.1, 0.2, 0.5, 0.4, 0.0, 0.6, 0.7]
    assert stratified_by_rank(scores, 8, top_share=1.0) == [7, 6, 3, 4, 0, 2, 1, 5]


@pytest.mark.parametrize(
    ("count", "share", "scores", "message"),
    [
        (1, 0.5, [0.1, 0.2, 0.3], "2 <= count <= 3"),
        (4, 0.5, [0.1, 0.2, 0.3], "2 <= count <= 3"),
        (2, 1.5, [0.1, 0.2, 0.3], r"top_share must lie in \[0, 1\]"),
        (2, 0.5, [0.1, float("nan"), 0.3], "finite numbers"),
    ],
)
def test_bad_picks_are_refused(count: int, share: float, scores: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stratified_by_rank(scores, count, top_share=share)


def test_per_arm_summary_means_stds_costs_and_tests_from_the_rows() -> None:
    from raynas.studies import per_arm_summary

    rows = pd.DataFrame(
        {
            "arm": ["base", "base", "base", "wide", "wide", "wide", "random", "random"],
            "seed": [0, 1, 2, 0, 1, 2, 0, 1],
            "AP": [0.30, 0.31, 0.29, 0.40, 0.41, 0.39, 0.20, 0.22],
            "params": [10, 10, 10, 30, 30, 30, 5, 7],  # random: another network a seed
        }
    )
    table = per_arm_summary(rows, ("AP",), ("params",), "base")
    assert list(table.index) == ["base", "wide", "random"]  # the rows' order
    assert table.loc["wide", "AP_mean"] == pytest.approx(0.40) and table.loc[
        "wide", "AP_std"
    ] == pytest.approx(0.01)
    assert table.loc["random", "params"] == 6 and table.loc["random", "seeds"] == 2
    assert table.loc["wide", "verdict"] == "beats" and table.loc["base", "verdict"] == "baseline"
    untested = per_arm_summary(rows, ("AP",), ("params",), "absent")
    assert "verdict" not in untested.columns and len(untested) == 3
