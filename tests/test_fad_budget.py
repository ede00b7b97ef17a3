"""``experiments/fad_budget_sweep.py`` (issue 28: FAD's budget chosen, not guessed): the grid, the schedule
check on hand-made curves, flags refused before Ray, and the smoke run end to end on the scenes proxy,
re-run without training again (also from the table alone)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from tiny_data import failure_text

from raynas.config import ConfigError
from raynas.jobs import fad_budget

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import fad_budget_sweep  # noqa: E402


def settings(argv: list[str]) -> fad_budget.SweepSettings:
    args = fad_budget_sweep.with_presets(fad_budget_sweep.build_parser().parse_args(argv))
    from raynas.jobs.fad import fad_settings

    return fad_budget.SweepSettings(
        fad_settings(args), tuple(args.c_primes), tuple(args.search_lengths), tuple(args.search_warmups)
    )


def test_the_grid_is_the_issues_widths_by_two_search_lengths() -> None:
    chosen = settings(["--proxy", "scenes"])
    assert [(c, warmup, length) for _, c, warmup, length in fad_budget.grid(chosen)] == [
        (24, 0, 2), (24, 0, 6), (48, 0, 2), (48, 0, 6), (96, 0, 2), (96, 0, 6)
    ]  # fmt: skip
    assert chosen.fad.seeds == 3 and chosen.fad.proxy == "scenes"
    smoke = settings(["--smoke", "--c-primes", "16"])
    assert (smoke.widths, smoke.search_lengths, smoke.fad.seeds, smoke.fad.epochs) == ((16,), (1, 2), 2, 2)


def test_warmups_are_a_grid_axis_and_a_point_without_one_keeps_its_old_name() -> None:
    chosen = settings(["--proxy", "scenes", "--c-primes", "24", "--search-warmups", "0", "6",
                       "--search-lengths", "2"])  # fmt: skip
    assert fad_budget.grid(chosen) == [("c24_e2", 24, 0, 2), ("c24_w6_e2", 24, 6, 2)]
    from raynas.jobs.fad import fad_base_config, fad_search_config

    point = fad_budget.replace(chosen.fad, c_prime=24, search_epochs=2, search_warmup=6)
    search = fad_search_config(fad_base_config(point, "fcos"), point, "s")
    assert (search.optim.epochs, search.fad.arch_warmup_epochs, search.optim.milestones) == (8, 6, [7])


def _curves(values: dict[str, list[float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = pd.DataFrame([{"run": run, "arm": fad_budget.DEFAULT_ARM} for run in values])
    curves = pd.DataFrame(
        [
            {"run": run, "epoch": epoch + 1, "AP": ap}
            for run, aps in values.items()
            for epoch, ap in enumerate(aps)
        ]
    )
    return rows, curves


def test_the_schedule_has_stopped_when_the_last_rise_is_within_the_seed_std() -> None:
    flat = fad_budget.schedule_check(*_curves({"a": [0.10, 0.20, 0.21], "b": [0.12, 0.22, 0.25]}))
    assert flat["epochs"] == 3 and flat["seeds"] == 2
    assert flat["last_epoch_rise"] == pytest.approx(0.02) and flat["seed_std"] == pytest.approx(0.04 / 2**0.5)
    assert flat["stopped"] is True and flat["rise_before_decay"] == pytest.approx(0.10)
    rising = fad_budget.schedule_check(*_curves({"a": [0.10, 0.20, 0.30], "b": [0.11, 0.21, 0.31]}))
    assert rising["stopped"] is False
    assert fad_budget.schedule_check(*_curves({"a": [0.1, 0.2]}))["stopped"] is None  # one seed: no std


def test_the_table_says_the_grid_and_whether_to_retrain_longer() -> None:
    rows, curves = _curves({"default_seed0": [0.10, 0.20, 0.30], "default_seed1": [0.11, 0.21, 0.33]})
    rows = rows.assign(AP=[0.30, 0.33], AP50=0.5, split="test", head_params=3.1e5, head_flops=2e8)
    searched = {"run": "c24_e2", "arm": fad_budget.SEARCHED_ARM, "c_prime": 24, "search_epochs": 2,
                "AP": 0.25, "AP50": 0.4, "split": "test", "head_params": 1.3e5, "head_flops": 9e7,
                "search_time_s": 61.0}  # fmt: skip
    text = fad_budget.markdown(pd.concat([rows, pd.DataFrame([searched])], ignore_index=True), curves)
    assert "torchvision's head: 31.5 +/- 2.1 (2 seeds), 0.31 M head params" in text
    assert "| 24 | 0 | 2 | 25.0 | 40.0 | 0.13 M | 0.09 G | 61 s |" in text  # a row from before warm-ups
    warmed = {**searched, "run": "c24_w6_e2", "search_warmup": 6, "AP": 0.27}
    text = fad_budget.markdown(pd.concat([rows, pd.DataFrame([searched, warmed])], ignore_index=True), curves)
    assert "| 24 | 0 | 2 | 25.0 |" in text and "| 24 | 6 | 2 | 27.0 |" in text
    assert "rose +11.00 over epoch 3" in text and "is still rising: retrain longer" in text
    one = fad_budget.markdown(rows.iloc[:1], curves[curves["run"] == "default_seed0"])
    assert "torchvision's head: 30.0 (1 seed), 0.31 M head params" in one and "nan" not in one


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--c-primes", "24", "24"], "--c-primes"),
        (["--search-lengths", "0"], "--search-lengths"),
        (["--search-warmups", "-1"], "--search-warmups"),
        (["--seeds", "0"], "--seeds"),
        (["--smoke", "--paper"], "--smoke and --paper"),
    ],
)
def test_bad_flags_are_one_line_before_ray(flags, named, tmp_path: Path, capfd) -> None:
    import ray

    code = fad_budget_sweep.main([*flags, "--out", str(tmp_path / "out"), "--data", str(tmp_path / "d")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0], err
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.smoke
def test_smoke_sweep_runs_end_to_end_and_a_rerun_skips(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, str(EXPERIMENTS / "fad_budget_sweep.py"), "--smoke", "--proxy", "scenes",
               "--out", str(out), "--data", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)
    rows = pd.read_csv(out / "budget_sweep.csv")
    assert list(rows["run"]) == ["default_seed0", "default_seed1", "c12_e1", "c12_e2"]
    assert set(rows["split"]) == {"test"} and rows["AP"].notna().all()
    curves = pd.read_csv(out / "budget_curve.csv")
    assert curves.groupby("run")["epoch"].apply(list).to_dict() == dict.fromkeys(rows["run"], [1, 2])
    record = json.loads((out / "budget_sweep.json").read_text())
    assert record["runs_started"] == 4 and record["schedule"]["seeds"] == 2
    assert "Schedule: the default head's mean val AP rose" in (out / "budget_sweep.md").read_text()
    assert (out / "budget_sweep.png").stat().st_size > 0 and (out / "genotypes" / "c12_e2.json").is_file()

    shutil.rmtree(out / "runs")  # the table alone (a committed copy) stands for its runs
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, failure_text(again)
    assert json.loads((out / "budget_sweep.json").read_text())["runs_started"] == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "budget_sweep.csv"), rows)
    pd.testing.assert_frame_equal(pd.read_csv(out / "budget_curve.csv"), curves)


class Stop(Exception):
    """Stands for Ctrl+C in the middle of a run."""


def test_a_stopped_sweep_is_resumed_by_the_same_command_and_keeps_every_row(tmp_path, monkeypatch) -> None:
    """The record is written after every run (a table without it is refused as of unknown recipe), and a
    kept row the resumed run has not reached yet stays in the table when that run stops too."""
    import raynas.jobs.proxies
    import raynas.training.darts

    out = tmp_path / "out"
    argv = ["--smoke", "--proxy", "scenes", "--out", str(out), "--data", str(tmp_path / "d")]
    trained: list[str] = []

    def fake_trained(cfg, run, fields):
        if run in stop_at:
            raise Stop(run)
        trained.append(run)
        row = {"run": run, **fields, "AP": 0.2, "AP50": 0.4, "AP75": 0.1, "split": "test",
               "head_params": 1000, "head_flops": 2000}  # fmt: skip
        return row, pd.DataFrame({"run": [run] * 2, "epoch": [1, 2], "AP": [0.1, 0.2]}), True

    monkeypatch.setattr(raynas.jobs.proxies, "prepare_inputs", lambda *a, **k: None)
    monkeypatch.setattr(fad_budget, "_trained", fake_trained)
    stop_at = {"default_seed1"}
    settings_, base, before = fad_budget_sweep.check(fad_budget_sweep.build_parser().parse_args(argv))
    with pytest.raises(Stop):
        fad_budget.run(settings_, base, before)
    record = json.loads((out / "budget_sweep.json").read_text())
    assert record["runs"] == 1 and record["settings"]["proxy"] == "scenes"

    # resumed by the same command: the kept run is not trained again; a kept row of a later grid point
    # (c12_e2, as if finished on another machine) survives a stop before the run reaches it
    table = pd.read_csv(out / "budget_sweep.csv")
    later = {"run": "c12_e2", "arm": fad_budget.SEARCHED_ARM, "seed": 0, "c_prime": 12, "search_epochs": 2,
             "AP": 0.3, "AP50": 0.5, "AP75": 0.2, "split": "test", "head_params": 900, "head_flops": 1800,
             "search_time_s": 5.0}  # fmt: skip
    pd.concat([table, pd.DataFrame([later])]).to_csv(out / "budget_sweep.csv", index=False)
    stop_at = set()
    monkeypatch.setattr(
        raynas.training.darts, "search_fad", lambda cfg: (_ for _ in ()).throw(Stop("search"))
    )
    settings_, base, before = fad_budget_sweep.check(fad_budget_sweep.build_parser().parse_args(argv))
    with pytest.raises(Stop):
        fad_budget.run(settings_, base, before)
    assert trained == ["default_seed0", "default_seed1"]
    assert list(pd.read_csv(out / "budget_sweep.csv")["run"]) == ["default_seed0", "default_seed1", "c12_e2"]
    assert json.loads((out / "budget_sweep.json").read_text())["runs"] == 2

    # a stop in a retraining keeps its search: the resumed run retrains without searching again
    genotype = tmp_path / "genotype.json"
    shutil.copyfile(EXPERIMENTS / "results" / "fad_evidence" / "genotypes" / "fad_full.json", genotype)
    found = SimpleNamespace(genotype_path=genotype, metrics={"epoch_time_s": 3.0, "epoch": 2})
    monkeypatch.setattr(raynas.training.darts, "search_fad", lambda cfg: found)
    stop_at = {"c12_e1"}
    with pytest.raises(Stop):
        fad_budget.run(*fad_budget_sweep.check(fad_budget_sweep.build_parser().parse_args(argv)))
    assert json.loads((out / "budget_sweep.json").read_text())["searches"]["c12_e1"]["search_time_s"] == 6.0
    stop_at = set()
    monkeypatch.setattr(raynas.training.darts, "search_fad", lambda cfg: (_ for _ in ()).throw(Stop("again")))
    fad_budget.run(*fad_budget_sweep.check(fad_budget_sweep.build_parser().parse_args(argv)))
    table = pd.read_csv(out / "budget_sweep.csv").set_index("run")
    assert trained[-1] == "c12_e1" and table.loc["c12_e1", "search_time_s"] == 6.0
    (out / "genotypes" / "c12_e1.json").write_text("{")  # a damaged kept genotype: named before Ray
    with pytest.raises(ConfigError, match="c12_e1.json cannot be read as a genotype"):
        fad_budget_sweep.check(fad_budget_sweep.build_parser().parse_args(argv))
