"""experiments/proxy_calibration.py: its plan, its refusals, and a smoke run that a re-run skips."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import proxy_calibration as calibration  # noqa: E402

import raynas.jobs.calibration as cal  # noqa: E402
from raynas.jobs.calibration_tables import goals  # noqa: E402
from raynas.jobs.shards import shard_runs, unmatched_kept_note  # noqa: E402
from raynas.spaces.opanas import OPANASSpace  # noqa: E402


def settings(argv: list[str]) -> cal.CalibrationSettings:
    """The script's flags as the calibration's settings (checked, as its entry point checks them)."""
    args = calibration.build_parser().parse_args([*argv, "--out", "runs/x"])
    return calibration.settings_of(args, calibration.check_args(args))


def test_the_full_plan_is_the_issues_calibration() -> None:
    """6 named necks x 3 seeds, 16 random necks x 2 seeds, FPN and lateral-only x 3 with context off."""
    runs = cal.plan(settings([]))
    groups = pd.Series([run.group for run in runs]).value_counts().to_dict()
    assert groups == {"named": 18, "random": 32, "control": 6}
    assert len({(run.group, run.arm, run.seed) for run in runs}) == len(runs)


def test_named_picks_necks_and_leaves_the_control_as_it_is() -> None:
    runs = cal.plan(settings(["--named", "topdown,fpn_gn", "--groups", "named,control"]))
    assert {run.slug for run in runs if run.group == "named"} == {"topdown", "fpn_gn"}
    assert {run.slug for run in runs if run.group == "control"} == {"fpn_off", "lateral_off"}
    assert set(cal.NAMED_SLUGS) == {run.slug for run in cal.plan(settings(["--groups", "named"]))}


def test_shards_side_by_side_cover_the_plan_once() -> None:
    runs = cal.plan(settings(["--groups", "named,control,random"]))
    shards = [shard_runs(runs, f"{i}/3") for i in range(3)]
    assert sorted(map(repr, sum(shards, []))) == sorted(map(repr, runs))
    assert shards[0][:2] == [runs[0], runs[3]]


def test_random_necks_run_neck_by_neck_so_a_stop_leaves_pairs() -> None:
    """The ranking and spread goals compare a random neck's seeds: its two seeds are adjacent in the plan."""
    runs = [run for run in cal.plan(settings(["--groups", "random"]))]
    assert [(run.slug, run.seed) for run in runs[:4]] == [
        ("random1", 0),
        ("random1", 1),
        ("random2", 0),
        ("random2", 1),
    ]
    named = cal.plan(settings(["--groups", "named"]))
    assert [run.seed for run in named[:7]] == [0] * 6 + [1]  # named necks stay seed by seed


def test_shards_deal_only_the_runs_that_kept_rows_do_not_cover() -> None:
    """Two shards beside a kept half of the plan share the rest evenly, the same way in both."""
    chosen = settings(["--groups", "random"])
    runs, base = cal.plan(chosen), cal.recipe(chosen)
    kept_rows, to_train = cal.split_kept(runs, base, {}, "digest")
    assert kept_rows == [] and len(to_train) == len(runs)
    kept = {tuple(identity.values()): {"arm": item.arm} for item, _, identity in to_train if item.seed == 0}
    kept_rows, to_train = cal.split_kept(runs, base, kept, "digest")
    assert len(kept_rows) == 16 and all(item.seed == 1 for item, _, _ in to_train)
    shards = [shard_runs(to_train, f"{i}/2") for i in range(2)]
    assert [len(shard) for shard in shards] == [8, 8]
    assert [item.slug for item, _, _ in shards[0][:2]] == ["random1", "random3"]
    assert cal.split_kept(runs, base, kept, "other digest")[0] == []  # another body: nothing stands


def test_kept_rows_of_the_same_runs_under_another_data_spelling_are_named() -> None:
    """A kept row of the same (group, arm, seed) whose recipe differs, e.g. --data written relative where
    the rows were made with it absolute, is not reused, and the note says which column and why."""
    chosen = settings(["--groups", "random"])
    runs, base = cal.plan(chosen), cal.recipe(chosen)
    _, to_train = cal.split_kept(runs, base, {}, "digest")
    identities = [identity for _, _, identity in to_train]
    assert unmatched_kept_note({tuple(i.values()): {} for i in identities}, identities) is None
    moved = cal.recipe(settings(["--groups", "random", "--data", str(Path("data/scenes").resolve())]))
    _, elsewhere = cal.split_kept(runs, moved, {}, "digest")
    kept = {tuple(identity.values()): {} for _, _, identity in elsewhere[:3]}
    assert cal.split_kept(runs, base, kept, "digest")[0] == []
    note = unmatched_kept_note(kept, identities)
    assert note.startswith("note: kept rows name runs of this plan but differ in recipe (3)")
    assert "relative vs an absolute path" in note


def test_random_necks_are_distinct_networks_and_fixed() -> None:
    space = OPANASSpace()
    necks = cal.random_necks(16)
    canon = {space.canonical(space.from_config(neck)) for neck in necks}
    assert len(canon) == 16
    assert cal.random_necks(16) == necks


def test_named_necks_are_the_networks_they_say() -> None:
    lateral = cal.neck_spec(cal.LATERAL)["arch"]
    assert lateral["e0_1"] == "skip" and sum(path != "none" for path in lateral.values()) == 1
    panet = cal.neck_spec(cal.PANET)["arch"]
    assert (panet["e0_1"], panet["e1_2"]) == ("top_down", "bottom_up")
    top_down = cal.neck_spec(cal.TOP_DOWN)["arch"]
    assert top_down["e0_1"] == "top_down" and sum(path != "none" for path in top_down.values()) == 1
    assert cal.neck_spec(None) is None


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--seeds", "0"], "--seeds"),
        (["--random-seeds", "-1"], "--random-seeds"),
        (["--groups", "x"], "--groups"),
        (["--shard", "2/2"], "--shard"),
        (["--shard", "1"], "--shard"),
        (["--shard", "0/2", "--gather"], "--gather"),
        (["--named", "fpn,nope"], "--named"),
        (["--kept-rows", "no/such/calibration.csv"], "--kept-rows"),
    ],
)
def test_bad_flags_are_one_line_before_ray(
    flags: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import ray

    code = calibration.main([*flags, "--out", str(tmp_path / "out"), "--data", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0]
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


def test_kept_rows_without_their_identity_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A table written before rows carried their recipe and body (e.g. try 5's) cannot stand for runs."""
    old = tmp_path / "calibration.csv"
    pd.DataFrame([{"group": "named", "arm": "FPN", "seed": 0, "neck": "fpn", "AP": 0.3}]).to_csv(old)
    code = calibration.main(["--kept-rows", str(old), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "['recipe', 'body']" in err[0]
    assert not (tmp_path / "out").exists()


def test_goals_are_measured_from_rows() -> None:
    """The goal arithmetic on hand-made rows: gap, pooled std, spread between/within, seed tau."""
    rows = []
    for seed, (fpn, lat) in enumerate([(0.30, 0.20), (0.32, 0.21), (0.31, 0.19)]):
        rows += [{"group": "named", "arm": "FPN", "seed": seed, "AP": fpn, "APl": 0.4, "epoch_time_s": 20.0},
                 {"group": "named", "arm": "lateral-only", "seed": seed, "AP": lat, "APl": 0.3,
                  "epoch_time_s": 20.0}]  # fmt: skip
    for k in range(4):
        for seed in range(2):
            ap = 0.1 * k + 0.001 * seed
            rows.append({"group": "random", "arm": f"random {k + 1}", "seed": seed, "AP": ap, "APl": 0.0,
                         "epoch_time_s": 20.0})  # fmt: skip
    # a neck with one seed so far (a stop): left out of the spread and the ranking, which compare seeds
    rows.append(
        {"group": "random", "arm": "random 5", "seed": 0, "AP": 0.0, "APl": 0.0, "epoch_time_s": 20.0}
    )
    measured = goals(pd.DataFrame(rows))
    assert measured["fpn_minus_lateral_AP"] == pytest.approx(11.0)
    assert measured["goal_fpn_gap"] is True
    assert measured["random_pairs"] == 4 and measured["random_between_arch_std"] == pytest.approx(
        12.91, abs=0.01
    )
    assert measured["random_seed_tau"] == pytest.approx(1.0)
    assert measured["random_seed_tau_low"] <= 1.0 == measured["random_seed_tau_high"]
    assert measured["goal_spread"] is True and measured["goal_epoch_time"] is True


@pytest.mark.slow
@pytest.mark.smoke
def test_smoke_runs_end_to_end_and_a_rerun_skips(ray_session, tmp_path: Path) -> None:
    argv = [
        "--smoke",
        "--groups",
        "named,random",
        "--out",
        str(tmp_path / "out"),
        "--data",
        str(tmp_path / "d"),
    ]
    assert calibration.main(argv) == 0
    first = json.loads((tmp_path / "out" / "calibration.json").read_text())
    table = pd.read_csv(tmp_path / "out" / "calibration.csv")
    assert first["runs"] == first["runs_trained_now"] == 3 == len(table)
    assert table["AP"].notna().all() and (tmp_path / "out" / "calibration.md").is_file()
    assert (tmp_path / "d" / "test").is_dir()  # scored on the test split the data carry
    # each run's tags where its glyphs are found, kept beside the run (a share, or NaN where none is found)
    for role in cal.TAGGED:
        assert table[f"{role}_tag_right"].dropna().between(0, 1).all()
    assert len(list((tmp_path / "out" / "runs").glob("*/tag_accuracy.json"))) == 3
    assert "tags right where the glyph is found" in (tmp_path / "out" / "calibration.md").read_text()
    assert calibration.main(argv) == 0
    again = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert again["runs"] == 3 and again["runs_trained_now"] == 0
    # --gather: the tables of the finished runs; the control run of the plan is listed, not trained
    assert calibration.main([*argv, "--gather", "--groups", "named,random,control"]) == 0
    gathered = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert gathered["runs"] == 3 and gathered["runs_trained_now"] == 0
    assert gathered["missing_runs"] == ["FPN (context off) seed 0"]
    assert "Not finished yet (1 runs" in (tmp_path / "out" / "calibration.md").read_text()
    # another machine: the committed rows stand for their runs (same recipe and body), nothing trains
    kept = tmp_path / "kept.csv"
    kept.write_text((tmp_path / "out" / "calibration.csv").read_text())
    elsewhere = ["--smoke", "--groups", "named,random", "--data", str(tmp_path / "d")]
    assert calibration.main([*elsewhere, "--out", str(tmp_path / "elsewhere"), "--kept-rows", str(kept)]) == 0
    moved = json.loads((tmp_path / "elsewhere" / "calibration.json").read_text())
    assert moved["runs"] == 3 and moved["runs_trained_now"] == 0
    assert not (tmp_path / "elsewhere" / "runs").exists()
    assert pd.read_csv(tmp_path / "elsewhere" / "calibration.csv")["AP"].tolist() == table["AP"].tolist()
