"""``experiments/compare_strategies.py --run --retrain`` without training (issue 27): the standalone table is
computed from the per-seed rows (Welch, Holm, the difference interval), one network found by two strategies
is one run and one arm, and a damaged ``strategies_seeds.csv`` is refused before Ray. The smoke run that
trains and re-runs is in ``test_strategies.py``."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from scipy import stats

import raynas.jobs.strategy_retrain as strategy_retrain
from raynas.jobs.arms import arch_id
from raynas.spaces.opanas import OPANASSpace
from raynas.training.config import OPANASConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import compare_strategies as cs  # noqa: E402

SPACE = OPANASSpace(5)
#: AP per seed of each network: the FPN, OPANAS's and the one network DARTS and Fair DARTS both found
AP = {"fpn": [0.270, 0.281, 0.266], "arch_a": [0.318, 0.330, 0.322], "arch_b": [0.300, 0.279, 0.311]}
FOUND = {"FPN": "fpn", "OPANAS": "arch_a", "DARTS": "arch_b", "Fair DARTS": "arch_b"}


def seed_rows(epochs: int = 3) -> pd.DataFrame:
    """A hand-made per-seed table as ``--retrain`` writes it (a network's rows repeat for each strategy)."""
    rows = []
    for seed in range(3):
        for strategy, run in FOUND.items():
            ap = AP[run][seed]
            rows.append(
                {"strategy": strategy, "seed": seed, "run": run, "split": "val", "epochs": epochs,
                 "recipe": "r1", "AP": ap, "AP50": ap + 0.2, "AP75": ap, "APs": ap - 0.1, "APm": ap,
                 "APl": ap + 0.1,
                 "neck_params": {"fpn": 1000, "arch_a": 4000, "arch_b": 60}[run], "neck_flops": 5e6,
                 "train_time_s": 10.0, "arch": "fpn" if run == "fpn" else json.dumps({"e0_1": "skip"})}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_standalone_table_is_computed_from_the_per_seed_rows(tmp_path: Path) -> None:
    (tmp_path / strategy_retrain.SEEDS_FILE).write_text(seed_rows().to_csv(index=False))
    seeds = strategy_retrain.kept_seed_rows(tmp_path, epochs=3)
    networks, per_strategy = strategy_retrain.seeds_summary(seeds)
    assert list(networks["run"]) == ["fpn", "arch_a", "arch_b"]  # one arm per network, the baseline first
    assert list(per_strategy["strategy"]) == list(FOUND)
    # Welch against the FPN, Holm over the 2 distinct networks (the shared one counted once)
    tests = {run: stats.ttest_ind(AP[run], AP["fpn"], equal_var=False) for run in ("arch_a", "arch_b")}
    order = sorted(tests, key=lambda run: tests[run].pvalue)
    holm = {order[0]: min(1.0, 2 * tests[order[0]].pvalue)}
    holm[order[1]] = max(holm[order[0]], min(1.0, tests[order[1]].pvalue))
    by_run = networks.set_index("run")
    for run, test in tests.items():
        interval = test.confidence_interval(0.95)
        row = by_run.loc[run]
        assert row["seeds"] == 3
        assert row["AP_mean"] == pytest.approx(np.mean(AP[run]))
        assert row["AP_std"] == pytest.approx(np.std(AP[run], ddof=1))
        assert row["diff"] == pytest.approx(np.mean(AP[run]) - np.mean(AP["fpn"]))
        assert (row["diff_low"], row["diff_high"]) == pytest.approx((interval.low, interval.high))
        assert row["p"] == pytest.approx(test.pvalue)
        assert row["p_holm"] == pytest.approx(holm[run])
    assert by_run.loc["fpn", "verdict"] == "baseline"
    assert by_run.loc["arch_b", "same_network"] == "DARTS = Fair DARTS"
    shared = per_strategy.set_index("strategy").loc[["DARTS", "Fair DARTS"]]
    assert shared["p_holm"].nunique() == 1 and shared["AP_mean"].nunique() == 1

    text = strategy_retrain.retrain_markdown(networks, per_strategy, "test")
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    mean, std = 100 * np.mean(AP["arch_a"]), 100 * np.std(AP["arch_a"], ddof=1)
    low, high = (100 * x for x in tests["arch_a"].confidence_interval(0.95))
    diff = 100 * (np.mean(AP["arch_a"]) - np.mean(AP["fpn"]))
    assert f"| {mean:.1f} +/- {std:.1f} |" in lines["OPANAS"]
    assert f"| {diff:+.1f} [{low:+.1f}, {high:+.1f}] |" in lines["OPANAS"]
    assert f"| {holm['arch_a']:.3g} |" in lines["OPANAS"]
    assert "(baseline)" in lines["FPN"]
    assert lines["DARTS"].split(" | ")[1:] == lines["Fair DARTS"].split(" | ")[1:]
    assert "over the 2 tested arm(s)" in text
    assert "Strategies that found the same network: DARTS = Fair DARTS (arch_b)." in text


def test_two_encodings_of_one_network_are_one_run() -> None:
    # e0_1 none: node 1 is dead, so what its outgoing edges carry never runs
    edges = dict(zip(SPACE.keys, ["none", "top_down", "skip", "bottom_up", "top_down"] + ["skip"] * 10))
    other = {**edges, "e1_2": "fusing_splitting", "e1_5": "none"}  # differs only on edges out of node 1
    different = {**edges, "e2_3": "none"}  # a live edge: another network
    assert edges != other
    plan = strategy_retrain.network_plan(
        {"SPOS": edges, "random": other, "OPANAS": different}, OPANASConfig(), 64
    )
    assert [(arm.slug, labels) for arm, labels in plan][0] == ("fpn", ["FPN"])
    assert [labels for _, labels in plan] == [["FPN"], ["SPOS", "random"], ["OPANAS"]]
    canonical = SPACE.to_config(SPACE.canonical(SPACE.from_config(edges)))
    arm = plan[1][0]
    assert arm.slug == "arch_" + arch_id(canonical) == "arch_" + arch_id(SPACE.to_config(SPACE.canonical(
        SPACE.from_config(other))))  # fmt: skip
    assert arm.neck["arch"] == canonical and arm.neck["arch"]["e1_2"] == "none"  # the network, as trained
    assert plan[2][0].slug != arm.slug


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        ("cut", ["rows cut short or emptied", "restore it", "or delete it"]),
        ("not_a_number", ["'AP' that is not a number"]),
        ("twice", ["('OPANAS', seed 1) more than once"]),
        ("epochs", ["trained with --epochs 3", "run with --epochs 3"]),
    ],
)
def test_a_damaged_per_seed_table_is_refused_before_ray(tmp_path, capfd, damage, needles) -> None:
    out = tmp_path / "out"
    out.mkdir()
    path = out / strategy_retrain.SEEDS_FILE
    table = seed_rows()
    if damage == "twice":
        table = pd.concat([table, table.iloc[[5]]])
    path.write_text(table.to_csv(index=False))
    if damage == "cut":  # the last row lost its last cells, as an interrupted copy leaves it
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    elif damage == "not_a_number":
        path.write_text(path.read_text().replace(",0.322,", ",broken,", 1))
    argv = ["--run", "--retrain", "--out", str(out)] + (["--epochs", "2"] if damage == "epochs" else [])
    before = tree(out)
    capfd.readouterr()
    code = cs.main(argv)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("compare_strategies: error: ") and str(path) in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert tree(out) == before and not ray.is_initialized()


def test_a_kept_row_is_reused_only_under_its_run_s_recipe() -> None:
    """A row of ``strategies_seeds.csv`` measured with other data (or width, workers, schedule) is not
    mixed into the table: its run is trained anew, or refused by the run folder's changed-config check."""
    from raynas.jobs.arms import recipe_key, standalone_recipe
    from raynas.jobs.main_job import smoke_supernet_config

    cfg = standalone_recipe(smoke_supernet_config("data/d", "runs/a"), epochs=1)
    measured = {("fpn", 0): {"recipe": recipe_key(cfg), "AP": 0.3}}
    assert strategy_retrain.kept_row(measured, "fpn", 0, cfg) == measured[("fpn", 0)]
    other_data = replace(cfg, data=replace(cfg.data, root="data/other"))
    assert strategy_retrain.kept_row(measured, "fpn", 0, other_data) is None
    assert strategy_retrain.kept_row(measured, "fpn", 1, cfg) is None
