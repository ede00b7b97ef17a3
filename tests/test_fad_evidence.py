"""``experiments/fad_evidence.py`` (FAD Table 2 on the proxy): the smoke run end to end in its own process,
re-run without training again; a searched genotype.json retrains as it is (a head spec takes its path)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tiny_data import failure_text

from raynas.models.build import head_factory
from raynas.spaces.fad import FADSpace
from raynas.spaces.fad.head import FADHead

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.slow
@pytest.mark.smoke
def test_smoke_run_writes_all_outputs_and_skips_finished_runs(tmp_path: Path) -> None:
    """On the scenes proxy: the DARTS search and every retraining run on the frozen body's cached outputs,
    scored on the test split (the digits path: the mask-head smoke and the unit tests)."""
    out = tmp_path / "out"
    command = [sys.executable, str(EXPERIMENTS / "fad_evidence.py"), "--smoke", "--proxy", "scenes",
               "--out", str(out), "--data", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)
    assert "caching the body's outputs" in done.stdout + done.stderr
    rows = pd.read_csv(out / "fad_evidence.csv")
    assert list(rows["arm"]) == ["FCOS head", "FAD random", "FAD searched"] and rows["AP"].notna().all()
    assert set(rows["split"]) == {"test"} and list(rows["genotype"].fillna(-1)) == [-1, 0, -1]
    assert rows.loc[rows["arm"] == "FCOS head", "head"].item() == "torchvision"
    table = (out / "fad_evidence.md").read_text()
    assert "| FAD searched |" in table and " MB |" in table  # search time and peak memory of the searched arm
    assert (out / "fad_evidence.png").stat().st_size > 0
    genotype = out / "genotypes" / "fad_full.json"
    assert (out / "genotypes" / "fad_full.png").stat().st_size > 0
    assert json.loads((out / "fad_evidence.json").read_text())["runs_started"] == 3

    again = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, failure_text(again)
    assert json.loads((out / "fad_evidence.json").read_text())["runs_started"] == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "fad_evidence.csv"), rows)

    # the table alone (a committed copy, no run folders) is extended, not redone
    shutil.rmtree(out / "runs")
    from_table = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert from_table.returncode == 0, failure_text(from_table)
    assert "FAD searched (from " in from_table.stdout
    assert json.loads((out / "fad_evidence.json").read_text())["runs_started"] == 0
    assert not (out / "runs").exists()
    pd.testing.assert_frame_equal(pd.read_csv(out / "fad_evidence.csv"), rows)

    # rows of another recipe are never mixed into the table
    other = subprocess.run(
        [*command, "--kind", "retinanet"], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "holds a table made with kind=fcos" in other.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out / "fad_evidence.csv"), rows)

    # the written genotype retrains as it is: a head spec takes its path
    head = head_factory({"type": "fad", "genotype": str(genotype), "c_prime": 12}, "fcos")(64, 1, 11)
    assert isinstance(head, FADHead) and not head.searchable
    arch = json.loads(genotype.read_text())["arch"]
    assert FADSpace().to_config(head.genotype()) == arch


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is not a file"),
        ("{", "is not JSON"),
        ('{"space": "opanas", "arch": {}}', "not a FAD genotype"),
    ],
)
def test_a_bad_genotype_path_is_a_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "genotype.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        head_factory({"type": "fad", "genotype": str(path)}, "fcos")


def test_a_run_of_some_arms_keeps_the_search_costs_of_the_others(tmp_path: Path) -> None:
    """``--arms`` extends a table: the arms it leaves out keep their genotypes, rows and search costs."""
    sys.path.insert(0, str(EXPERIMENTS))
    import fad_evidence

    (tmp_path / "genotypes").mkdir()
    (tmp_path / "genotypes" / "no_repshare.json").write_text(json.dumps({"arch": {"edge": "kept"}}))
    before = {
        "search_costs": [
            {"arm": "FAD searched", "search_time_s": 99.0, "search_peak_memory_mb": 1186.0},
            {"arm": "no RepShare", "search_time_s": 187.0, "search_peak_memory_mb": 1278.0},
        ]
    }
    from raynas.jobs.fad import fad_settings
    from raynas.jobs.head_evidence import run_searches

    args = fad_evidence.with_presets(fad_evidence.build_parser().parse_args(["--arms", "no_repshare"]))
    genotypes, costs = run_searches(None, fad_settings(args), tmp_path, before)  # nothing left to search
    assert genotypes == {"no RepShare": {"edge": "kept"}}
    assert sorted(costs, key=lambda cost: cost["arm"]) == before["search_costs"]


def test_a_flag_given_with_smoke_or_paper_wins_over_the_preset() -> None:
    sys.path.insert(0, str(EXPERIMENTS))
    import fad_evidence

    parse = fad_evidence.build_parser().parse_args
    smoke = fad_evidence.with_presets(parse(["--smoke", "--seeds", "2"]))
    assert (smoke.seeds, smoke.epochs, smoke.c_prime) == (2, 1, 12)  # the rest from the smoke preset
    paper = fad_evidence.with_presets(parse(["--paper", "--epochs", "3"]))
    assert (paper.seeds, paper.epochs, paper.c_prime, paper.search_epochs) == (3, 3, 96, 12)
    plain = fad_evidence.with_presets(parse([]))
    assert (plain.seeds, plain.search_epochs, plain.epochs, plain.c_prime) == (3, 2, 4, 24)


def test_smoke_and_paper_together_are_refused(tmp_path, capfd) -> None:
    sys.path.insert(0, str(EXPERIMENTS))
    import fad_evidence

    code = fad_evidence.main(["--smoke", "--paper", "--out", str(tmp_path / "o")])
    err = capfd.readouterr().err
    assert code == 2 and "--smoke and --paper exclude each other" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def _settings(argv: list[str]):
    sys.path.insert(0, str(EXPERIMENTS))
    import fad_evidence

    from raynas.jobs.fad import fad_settings

    return fad_settings(fad_evidence.with_presets(fad_evidence.build_parser().parse_args(argv)))


def test_fad_random_draws_one_genotype_per_index_and_trains_it_at_every_seed() -> None:
    """Issue 28: 3 genotypes x 3 seeds, so that the genotypes' spread and the seeds' are reported apart."""
    import random

    from raynas.jobs.head_evidence import RANDOM_ARM, plan_arms

    arms = [arm for arm in plan_arms({}, _settings(["--seeds", "3"]), None) if arm.label == RANDOM_ARM]
    assert [arm.genotype for arm in arms] == [0, 1, 2]
    assert len({json.dumps(arm.head_for_seed[0], sort_keys=True) for arm in arms}) == 3
    assert all(arm.head_for_seed[seed] == arm.head_for_seed[0] for arm in arms for seed in range(3))
    # genotype g is the one earlier tables drew for seed g, so their rows stand for the diagonal runs
    space = FADSpace()
    assert arms[1].head_for_seed[0]["genotype"] == space.to_config(space.sample(random.Random(1001)))
    assert [
        arm.genotype for arm in plan_arms({}, _settings(["--smoke"]), None) if arm.genotype is not None
    ] == [0]


def test_fad_randoms_spread_between_genotypes_is_told_apart_from_its_seeds() -> None:
    from raynas.jobs.head_evidence import markdown, random_spread, summarize

    rows = pd.DataFrame(
        [{"arm": "FCOS head", "seed": s, "genotype": None, "AP": 0.3, "AP50": 0.5, "AP75": 0.3,
          "head_params": 1e6, "head_flops": 1e9} for s in range(2)]
        + [{"arm": "FAD random", "seed": s, "genotype": g, "AP": 0.1 * (g + 1) + 0.02 * s, "AP50": 0.4,
            "AP75": 0.2, "head_params": 1e6, "head_flops": 1e9} for g in range(2) for s in range(2)]
    )  # fmt: skip
    spread = random_spread(rows)
    assert spread["genotypes"] == 2
    assert spread["between_genotypes_std"] == pytest.approx(0.1 / 2**0.5)
    assert spread["between_seeds_std"] == pytest.approx(0.02 / 2**0.5)
    table = summarize(rows, "FCOS head").set_index("arm")
    # tested on the genotypes' means: n = 2 genotypes, not 4 runs
    assert table.loc["FAD random", "seeds"] == 2 and table.loc["FAD random", "AP_mean"] == pytest.approx(0.16)
    assert table.loc["FAD random", "AP_std"] == pytest.approx(0.1 / 2**0.5)
    text = markdown(summarize(rows, "FCOS head"), pd.DataFrame(), rows)
    assert "2 genotype(s)" in text and "between genotypes 7.1" in text and "one genotype 1.4" in text


def test_a_table_from_before_the_genotypes_is_extended_not_redone() -> None:
    """The committed digits table: FAD random's rows lack the genotype (g was seed g's draw) and FAD heads
    lack cells_per_group (they had one); its rows stand for this plan's runs, and a run of this plan
    replaces its own row instead of sitting beside it."""
    from raynas.jobs.fad import fad_head_spec
    from raynas.jobs.head_evidence import random_heads, run_unit, with_genotypes
    from raynas.studies.tables import head_key, kept_row

    settings = _settings(["--cells-per-group", "1"])
    head = random_heads(settings)[1]
    old_head = {key: value for key, value in head.items() if key != "cells_per_group"}
    old = pd.DataFrame([{"arm": "FAD random", "seed": 1, "AP": 0.2, "head": head_key(old_head)},
                        {"arm": "FCOS head", "seed": 1, "AP": 0.3, "head": "torchvision"}])  # fmt: skip
    assert kept_row(old, "FAD random", 1, head_key(head))["AP"] == 0.2
    assert kept_row(old, "FAD random", 1, head_key(fad_head_spec(head["genotype"], _settings([])))) is None
    rows = with_genotypes(old).to_dict("records")
    assert [run_unit(row) for row in rows] == [("FAD random", 1, 1), ("FCOS head", 1, -1)]
    assert run_unit({"arm": "FAD random", "seed": 1, "genotype": 1}) == run_unit(
        rows[0]
    )  # the rerun's row replaces it


def test_the_matched_width_has_the_default_heads_parameters_within_5_percent(tmp_path: Path) -> None:
    """The searched head at the width whose head parameters match torchvision's (Table 3 compares at
    nearly equal parameters)."""
    from raynas.evaluation import count_params
    from raynas.jobs.fad import fad_base_config, fad_head_spec
    from raynas.jobs.head_evidence import matched_c_prime, random_heads
    from raynas.models.build import build_model

    settings = _settings(["--data", str(tmp_path)])
    (tmp_path / "annotations").mkdir()
    categories = [{"id": i, "name": str(i)} for i in range(1, 11)]
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps({"categories": categories}))
    base = fad_base_config(settings, "fcos")
    genotype = random_heads(settings)[0]["genotype"]
    c_prime = matched_c_prime(base, genotype, settings)
    model = base.model.__class__(**{**vars(base.model), "backbone_weights": None})

    def head_params(head: dict | None) -> int:
        return count_params(build_model(model, 11, None, head).head)

    assert abs(head_params(fad_head_spec(genotype, settings, c_prime)) / head_params(None) - 1) <= 0.05
    assert c_prime % 2 == 0  # GroupNorm keeps >= 2 groups (gcd(c', 32))


@pytest.mark.parametrize(
    ("matched", "arms"), [(26, ["FAD searched", "FAD searched @c'=26"]), (24, ["FAD searched"])]
)
def test_a_matched_width_equal_to_the_searched_one_is_not_trained_twice(monkeypatch, matched, arms) -> None:
    """Where the matched width is --c-prime, the matched arm would be the searched head again."""
    from raynas.jobs import head_evidence

    monkeypatch.setattr(head_evidence, "matched_c_prime", lambda base, genotype, settings: matched)
    genotype = head_evidence.random_heads(_settings([]))[0]["genotype"]
    planned = head_evidence.plan_arms({"FAD searched": genotype}, _settings(["--c-prime", "24"]), None)
    assert [arm.label for arm in planned if arm.search] == arms


def test_the_scenes_recipe_is_the_calibrations_on_cached_body_outputs(tmp_path: Path) -> None:
    """--proxy scenes (issue 28): 320 px scenes, the calibration's body frozen and cached for the one-stage
    heads (Mask R-CNN runs its frozen body), every training image, the proxy's FCOS anchors."""
    from raynas.data.scenes import scenes_anchor_sizes
    from raynas.jobs.fad import fad_base_config, fad_search_config

    settings = _settings(["--proxy", "scenes"])
    assert (settings.data, settings.train_images) == ("data/scenes", 1000)
    fcos, mask = fad_base_config(settings, "fcos"), fad_base_config(settings, "mask_rcnn")
    assert (fcos.data.format, fcos.data.image_size, fcos.data.search_fraction) == ("scenes", 320, 0.0)
    assert fcos.model.cache_features and fcos.model.trainable_backbone_layers == 0
    assert fcos.model.body_steps is None  # the calibration's body, not the main job's short one
    assert fcos.model.anchor_sizes == list(scenes_anchor_sizes(320))
    assert not mask.model.cache_features and mask.model.trainable_backbone_layers == 0
    smoke = fad_base_config(_settings(["--proxy", "scenes", "--smoke"]), "fcos")
    assert (smoke.data.root, smoke.data.image_size, smoke.model.min_size) == ("data/scenes_smoke", 128, 128)
    assert smoke.model.anchor_sizes == list(scenes_anchor_sizes(128))
    assert _settings([]).proxy == "digits" and _settings([]).train_images == 600
    # the budget sweep's recipe on scenes (16 epochs, c' = 24, 6 weights-only + 2 search epochs); digits keeps
    # its 4 epochs and DARTS's alternation from the first batch
    assert (settings.epochs, settings.c_prime, settings.search_warmup, settings.search_epochs) == (
        16,
        24,
        6,
        2,
    )
    assert _settings([]).epochs == 4 and _settings(["--proxy", "scenes", "--epochs", "8"]).epochs == 8
    assert (
        _settings([]).search_warmup == 0
        and _settings(["--proxy", "scenes", "--search-warmup", "0"]).search_warmup == 0
    )
    assert _settings(["--proxy", "scenes", "--smoke"]).epochs == 1
    assert _settings(["--proxy", "scenes", "--smoke"]).search_warmup == 0
    search = fad_search_config(fcos, settings, "s")
    assert (search.optim.epochs, search.fad.arch_warmup_epochs) == (8, 6)


@pytest.mark.parametrize("script", ["fad_evidence", "mask_fad"])
@pytest.mark.parametrize(
    ("flags", "recorded"),
    [(["--proxy", "scenes"], "proxy=digits"), (["--search-warmup", "6"], "search_warmup=0")],
)
def test_a_table_from_before_a_flag_is_not_extended_under_another_value(
    script: str, flags: list[str], recorded: str, tmp_path: Path, capfd
) -> None:
    """A record written before --proxy / --search-warmup existed was made on digits, searched without a
    warm-up: a run into its folder with another value is refused (one line, nothing written), so its
    genotypes and rows are never reused under a recipe they were not made with."""
    sys.path.insert(0, str(EXPERIMENTS))
    module = __import__(script)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{script}.json").write_text(json.dumps({"settings": {"cells_per_group": 2}, "wall_time_s": 1}))
    (out / f"{script}.csv").write_text("arm,seed,AP,AP50,AP75,head\n")
    code = module.main([*flags, "--out", str(out), "--data", str(tmp_path / "data")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and recorded in err[0], err
    assert sorted(p.name for p in out.iterdir()) == [f"{script}.csv", f"{script}.json"]


def test_wall_times_add_this_run_to_the_tables_total() -> None:
    """A table extended three times records each run's time and their sum; a record written before the
    total existed counts its own time."""
    import time

    from raynas.studies.tables import wall_times

    started = time.perf_counter() - 12.0
    first = wall_times(started, {})
    assert 12.0 <= first["wall_time_s"] < 60 and first["wall_time_total_s"] == first["wall_time_s"]
    later = wall_times(started, {"wall_time_s": 1.0, "wall_time_total_s": 100.0})
    assert later["wall_time_total_s"] == round(100.0 + later["wall_time_s"], 1)
    assert wall_times(started, {"wall_time_s": 30.0})["wall_time_total_s"] >= 42.0


class Stop(Exception):
    """Stands for Ctrl+C in the middle of a run."""


def test_a_stopped_run_leaves_a_record_so_the_same_command_resumes(tmp_path: Path, monkeypatch) -> None:
    """The record is written with the table after every run: a table without it is refused (its recipe
    unknown), so a stop before the end would have left a folder no command could resume."""
    import raynas.jobs.arms
    import raynas.jobs.proxies
    from raynas.jobs import head_evidence

    sys.path.insert(0, str(EXPERIMENTS))
    import fad_evidence

    out = tmp_path / "out"
    argv = ["--smoke", "--proxy", "scenes", "--out", str(out), "--data", str(tmp_path / "d")]
    row = {"arm": "FCOS head", "seed": 0, **dict.fromkeys(head_evidence.METRICS, 0.3), "split": "test",
           "head_params": 1000, "head_flops": 2000, "head": "torchvision"}  # fmt: skip

    def stopped(base, arms, seeds, kept_rows, metrics, cost, write, mine):
        write([row], 1)
        raise Stop

    monkeypatch.setattr(raynas.jobs.proxies, "prepare_inputs", lambda *a, **k: None)
    monkeypatch.setattr(head_evidence, "run_searches", lambda *a: ({}, []))
    monkeypatch.setattr(raynas.jobs.arms, "train_head_arms", stopped)
    with pytest.raises(Stop):
        head_evidence.run(*fad_evidence.check(fad_evidence.build_parser().parse_args(argv)))
    record = json.loads((out / "fad_evidence.json").read_text())
    assert record["runs"] == 1 and record["runs_started"] == 1 and record["settings"]["proxy"] == "scenes"
    settings, _, before, kept_rows = fad_evidence.check(fad_evidence.build_parser().parse_args(argv))
    assert before["runs"] == 1 and list(kept_rows["arm"]) == ["FCOS head"]


def test_a_stop_in_a_later_search_keeps_the_earlier_searches_cost(tmp_path: Path, monkeypatch) -> None:
    """The record is written after each search: a stop in the next one leaves the finished search's cost
    beside its genotype, so the same command does not search it again."""
    from types import SimpleNamespace

    import raynas.jobs.proxies
    import raynas.training.darts
    from raynas.jobs import head_evidence

    sys.path.insert(0, str(EXPERIMENTS))
    import fad_evidence

    out = tmp_path / "out"
    argv = ["--smoke", "--proxy", "scenes", "--out", str(out), "--data", str(tmp_path / "d"),
            "--arms", "fad_full", "no_repshare"]  # fmt: skip
    run_dir = tmp_path / "search"
    run_dir.mkdir()
    shutil.copyfile(EXPERIMENTS / "results" / "fad_evidence" / "genotypes" / "fad_full.json",
                    run_dir / "genotype.json")  # fmt: skip
    (run_dir / "genotype.png").write_bytes(b"png")
    searched = []

    def search(cfg):
        searched.append(cfg.run.name)
        if cfg.run.name == "search_no_repshare":
            raise Stop
        metrics = {"epoch_time_s": 4.0, "epoch": 1, "peak_memory_mb": 10.0}
        return SimpleNamespace(genotype_path=run_dir / "genotype.json", run_dir=run_dir, metrics=metrics)

    monkeypatch.setattr(raynas.jobs.proxies, "prepare_inputs", lambda *a, **k: None)
    monkeypatch.setattr(raynas.training.darts, "search_fad", search)
    with pytest.raises(Stop):
        head_evidence.run(*fad_evidence.check(fad_evidence.build_parser().parse_args(argv)))
    record = json.loads((out / "fad_evidence.json").read_text())
    assert record["search_costs"] == [
        {"arm": "FAD searched", "search_time_s": 4.0, "search_peak_memory_mb": 10.0}
    ]
    with pytest.raises(Stop):  # resumed: only the search that did not finish runs again
        head_evidence.run(*fad_evidence.check(fad_evidence.build_parser().parse_args(argv)))
    assert searched == ["search_fad_full", "search_no_repshare", "search_no_repshare"]
