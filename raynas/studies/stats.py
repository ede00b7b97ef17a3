"""The statistics of an arms x seeds table: per-arm mean / std / n, each arm's difference to the baseline
arm with a 95 % Welch-Satterthwaite interval, Welch's t-test and Holm's correction over the arms.

"Beats the baseline by more than 2 of its std" is not a test, and with 10-12 arms of 3 seeds one of them
clears a 5 % bar by chance alone; every evidence table says instead whether Welch's test, corrected by
Holm-Bonferroni over the arms of that table, tells an arm from the baseline (issue 27). The verdict names
the cases where no test is possible (fewer than 2 seeds, no spread at all) instead of printing NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: the family-wise error rate of one table's verdicts
ALPHA = 0.05
#: the columns of :func:`compare_arms`'s table, in order
COLUMNS = ("arm", "n", "mean", "std", "diff", "diff_low", "diff_high", "p", "p_holm", "verdict")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given; NaN entries (no test) stay NaN and do not
    count among the tests. The i-th smallest of m p-values is multiplied by m - i + 1, then made
    non-decreasing in that order and capped at 1 (scipy has only Benjamini-Hochberg / -Yekutieli)."""
    p = np.asarray(p_values, dtype=float)
    tested = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(len(p), np.nan)
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def welch(arm: np.ndarray, baseline: np.ndarray) -> tuple[float, float, float]:
    """``(low, high, p)`` for mean(arm) - mean(baseline): the 95 % Welch-Satterthwaite interval and the
    two-sided Welch p. Both sides need 2+ values and some spread; otherwise NaN (the caller's verdict
    says why)."""
    if _untested(arm, baseline):
        return math.nan, math.nan, math.nan
    with warnings.catch_warnings():
        # scipy warns when one side is constant (its variance is 0, exactly what the test then uses)
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        test = stats.ttest_ind(arm, baseline, equal_var=False)
        interval = test.confidence_interval(1 - ALPHA)
    return float(interval.low), float(interval.high), float(test.pvalue)


def _values(rows: pd.DataFrame, metric: str, arm_col: str, seed_col: str) -> dict[str, np.ndarray]:
    """Each arm's metric over its seeds, in order of appearance; a repeated (arm, seed) or a missing
    value would change the statistics silently, so both are refused."""
    missing = [c for c in (arm_col, seed_col, metric) if c not in rows]
    if missing:
        raise ValueError(f"the table lacks the column(s) {missing}; it has {list(rows.columns)}")
    repeated = rows[rows.duplicated([arm_col, seed_col], keep=False)]
    if len(repeated):
        pairs = sorted({(str(a), s) for a, s in zip(repeated[arm_col], repeated[seed_col])})[:3]
        raise ValueError(f"the table has (arm, seed) rows more than once: {pairs}; keep one row each")
    values = pd.to_numeric(rows[metric], errors="coerce")
    bad = rows[values.isna() | ~np.isfinite(values.fillna(0))]
    if len(bad):
        pairs = [(str(a), s) for a, s in zip(bad[arm_col], bad[seed_col])][:3]
        raise ValueError(f"{metric!r} is missing or not a finite number for (arm, seed) {pairs}")
    return {str(arm): values[rows[arm_col] == arm].to_numpy(float) for arm in rows[arm_col].unique()}


def _untested(arm: np.ndarray, baseline: np.ndarray) -> str:
    """Why Welch's test cannot compare the two (the verdict), or "" when it can."""
    if min(len(arm), len(baseline)) < 2:
        return "n < 2"
    return "no spread" if np.ptp(arm) == 0 and np.ptp(baseline) == 0 else ""


def _verdict(diff: float, p_holm: float, higher_is_better: bool) -> str:
    if not p_holm < ALPHA:
        return "not told apart"
    return "beats" if (diff > 0) == higher_is_better else "worse"


def compare_arms(
    rows: pd.DataFrame,
    metric: str,
    baseline: str,
    arm_col: str = "arm",
    seed_col: str = "seed",
    higher_is_better: bool = True,
) -> pd.DataFrame:
    """One row per arm (the baseline first, then in order of appearance) with the columns
    :data:`COLUMNS`: ``n``, ``mean``, ``std`` (ddof=1; NaN for one seed) of ``metric`` over the arm's
    seeds; ``diff`` = mean - the baseline's mean with its 95 % Welch interval ``diff_low``..``diff_high``;
    Welch's ``p``; ``p_holm`` corrected over the arms of this table; and a ``verdict`` at Holm p < 0.05:
    "beats" / "worse" (``higher_is_better`` says which direction is better), "not told apart", or why
    there is no test ("n < 2": fewer than 2 seeds on either side; "no spread": both sides constant).
    """
    values = _values(rows, metric, arm_col, seed_col)
    if baseline not in values:
        raise ValueError(f"the baseline arm {baseline!r} is not in the table; its arms are {list(values)}")
    base = values[baseline]
    records = []
    for arm in [baseline, *(a for a in values if a != baseline)]:
        x = values[arm]
        record = {"arm": arm, "n": len(x), "mean": float(x.mean())}
        record["std"] = float(x.std(ddof=1)) if len(x) > 1 else math.nan
        if arm == baseline:
            record.update(diff=0.0, diff_low=math.nan, diff_high=math.nan, p=math.nan, verdict="baseline")
        else:
            low, high, p = welch(x, base)
            diff = float(x.mean() - base.mean())
            record.update(diff=diff, diff_low=low, diff_high=high, p=p, verdict=_untested(x, base))
        records.append(record)
    table = pd.DataFrame.from_records(records)
    table["p_holm"] = holm(table["p"].tolist())
    table["verdict"] = [r.verdict or _verdict(r.diff, r.p_holm, higher_is_better) for r in table.itertuples()]
    return table[list(COLUMNS)]


def _p(value: float) -> str:
    """Three significant digits, so a p just under the bar (0.0496) does not print as 0.050."""
    if math.isnan(value):
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3g}"


#: the columns :func:`with_tests` adds to a script's own per-arm table, and their Markdown header
TEST_COLUMNS = ("diff", "diff_low", "diff_high", "p", "p_holm", "verdict")
TEST_HEADER = "difference to baseline [95 % CI] | Welch p | Holm p | verdict"


def with_tests(
    table: pd.DataFrame, rows: pd.DataFrame, metric: str, baseline: str, seed_col: str = "seed"
) -> pd.DataFrame:
    """``table`` (one row per arm, indexed by arm) joined with :func:`compare_arms`'s test columns on
    ``metric``: how an evidence script that keeps its own cost columns reports the tests (issue 27)."""
    tests = compare_arms(rows, metric, baseline=baseline, seed_col=seed_col)
    return table.join(tests.set_index("arm")[list(TEST_COLUMNS)])


def per_arm_summary(
    rows: pd.DataFrame,
    metrics: Sequence[str],
    costs: Sequence[str],
    baseline: str,
    metric: str = "AP",
    seed_col: str = "seed",
) -> pd.DataFrame:
    """One row per arm (indexed by arm, in the rows' order) from the per-seed rows: each metric's mean and
    std over seeds (``<metric>_mean`` / ``_std``), the mean of each cost column (an arm whose runs train
    other networks, FAD random, gets their mean), the number of runs, and, where ``baseline`` is an arm,
    :func:`with_tests` on ``metric``. ``seed_col`` names a run within its arm (an arm of several networks
    names its runs by network and seed)."""
    grouped = rows.groupby("arm", sort=False)
    table = grouped[list(metrics)].mean().add_suffix("_mean")
    table = table.join(grouped[list(metrics)].std(ddof=1).add_suffix("_std"))
    table = table.join(grouped[list(costs)].mean()).join(grouped.size().rename("seeds"))
    return with_tests(table, rows, metric, baseline, seed_col) if baseline in table.index else table


def verdict_cells(row: Any, scale: float = 1.0, digits: int = 3) -> list[str]:
    """The four Markdown cells of :data:`TEST_HEADER` for one arm (a row with :data:`TEST_COLUMNS`, as a
    mapping, a Series or a namedtuple); "-" where a value is not defined."""
    if isinstance(row, Mapping | pd.Series):
        get = row.get
    else:  # a namedtuple from itertuples

        def get(key: str, default: Any = None) -> Any:
            return getattr(row, key, default)

    def num(value: float, sign: str = "") -> str:
        return "-" if value is None or math.isnan(value) else f"{scale * value:{sign}.{digits}f}"

    verdict = get("verdict")
    if verdict is None or (isinstance(verdict, float) and math.isnan(verdict)):
        return ["-", "-", "-", "-"]
    if verdict == "baseline":
        diff = "(baseline)"
    elif math.isnan(get("diff_low")):
        diff = num(get("diff"), "+")
    else:
        diff = f"{num(get('diff'), '+')} [{num(get('diff_low'), '+')}, {num(get('diff_high'), '+')}]"
    return [diff, _p(get("p")), _p(get("p_holm")), str(verdict)]


def verdict_note(table: pd.DataFrame) -> str:
    """The sentence under a table that says what its verdicts mean."""
    tested = int(table["p"].notna().sum()) if "p" in table else 0
    return (
        f"Welch's t-test of each arm against the baseline; Holm's correction over the {tested} tested "
        f"arm(s) of this table; a verdict needs Holm p < {ALPHA}."
    )


def arms_markdown(table: pd.DataFrame, scale: float = 1.0, digits: int = 3, metric: str = "metric") -> str:
    """:func:`compare_arms`'s table as Markdown: mean +/- std, difference [95 % CI], p, Holm p, verdict.
    ``scale`` multiplies the metric's values (100 shows an AP in [0, 1] as percent); "-" marks what is not
    defined (one seed's std, the baseline's difference, an untested arm's p)."""

    def num(value: float) -> str:
        return "-" if math.isnan(value) else f"{scale * value:.{digits}f}"

    header = f"| arm | n | {metric} (mean +/- std) | {TEST_HEADER} |"
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in table.itertuples():
        cells = [r.arm, str(r.n), f"{num(r.mean)} +/- {num(r.std)}", *verdict_cells(r, scale, digits)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", verdict_note(table)]) + "\n"
