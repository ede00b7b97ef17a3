"""``experiments/rank_correlation.py`` v2 (issue 27): a fresh pool, picks stratified by rank, per-seed rows,
the tables ``supernet_variants.py`` reads; its refusals before Ray; and the smoke run end to end in its own
process (its own Ray): a tiny super-net, a pool scored by the scorer actors, 3 architectures x 2 seeds
trained standalone on Ray Train. No threshold on tau here: that is for the real run (README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_data import failure_text

import raynas.jobs.rank_correlation as rc
import raynas.jobs.supernet_variants as variants
from raynas.config import ConfigError
from raynas.jobs.supernet_scores import load_archs, seed_aps
from raynas.spaces.opanas import OPANASSpace

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SCRIPT = EXPERIMENTS / "rank_correlation.py"
V1 = EXPERIMENTS / "results" / "rank_correlation"
sys.path.insert(0, str(EXPERIMENTS))
import rank_correlation  # noqa: E402

SPACE = OPANASSpace(5)


def synthetic_pool(size: int = 80) -> pd.DataFrame:
    """A scored pool as ``score_pool`` writes it: most scores bunched, a long tail of bad networks."""
    rng = np.random.default_rng(2)
    scores = np.concatenate([0.30 + 1e-3 * rng.random(size - size // 5), np.linspace(0.0, 0.2, size // 5)])
    archs = rc.draw_pool(SPACE, size, 5)
    rows = [
        {"arch_id": f"a{k:02d}", **arch, "supernet_AP": s, "supernet_AP50": 2 * s, "neck_params": 1000 + k,
         "neck_flops": 10_000 + k, "pool_seed": 5}
        for k, (arch, s) in enumerate(zip(archs, scores, strict=True))
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_the_default_pool_is_fresh_and_distinct_as_networks() -> None:
    """Seed 0 drew v1's pool (which is why it is refused); the default seed's pool shares no network
    with it, and no two of its architectures are the same network."""
    v1 = [SPACE.to_config(SPACE.from_config(r)) for r in pd.read_csv(V1 / "pool.csv").to_dict("records")]
    assert rc.draw_pool(SPACE, len(v1), rc.V1_POOL_SEED) == v1
    fresh = rc.draw_pool(SPACE, 80, rc.DEFAULT_POOL_SEED)
    canonical = {SPACE.canonical(SPACE.from_config(c)) for c in fresh}
    assert len(canonical) == 80 and not canonical & {SPACE.from_config(c) for c in v1}


def test_the_picks_are_stratified_by_rank_with_the_top_quarter_over_represented() -> None:
    pool = synthetic_pool()
    picked = rc.pick(pool, 20, seed=3)
    ranks = picked["pool_rank"].tolist()
    assert ranks == sorted(ranks) and len(set(ranks)) == 20  # best first, distinct
    assert sum(r <= 20 for r in ranks) == 10  # half of the picks from the top quarter of 80
    for chosen, stretch in ((ranks[:10], range(1, 21)), (ranks[10:], range(21, 81))):
        assert all(r in part for r, part in zip(chosen, np.array_split(np.asarray(stretch), 10), strict=True))
    assert picked["top_half"].tolist() == [True] * 10 + [False] * 10
    by_id = pool.set_index("arch_id")["supernet_AP"]
    assert (picked["supernet_AP"] == picked["arch_id"].map(by_id)).all()  # rows kept whole
    assert rc.pick(pool, 20, seed=4)["arch_id"].tolist() != picked["arch_id"].tolist()


def seed_rows(picked: pd.DataFrame, seeds: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        [{"arch_id": a, "seed": s, "standalone_AP": 0.3 + 0.01 * rng.random(), "epochs": 4,
          "supernet_checkpoint": "/ckpt", "checkpoint": f"/runs/{a}_{s}"}
         for s in range(seeds) for a in picked["arch_id"]]
    )  # fmt: skip


def test_the_table_holds_the_mean_and_each_seed_and_supernet_variants_reads_it(tmp_path: Path) -> None:
    picked = rc.pick(synthetic_pool(), 20, seed=0)
    rows = seed_rows(picked, 2)
    table = rc.per_arch(picked, rows, SPACE)
    assert list(table["arch_id"]) == list(picked["arch_id"])
    first = rows[rows["arch_id"] == table["arch_id"][0]]["standalone_AP"].tolist()
    assert table.loc[0, ["standalone_AP_seed0", "standalone_AP_seed1"]].tolist() == first
    assert table.loc[0, "standalone_AP"] == pytest.approx(np.mean(first))
    (tmp_path / "rank_correlation.csv").write_text(table.to_csv(index=False))
    read = load_archs(str(tmp_path / "rank_correlation.csv"))
    assert seed_aps(read) == [list(pair) for pair in zip(*(table[f"standalone_AP_seed{s}"] for s in (0, 1)))]
    v1 = load_archs(str(V1 / "rank_correlation.csv"))  # v1: one seed, its AP the "mean"
    assert seed_aps(v1) == [[ap] for ap in v1["standalone_AP"]]


def test_a_kept_seed_row_of_another_recipe_is_refused(tmp_path: Path) -> None:
    path = tmp_path / rc.SEEDS_FILE
    rows = seed_rows(rc.pick(synthetic_pool(), 20, seed=0), 1)
    path.write_text(rows.to_csv(index=False))
    same = rc.kept_seed_rows(path, {"epochs": 4, "supernet_checkpoint": "/ckpt"})
    assert len(same) == 20 and same["seed"].tolist() == [0] * 20
    with pytest.raises(ConfigError, match="another recipe \\(epochs=4\\); run with the same --epochs"):
        rc.kept_seed_rows(path, {"epochs": 6, "supernet_checkpoint": "/ckpt"})


def test_supernet_variants_compares_every_variant_paired_with_fair_gamma() -> None:
    """Three super-nets' scores of the same 20 architectures (hand-made): each row gains its tau minus
    fair_gamma's with the paired interval, and the MD table shows it."""
    picked = rc.pick(synthetic_pool(), 20, seed=0)
    archs = rc.per_arch(picked, seed_rows(picked, 2), SPACE)
    truth = archs["standalone_AP"].to_numpy()
    noise = np.random.default_rng(3).normal(0, 0.01, len(truth))  # as large as the spread
    scores = {
        "fair_gamma": pd.DataFrame({"supernet_AP": truth + noise}),
        "fair_gamma_all": pd.DataFrame({"supernet_AP": truth}),
        "uniform_gamma": pd.DataFrame({"supernet_AP": -truth}),
    }
    rows = [{"variant": name, "kendall_tau": 0.0} for name in scores]
    variants.paired_to_reference(rows, scores, archs)
    by_name = {row["variant"]: row for row in rows}
    assert by_name["fair_gamma"]["kendall_tau_diff"] == 0.0
    assert by_name["fair_gamma_all"]["kendall_tau_diff_low"] > 0  # the exact ranker beats the noisy one
    assert by_name["uniform_gamma"]["kendall_tau_diff_high"] < 0  # the reversed one loses
    table = pd.DataFrame(
        [{**row, "sampling": "fair", "gamma": True, "train_paths": "parameterised", "subnets_per_step": 4,
          "n": 20, "kendall_tau_low": -0.1, "kendall_tau_high": 0.1, "spearman_rho": 0.0,
          "mean_supernet_AP": 0.3, "epoch_time_s": 10.0} for row in rows]
    )  # fmt: skip
    text = variants.markdown(table, "rank_correlation.csv", 2)
    assert "tau - fair_gamma [paired 95 % CI]" in text and "| (reference) |" in text
    diff = by_name["uniform_gamma"]
    assert f"| {diff['kendall_tau_diff']:+.2f} [{diff['kendall_tau_diff_low']:+.2f}," in text
    assert "up to 2 seed(s) each" in text


def refused(capfd: pytest.CaptureFixture, argv: list[str], *needles: str) -> None:
    capfd.readouterr()
    code = rank_correlation.main(argv)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("rank_correlation: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_v1s_pool_seed_too_few_picks_and_a_damaged_seed_table_are_refused_before_ray(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    refused(capfd, ["--checkpoint", "nowhere", "--pool-seed", "0", "--out", str(out)], "v1's pool", "fresh")
    refused(capfd, ["--checkpoint", "nowhere", "--m", "19", "--out", str(out)], "--m must be >= 20")
    argv = ["--checkpoint", "nowhere", "--standalone-seeds", "0", "--out", str(out)]
    refused(capfd, argv, "--standalone-seeds must be >= 1")
    assert not out.exists()
    out.mkdir()
    seeds = out / rc.SEEDS_FILE
    text = seed_rows(rc.pick(synthetic_pool(), 20, seed=0), 2).to_csv(index=False)
    seeds.write_text(text[: text.rindex(",")])  # the last row cut short: no checkpoint
    refused(
        capfd, ["--smoke", "--out", str(out)], str(seeds), "rows cut short", "train the architectures again"
    )
    assert seeds.read_text() == text[: text.rindex(",")] and sorted(p.name for p in out.iterdir()) == [
        seeds.name
    ]


@pytest.mark.slow
@pytest.mark.smoke
def test_smoke_run_writes_the_tables_the_coefficients_and_the_plot_and_reuses_its_rows(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--train-workers", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)
    assert "Kendall tau" in done.stdout and "6 standalone runs (6 trained now)" in done.stdout

    table = pd.read_csv(out / "rank_correlation.csv", dtype={"arch_id": str})
    assert len(table) == 3 and table["arch_id"].is_unique
    assert table["pool_rank"].is_monotonic_increasing and table["supernet_AP"].is_monotonic_decreasing
    per_seed = table[["standalone_AP_seed0", "standalone_AP_seed1"]]
    assert per_seed.notna().all().all()
    np.testing.assert_allclose(table["standalone_AP"], per_seed.mean(axis=1))
    seeds = pd.read_csv(out / rc.SEEDS_FILE, dtype={"arch_id": str})
    assert sorted(zip(seeds["arch_id"], seeds["seed"])) == sorted(
        (a, s) for a in table["arch_id"] for s in (0, 1)
    )
    record = json.loads((out / "rank_correlation.json").read_text())
    assert record["pool_seed"] == rc.DEFAULT_POOL_SEED and record["runs"] == 6
    assert record["all"]["n"] == 3 and record["seed_to_seed"]["n"] == 3
    assert record["top_half"]["n"] == 1 and record["top_half"]["kendall_tau"] is None  # too few to rank
    for stats in (record["all"], record["seed_to_seed"]):  # None when a side is constant
        assert stats["kendall_tau"] is None or -1.0 <= stats["kendall_tau"] <= 1.0
    assert "| top half by super-net score | 1 | n/a" in (out / "rank_correlation.md").read_text()
    assert (out / "rank_correlation.png").stat().st_size > 0
    pool = pd.read_csv(out / "pool.csv")
    assert len(pool) == 6 and (pool["pool_seed"] == rc.DEFAULT_POOL_SEED).all()
    trained = sorted(p.name for p in (out / "runs").iterdir() if p.is_dir())
    assert trained == sorted(f"arch_{a}_seed{s}" for a in table["arch_id"] for s in (0, 1))

    # re-running reuses every kept (architecture, seed) row, even with the run folders gone
    (out / "runs").rename(tmp_path / "runs_moved")
    again = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, failure_text(again)
    assert "6 standalone runs (0 trained now)" in again.stdout and not (out / "runs").exists()
    pd.testing.assert_frame_equal(pd.read_csv(out / "rank_correlation.csv", dtype={"arch_id": str}), table)
