"""The proxy calibration's goals (issue 26) measured on its rows, and its tables: ``calibration.csv`` /
``.md`` / ``.json`` / ``.png``, written after every run (:mod:`raynas.jobs.calibration` runs it).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from raynas.io import atomic_write_json, atomic_write_text

#: the goals of issue 26, measured on the test split
GOAL_GAP_AP, GOAL_GAP_STD, GOAL_PANET_STD, GOAL_SPREAD, GOAL_TAU, GOAL_CONTROL_STD = (
    3.0,
    5.0,
    3.0,
    3.0,
    0.6,
    2.0,
)


def _pooled(stds: pd.Series) -> float:
    """The pooled seed std of arms (root mean square of their stds); NaN where no arm has two seeds."""
    values = stds.dropna().to_numpy()
    return float(np.sqrt(np.mean(values**2))) if len(values) else float("nan")


def random_neck_goals(rand: pd.DataFrame, metric: str = "AP") -> dict:
    """The random necks' two goals on ``metric`` (in points): the spread between necks against the spread
    between seeds of one, and seed 0's ranking against seed 1's (Kendall tau with its bootstrap interval
    over the necks). Both compare a neck's two seeds, so only necks with both count (a stop leaves pairs);
    empty under three pairs."""
    from raynas.evaluation.ranking import rank_agreement

    wide = rand.pivot_table(index="arm", columns="seed", values=metric).reindex(columns=[0, 1]).dropna()
    if len(wide) < 3:
        return {}
    between = float(wide.mean(axis=1).std(ddof=1))
    within = _pooled(wide.std(axis=1, ddof=1))
    agreement = rank_agreement(wide[0].to_numpy(), wide[1].to_numpy())
    return {"random_pairs": len(wide), "random_between_arch_std": between, "random_within_arch_std": within,
            "random_seed_tau": agreement["kendall_tau"], "random_seed_tau_low": agreement["kendall_tau_low"],
            "random_seed_tau_high": agreement["kendall_tau_high"],
            "goal_spread": bool(between >= GOAL_SPREAD * within),
            "goal_tau": bool(agreement["kendall_tau"] >= GOAL_TAU)}  # fmt: skip


def goals(frame: pd.DataFrame) -> dict:
    """The acceptance of issue 26, measured (None where its runs are not there yet). APs in points. The
    random necks' goals compare seeds 0 and 1 (the issue's two seeds; a third is left out of them)."""
    ap = frame.assign(AP=100 * frame["AP"], APl=100 * frame["APl"])
    named = ap[ap["group"] == "named"].groupby("arm")
    out: dict = {}
    stds = named["AP"].std(ddof=1)
    means, large = named["AP"].mean(), named["APl"].mean()
    if {"FPN", "lateral-only"} <= set(means.index):
        pooled = _pooled(stds)
        gap = float(means["FPN"] - means["lateral-only"])
        out["fpn_minus_lateral_AP"] = gap
        out["pooled_seed_std_AP"] = pooled
        out["goal_fpn_gap"] = bool(gap >= max(GOAL_GAP_AP, GOAL_GAP_STD * pooled))
    for arm, key in (("top-down", "top_down"), ("FPN (GN)", "fpn_gn")):  # the path, apart from the FPN's code
        if {arm, "lateral-only"} <= set(means.index):
            out[f"{key}_minus_lateral_AP"] = float(means[arm] - means["lateral-only"])
    if {"FPN", "PANet-like"} <= set(means.index):
        std_l = float(named["APl"].std(ddof=1).get("FPN", np.nan))
        out["panet_minus_fpn_APl"] = float(large["PANet-like"] - large["FPN"])
        out["fpn_APl_seed_std"] = std_l
        out["goal_panet_large"] = bool(out["panet_minus_fpn_APl"] >= GOAL_PANET_STD * std_l)
    out.update(random_neck_goals(ap[ap["group"] == "random"]))
    control = ap[ap["group"] == "control"].groupby("arm")["AP"]
    if {"FPN (context off)", "lateral-only (context off)"} <= set(control.groups):
        gap = float(control.mean()["FPN (context off)"] - control.mean()["lateral-only (context off)"])
        std = _pooled(control.std(ddof=1))
        out.update(
            control_gap_AP=gap, control_pooled_std=std, goal_control=bool(abs(gap) < GOAL_CONTROL_STD * std)
        )
    times = frame["epoch_time_s"].dropna()
    if len(times):
        out["median_epoch_time_s"] = float(times.median())
        out["goal_epoch_time"] = bool(out["median_epoch_time_s"] <= 60)
    return out


def markdown(frame: pd.DataFrame, measured: dict, missing: list[str] | None = None) -> str:
    from raynas.studies import arms_markdown, compare_arms

    lines = ["# Proxy calibration (test split, AP in %)", ""]
    named = frame[frame["group"].isin(["named", "control"])]
    for group, baseline in (("named", "FPN"), ("control", "FPN (context off)")):
        rows = named[named["group"] == group]
        if baseline in set(rows["arm"]):
            table = compare_arms(rows, "AP", baseline=baseline)
            lines += [f"## {group}", "", arms_markdown(table, scale=100, digits=1, metric="AP"), ""]
    rand = frame[frame["group"] == "random"]
    if len(rand):
        per = rand.assign(AP=100 * rand["AP"]).pivot_table(index="arm", columns="seed", values="AP")
        per = per.reindex(sorted(per.index, key=lambda arm: int(arm.split()[-1])))
        header = "| neck | " + " | ".join(f"seed {s}" for s in per.columns) + " |"
        lines += ["## random necks (AP per seed)", "", header, "|---" * (len(per.columns) + 1) + "|"]
        lines += [f"| {arm} | " + " | ".join(f"{v:.1f}" for v in row) + " |" for arm, row in per.iterrows()]
        lines.append("")
    if {"small_tag_right", "large_tag_right"} <= set(frame.columns):
        tags = frame.groupby(["group", "arm"], sort=False)[["small_tag_right", "large_tag_right"]].mean()
        lines += [
            "## tags right where the glyph is found (test, %, mean over seeds; chance 50)",
            "",
            "| group | arm | small glyphs (zone type) | large glyphs (mark) |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {group} | {arm} | {100 * row.small_tag_right:.1f} | {100 * row.large_tag_right:.1f} |"
            for (group, arm), row in tags.iterrows()
        ]
        lines.append("")
    lines += ["## goals (issue 26)", ""]
    lines += [f"- {key}: {value:.3g}" if isinstance(value, float) else f"- {key}: {value}"
              for key, value in measured.items()]  # fmt: skip
    if missing:
        lines += [
            "",
            f"Not finished yet ({len(missing)} runs of the plan, left out above): " + ", ".join(missing),
        ]
    return "\n".join(lines) + "\n"


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = frame.assign(AP=100 * frame["AP"]).groupby("arm", sort=False)["AP"]
    means, stds = grouped.mean(), grouped.std(ddof=1).fillna(0)
    fig, axis = plt.subplots(figsize=(max(6, 0.45 * len(means)), 4))
    axis.bar(range(len(means)), means, yerr=stds, capsize=3)
    axis.set_xticks(range(len(means)), means.index, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("AP on test (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, rows: list[dict], trained: int, missing: list[str], started: float) -> dict:
    """``calibration.csv`` / ``.md`` / ``.json`` / ``.png`` from the rows so far; returns the record."""
    record = {"runs": len(rows), "runs_trained_now": trained, "missing_runs": missing,
              "wall_time_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    if not rows:
        atomic_write_json(out / "calibration.json", record)
        return record
    frame = pd.DataFrame(rows)
    measured = goals(frame)
    atomic_write_text(out / "calibration.csv", frame.to_csv(index=False))
    atomic_write_text(out / "calibration.md", markdown(frame, measured, missing))
    record = {**measured, **record}
    atomic_write_json(out / "calibration.json", record)
    plot(frame, out / "calibration.png")
    return record


__all__ = ["goals", "markdown", "plot", "random_neck_goals", "write_outputs"]
