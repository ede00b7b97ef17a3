"""FAD's head table made by shards side by side and gathered (raynas.jobs.head_shards)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from raynas.jobs.arms import HeadArm

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
ROW = {"AP": 0.3, "AP50": 0.5, "AP75": 0.3, "split": "test", "head_params": 1000, "head_flops": 2000}


def _settings(argv: list[str]):
    sys.path.insert(0, str(EXPERIMENTS))
    import fad_evidence

    from raynas.jobs.fad import fad_settings

    return fad_settings(fad_evidence.with_presets(fad_evidence.build_parser().parse_args(argv)))


def _plan() -> list[HeadArm]:
    seeds = range(3)
    searched = {"type": "fad", "genotype": {"edge": 1}, "c_prime": 12, "cells_per_group": 2}
    matched = {**searched, "c_prime": 26}
    return [
        HeadArm("FCOS head", "default_head", dict.fromkeys(seeds)),
        *(HeadArm("FAD random", f"fad_random_g{g}", dict.fromkeys(seeds, {"type": "fad", "genotype": g}),
                  genotype=g) for g in range(2)),
        HeadArm("FAD searched", "fad_full", dict.fromkeys(seeds, searched), search="fad_full"),
        HeadArm("FAD searched @c'=26", "fad_full_c26", dict.fromkeys(seeds, matched), search="fad_full"),
    ]  # fmt: skip


def _owned(out: Path, shard: str, extra: list[str] = ()) -> set[tuple[str, int]]:
    from raynas.jobs.head_shards import ShardPlan

    plan = ShardPlan.read(_settings(["--smoke", "--seeds", "3", "--out", str(out), "--shard", shard, *extra]))
    mine = plan.runs(_plan(), 3, out / "runs")
    return {(arm.slug, seed) for seed in range(3) for arm in _plan() if mine(arm, seed)}


def test_shards_deal_every_run_once_and_a_search_with_its_runs(tmp_path: Path) -> None:
    first, second = _owned(tmp_path, "0/2"), _owned(tmp_path, "1/2")
    assert not first & second
    slugs = ("default_head", "fad_random_g0", "fad_random_g1", "fad_full", "fad_full_c26")
    assert first | second == {(slug, seed) for slug in slugs for seed in range(3)}
    # the search --out lacks is dealt to shard 0, and so are its arms' runs, the matched width's too (its
    # genotype is only there); FAD random's genotypes are runs of their own, dealt like the others
    assert {(slug, seed) for slug in ("fad_full", "fad_full_c26") for seed in range(3)} <= first
    assert len(first) == 6 + 5 and len(second) == 4  # the other 9 runs alternate in the plan's order


def test_shards_leave_out_what_out_holds(tmp_path: Path) -> None:
    """A row in --out's table is not dealt; a genotype there is every shard's, its runs dealt like others."""
    (tmp_path / "genotypes").mkdir()
    (tmp_path / "genotypes" / "fad_full.json").write_text(json.dumps({"arch": {"edge": 1}}))
    cost = {"arm": "FAD searched", "search_time_s": 9.0, "search_peak_memory_mb": 1.0}
    settings = json.loads(json.dumps({"proxy": "digits", "kind": "fcos", "search_warmup": 0}))
    record = {"runs": 1, "search_costs": [cost], "settings": settings}
    (tmp_path / "fad_evidence.json").write_text(json.dumps(record))
    pd.DataFrame([{"arm": "FCOS head", "seed": 0, **ROW, "head": "torchvision"}]).to_csv(
        tmp_path / "fad_evidence.csv", index=False
    )
    first, second = _owned(tmp_path, "0/2"), _owned(tmp_path, "1/2")
    assert not first & second and ("default_head", 0) not in first | second
    assert len(first | second) == 14 and {len(first), len(second)} == {7}


def _shard_folder(out: Path, name: str, rows: list[dict], genotype: dict | None) -> None:
    folder = out / name
    (folder / "genotypes").mkdir(parents=True)
    costs = []
    if genotype is not None:
        (folder / "genotypes" / "fad_full.json").write_text(json.dumps({"space": "fad", "arch": genotype}))
        costs = [{"arm": "FAD searched", "search_time_s": 9.0, "search_peak_memory_mb": 1.0}]
    settings = {"proxy": "digits", "kind": "fcos", "search_warmup": 0, "cells_per_group": 2}
    record = {"runs": len(rows), "wall_time_total_s": 60.0, "search_costs": costs, "settings": settings}
    (folder / "fad_evidence.json").write_text(json.dumps(record))
    pd.DataFrame(rows).to_csv(folder / "fad_evidence.csv", index=False)


def test_gather_makes_one_table_of_every_shard_and_trains_nothing(tmp_path: Path, capfd) -> None:
    sys.path.insert(0, str(EXPERIMENTS))
    import fad_evidence

    from raynas.spaces.fad import FADSpace

    space = FADSpace()
    arch, other = (space.to_config(space.sample(random.Random(seed))) for seed in (0, 1))
    head = json.dumps({"type": "fad", "genotype": arch, "c_prime": 24, "cells_per_group": 2}, sort_keys=True)
    default = [{"arm": "FCOS head", "seed": seed, **ROW, "AP": 0.30 + seed / 100, "head": "torchvision"}
               for seed in range(3)]  # fmt: skip
    searched = [{"arm": "FAD searched", "seed": seed, **ROW, "AP": 0.25, "head": head} for seed in range(2)]
    # two shards that searched one arm differently: refused before anything is written to --out
    _shard_folder(tmp_path, "shard-0-of-2", [default[0], searched[0], default[2]], arch)
    _shard_folder(tmp_path, "shard-1-of-2", [default[1], searched[1], default[0]], other)
    assert fad_evidence.main(["--out", str(tmp_path), "--gather"]) == 2
    assert "two searches of fad_full" in capfd.readouterr().err
    assert not (tmp_path / "genotypes").exists() and not (tmp_path / "fad_evidence.csv").exists()

    # shard 1 without its search (its runs of FAD searched retrained shard 0's genotype)
    (tmp_path / "shard-1-of-2" / "genotypes" / "fad_full.json").unlink()
    record_path = tmp_path / "shard-1-of-2" / "fad_evidence.json"
    record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "search_costs": []}))
    assert fad_evidence.main(["--out", str(tmp_path), "--gather"]) == 0
    rows = pd.read_csv(tmp_path / "fad_evidence.csv")
    assert list(zip(rows["arm"], rows["seed"], strict=True)) == [
        ("FCOS head", 0), ("FAD searched", 0), ("FCOS head", 1), ("FAD searched", 1), ("FCOS head", 2)
    ]  # fmt: skip
    assert (tmp_path / "genotypes" / "fad_full.json").is_file()
    record = json.loads((tmp_path / "fad_evidence.json").read_text())
    assert record["shards"] == {"shard-0-of-2": 60.0, "shard-1-of-2": 60.0} and record["runs_started"] == 0
    assert "| FAD searched |" in (tmp_path / "fad_evidence.md").read_text()
    assert not (tmp_path / "runs").exists()

    # one run with rows of two heads (a search made again) is refused, the table as it was
    stale = {**searched[0], "head": head.replace('"c_prime": 24', '"c_prime": 26')}
    _shard_folder(tmp_path, "shard-0-of-3", [stale], None)
    before = (tmp_path / "fad_evidence.csv").read_bytes()
    capfd.readouterr()
    assert fad_evidence.main(["--out", str(tmp_path), "--gather"]) == 2
    assert "FAD searched at seed 0 has rows of two heads" in capfd.readouterr().err
    assert (tmp_path / "fad_evidence.csv").read_bytes() == before
    shutil.rmtree(tmp_path / "shard-0-of-3")

    # a second search of one arm in another shard is refused, and --out's table stays as it was
    _shard_folder(tmp_path, "shard-2-of-3", [], other)
    before = (tmp_path / "fad_evidence.csv").read_bytes()
    capfd.readouterr()
    assert fad_evidence.main(["--out", str(tmp_path), "--gather"]) == 2
    err = capfd.readouterr().err
    assert "two searches of fad_full" in err and "Traceback" not in err
    assert (tmp_path / "fad_evidence.csv").read_bytes() == before


def test_a_run_is_trained_by_one_live_process(tmp_path: Path) -> None:
    """A run owned by another live process is left to it; one whose owner stopped is free again."""
    import os

    from raynas.jobs.head_shards import claim

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = tmp_path / "fad_full_seed0.owner"
        owner.write_text(str(sleeper.pid))
        assert not claim(tmp_path / "fad_full_seed0")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert claim(tmp_path / "fad_full_seed0") and owner.read_text() == str(os.getpid())
    assert claim(tmp_path / "fad_full_seed0")  # its own run, again


def test_shards_of_one_deal_must_share_its_flags(tmp_path: Path) -> None:
    from raynas.config import ConfigError
    from raynas.jobs.head_shards import check_siblings

    _shard_folder(tmp_path, "shard-1-of-2", [], None)
    record = tmp_path / "shard-1-of-2" / "fad_evidence.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "settings": {"seeds": 2, "arms": None}}))
    check_siblings(_settings(["--out", str(tmp_path), "--seeds", "2", "--shard", "0/2"]))
    check_siblings(_settings(["--out", str(tmp_path), "--seeds", "3", "--shard", "0/3"]))  # another deal
    with pytest.raises(ConfigError, match="was dealt with seeds=2; start every shard of 2 with the same"):
        check_siblings(_settings(["--out", str(tmp_path), "--seeds", "3", "--shard", "0/2"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shard", "2/2"], "--shard takes I/N with 0 <= I < N"),
        (["--shard", "0/2", "--gather"], "--gather takes in every shard's rows; drop --shard"),
        (["--gather"], "has no shard folders (shard-I-of-N) to gather"),
    ],
)
def test_bad_shard_flags_are_one_line(tmp_path: Path, capfd, argv: list[str], message: str) -> None:
    sys.path.insert(0, str(EXPERIMENTS))
    import fad_evidence

    assert fad_evidence.main(["--out", str(tmp_path / "o"), *argv]) == 2
    err = capfd.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.smoke
def test_two_shards_and_gather_make_the_table_one_process_would(tmp_path: Path) -> None:
    """On the scenes smoke: shard 0 searches and trains its search's run and the default head, shard 1
    FAD random; --gather makes the table; a shard re-run and the unsharded command then train nothing."""
    from tiny_data import failure_text

    out = tmp_path / "out"
    command = [sys.executable, str(EXPERIMENTS / "fad_evidence.py"), "--smoke", "--proxy", "scenes",
               "--out", str(out), "--data", str(tmp_path / "data")]  # fmt: skip

    def run(*extra: str) -> dict:
        done = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert done.returncode == 0, failure_text(done)
        sharded = extra[:1] == ("--shard",)
        folder = out / ("shard-" + extra[1].replace("/", "-of-")) if sharded else out
        return json.loads((folder / "fad_evidence.json").read_text())

    assert run("--shard", "0/2")["runs_started"] == 2
    assert run("--shard", "1/2")["runs_started"] == 1
    first = pd.read_csv(out / "shard-0-of-2" / "fad_evidence.csv")
    assert list(first["arm"]) == ["FCOS head", "FAD searched"]
    assert list(pd.read_csv(out / "shard-1-of-2" / "fad_evidence.csv")["arm"]) == ["FAD random"]
    assert not (out / "genotypes").exists()  # the search is shard 0's until gathered

    gathered = run("--gather")
    rows = pd.read_csv(out / "fad_evidence.csv")
    assert list(rows["arm"]) == ["FCOS head", "FAD random", "FAD searched"] and rows["AP"].notna().all()
    assert set(gathered["shards"]) == {"shard-0-of-2", "shard-1-of-2"}
    assert (out / "genotypes" / "fad_full.json").is_file()
    assert run("--shard", "1/2")["runs_started"] == 0
    assert run("--shard", "2/3")["runs_started"] == 0  # dealt nothing: a record, no table
    assert not (out / "shard-2-of-3" / "fad_evidence.csv").exists()
    unsharded = run()  # trains nothing, and keeps the shards' wall times in the record
    assert unsharded["runs_started"] == 0 and set(unsharded["shards"]) == set(gathered["shards"])
    pd.testing.assert_frame_equal(pd.read_csv(out / "fad_evidence.csv"), rows)
