"""``experiments/compare_strategies.py --run --retrain`` (OPANAS Table 6 on the proxy) and
``experiments/supernet_variants.py`` (Table 5): the smoke run end to end in its own process and Ray,
re-run without training, searching or retraining anything again; and their one-line refusals of bad
input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tiny_data import failure_text

from raynas.spaces.opanas import OPANASSpace

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
STRATEGIES = ["OPANAS", "random", "Pareto", "SPOS", "OPANAS, all paths trained", "DARTS", "Fair DARTS"]


def checkpoints(out: Path) -> list[Path]:
    return sorted(out.rglob("checkpoint_*"))


@pytest.mark.slow
@pytest.mark.smoke
def test_strategy_comparison_smoke_runs_every_strategy_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, str(EXPERIMENTS / "compare_strategies.py"), "--run", "--retrain", "--smoke",
               "--out", str(out), "--data", str(tmp_path / "data"), "--train-workers", "1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)
    table = pd.read_csv(out / "strategies.csv")
    assert list(table["strategy"]) == [*STRATEGIES, "FPN"]
    assert list(table["supernet"]) == ["fair_gamma"] * 3 + ["uniform_gamma", "fair_gamma_all", "-", "-", "-"]
    searched = table.iloc[:-1]
    assert (searched["cost_s"] > 0).all() and searched["yardstick_AP"].notna().all()
    # DARTS / Fair DARTS: their final weights committed, how each architecture was derived in the table
    for label, relaxation in (("DARTS", "softmax"), ("Fair DARTS", "sigmoid")):
        alphas = json.loads((out / f"darts_{relaxation}_alphas.json").read_text())
        assert sorted(alphas["weights"]) == sorted(OPANASSpace(5).keys) and len(alphas["candidates"]) >= 5
        derivation = table.set_index("strategy").loc[label, "derivation"]
        assert derivation == alphas["derivation"] and derivation.startswith("repaired") == alphas["repaired"]
    # per-seed rows: one per strategy and seed (the FPN too), each network trained once
    seeds = pd.read_csv(out / "strategies_seeds.csv")
    assert sorted(seeds["strategy"]) == sorted([*STRATEGIES, "FPN"]) and set(seeds["seed"]) == {0}
    assert seeds["AP"].notna().all() and (seeds["neck_flops"] > 0).all() and set(seeds["split"]) == {"val"}
    record = json.loads((out / "strategies.json").read_text())
    assert record["retrain_runs_started"] == seeds["run"].nunique()
    assert "Standalone, per-seed rows in strategies_seeds.csv" in (out / "strategies.md").read_text()
    space = OPANASSpace(5)
    for text in searched["best_arch"]:
        assert space.is_valid(space.from_config(json.loads(text)))
    # the one-shot strategies of one super-net searched with the same number of evaluations
    assert table.loc[table["supernet"] == "fair_gamma", "evaluations"].nunique() == 1
    assert "| SPOS | uniform_gamma |" in (out / "strategies.md").read_text()
    assert (out / "strategies.png").stat().st_size > 0
    # the super-nets record their sampling rule; each search's table marks its Pareto front
    summary = json.loads((out / "search_uniform_gamma" / "comparison.json").read_text())
    assert summary[0]["supernet_sampling"] == "uniform"
    assert "pareto_front" in pd.read_csv(out / "search_fair_gamma" / "pareto" / "results.csv")

    # a kept row is not trained again, even when its run folder is gone
    shutil.rmtree(out / "runs" / "fpn_seed0")
    before = checkpoints(out)
    again = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, failure_text(again)
    assert checkpoints(out) == before  # nothing trained again
    assert not (out / "runs" / "fpn_seed0").exists()
    assert json.loads((out / "strategies.json").read_text())["retrain_runs_started"] == 0
    assert "search already finished" in again.stdout
    pd.testing.assert_frame_equal(pd.read_csv(out / "strategies_seeds.csv"), seeds)
    pd.testing.assert_frame_equal(pd.read_csv(out / "strategies.csv"), table)


@pytest.mark.slow
@pytest.mark.smoke
def test_supernet_variants_smoke_trains_each_variant_and_compares_it_paired(tmp_path: Path) -> None:
    """Table 5 at the smoke budget: each variant's super-net trained and scored on the fixed
    architectures, its tau and the paired difference to the reference written as CSV / MD / JSON."""
    out = tmp_path / "out"
    command = [sys.executable, str(EXPERIMENTS / "supernet_variants.py"), "--smoke", "--variants",
               "fair_gamma", "uniform_gamma", "--out", str(out), "--data", str(tmp_path / "d")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)
    table = pd.read_csv(out / "supernet_variants.csv").set_index("variant")
    assert list(table.index) == ["fair_gamma", "uniform_gamma"]
    # a smoke super-net may score every architecture alike: then tau is undefined (NaN), not made up
    tau = table["kendall_tau"]
    assert (tau.isna() | tau.between(-1, 1)).all() and table["n"].nunique() == 1
    assert list(table["sampling"]) == ["fair", "uniform"]
    reference = table.loc["fair_gamma", "kendall_tau_diff"]
    assert pd.isna(reference) if pd.isna(tau["fair_gamma"]) else reference == 0  # against itself
    assert "(reference)" in (out / "supernet_variants.md").read_text()
    record = json.loads((out / "supernet_variants.json").read_text())
    assert (record["reference"], record["proxy"], len(record["rows"])) == ("fair_gamma", "digits", 2)
    assert (out / "scores_uniform_gamma.csv").is_file() and (out / "supernet_variants.png").is_file()


def test_bad_arguments_get_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = [
        (["compare_strategies.py", "--run", str(tmp_path)], "--run takes no result folders"),
        (["compare_strategies.py"], "give one or more search result folders"),
        (["supernet_variants.py", "--archs", str(tmp_path / "none.csv")], "is not a file"),
    ]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("e0_1,standalone_AP\ntop_down,0.3\n")
    cases.append((["supernet_variants.py", "--archs", str(bad_csv)], "lacks the column(s)"))
    for argv, expected in cases:
        done = subprocess.run(
            [sys.executable, str(EXPERIMENTS / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert done.returncode == 2, failure_text(done)
        assert expected in done.stderr and "Traceback" not in done.stderr + done.stdout
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
