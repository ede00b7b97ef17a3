"""``experiments/proxy_test_split.py`` (issue 26: the random necks' goals on a larger test split): more test
images leave the first ones (and every other split) as they were, the goals are measured on both splits
from the scores kept per run, and bad flags are one line before anything is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from raynas.data.scenes import generate_scenes
from raynas.jobs import test_split_probe

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import proxy_test_split  # noqa: E402


def test_more_test_images_keep_the_first_ones_and_the_other_splits(tmp_path: Path) -> None:
    small = generate_scenes(tmp_path / "small", 2, 1, 2, 128, progress=False)
    large = generate_scenes(tmp_path / "large", 2, 1, 4, 128, progress=False)
    for split, count in (("train", 2), ("val", 1), ("test", 2)):
        for index in range(count):
            name = sorted((small / split).iterdir())[index].name
            assert (small / split / name).read_bytes() == (large / split / name).read_bytes()
    few = json.loads((small / "annotations" / "instances_test.json").read_text())
    many = json.loads((large / "annotations" / "instances_test.json").read_text())
    first = {image["id"] for image in few["images"]}
    assert len(many["images"]) == 4
    assert [a for a in many["annotations"] if a["image_id"] in first] == few["annotations"]


def _score(out: Path, run: str, ap_200: float, ap_large: float, arch: dict | None = None) -> None:
    (out / "scores").mkdir(parents=True, exist_ok=True)
    metrics = {"AP50": 0.5, "APs": 0.1, "APm": 0.2, "APl": 0.3}
    record = {"checkpoint": f"ckpt_{run}", "test_images": 600, "test200": {"AP": ap_200, **metrics},
              "larger": {"AP": ap_large, **metrics}, **({"arch": arch} if arch else {})}  # fmt: skip
    (out / "scores" / f"{run}.json").write_text(json.dumps(record))


def test_the_goals_are_measured_on_both_splits_from_the_kept_scores(tmp_path: Path) -> None:
    """Seed 1 reverses seed 0's order on 200 images and keeps it on the larger split: tau -1 vs 1."""
    for neck, (ap0, ap1) in enumerate([(0.30, 0.32), (0.31, 0.31), (0.32, 0.30)], start=1):
        _score(tmp_path, f"random{neck}_seed0", ap0, 0.28 + 0.01 * neck)
        _score(tmp_path, f"random{neck}_seed1", ap1, 0.281 + 0.01 * neck)
    record = test_split_probe.write_outputs(tmp_path, 600, 0.0)
    assert record["runs"] == 6
    assert record["test200"]["random_seed_tau"] == pytest.approx(-1.0)
    assert record["test600"]["random_seed_tau"] == pytest.approx(1.0)
    assert record["test600"]["goal_tau"] and not record["test200"]["goal_tau"]
    text = (tmp_path / "test_split.md").read_text()
    assert (
        "| random 1 | 0 | 30.0 | 29.0 |" in text and "seed 0 vs seed 1 Kendall tau | -1.00 | 1.00 |" in text
    )


def test_the_random_necks_become_an_archs_table_a_super_net_can_be_ranked_on(tmp_path: Path) -> None:
    """random_necks_archs.csv: one row per neck, its edges, its AP per seed on the larger split and their
    mean, in the columns supernet_variants.py --archs reads (checked by its own loader)."""
    import random

    from raynas.jobs.supernet_scores import load_archs
    from raynas.spaces.opanas import OPANASSpace

    space = OPANASSpace(5)
    archs = [space.to_config(space.sample(random.Random(neck))) for neck in range(3)]
    for neck, arch in enumerate(archs, start=1):
        _score(tmp_path, f"random{neck}_seed0", 0.3, 0.28 + 0.01 * neck, arch)
        if neck != 2:  # neck 2 lacks seed 1: its mean is its one seed
            _score(tmp_path, f"random{neck}_seed1", 0.3, 0.29 + 0.01 * neck, arch)
    test_split_probe.write_outputs(tmp_path, 600, 0.0)
    table = load_archs(str(tmp_path / test_split_probe.ARCHS))
    assert list(table["arm"]) == ["random 1", "random 2", "random 3"]
    assert [space.to_config(space.from_config(row)) for row in table.to_dict("records")] == archs
    assert table["standalone_AP"].tolist() == pytest.approx([0.295, 0.30, 0.315])
    assert table["standalone_AP_seed1"].isna().tolist() == [False, True, False]
    assert "arch" not in (tmp_path / "test_split.csv").read_text().splitlines()[0].split(",")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--test-images", "200"], "--test-images must be above the calibration's 200"),
        (["--shard", "2/2"], "--shard takes I/N"),
        ([], "holds no finished random-neck run"),
    ],
)
def test_bad_flags_are_one_line_and_write_nothing(flags, named, tmp_path: Path, capfd) -> None:
    out = tmp_path / "out"
    code = proxy_test_split.main(["--runs", str(tmp_path / "runs"), "--out", str(out), *flags])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0], err
    assert not out.exists()


def test_a_kept_score_counts_only_for_its_own_checkpoint(tmp_path: Path) -> None:
    _score(tmp_path, "random1_seed0", 0.3, 0.29)
    kept = tmp_path / "scores" / "random1_seed0.json"
    assert test_split_probe._scored(kept, Path("ckpt_random1_seed0"))
    assert not test_split_probe._scored(kept, Path("elsewhere/ckpt_random1_seed0"))
    kept.write_text("{")
    assert not test_split_probe._scored(kept, Path("ckpt_random1_seed0"))


def test_a_damaged_kept_score_of_a_run_is_one_line(tmp_path: Path, capfd) -> None:
    run = tmp_path / "runs" / "random1_seed0"
    run.mkdir(parents=True)
    (run / "test_metrics.json").write_text("{")  # cut short
    code = proxy_test_split.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "test_metrics.json cannot be read" in err[0], err
    assert not (tmp_path / "out").exists()
