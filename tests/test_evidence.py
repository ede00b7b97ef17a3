"""``experiments/opanas_evidence.py``: the table's statistics, the width-matching rule, the cost-matched
arms' FLOPs limit and NSGA-II pick, identical networks reported once, and the smoke run end to end (its own
process and Ray), re-run without training or searching anything again."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest
from helpers_supernet import make_supernet_checkpoint
from tiny_data import failure_text

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import opanas_evidence  # noqa: E402

import raynas.jobs.cost_matched as cost_matched  # noqa: E402
import raynas.jobs.neck_evidence as neck_evidence  # noqa: E402
from raynas.evaluation import count_flops  # noqa: E402
from raynas.jobs.arms import Arm, ReportedRun  # noqa: E402
from raynas.jobs.main_job import smoke_supernet_config  # noqa: E402
from raynas.models.build import build_model, searched_neck_spec  # noqa: E402
from raynas.search.constraints import CostLimit  # noqa: E402
from raynas.search.neck_cost import NeckCost, neck_cost  # noqa: E402
from raynas.search.opanas import mark_pareto_front  # noqa: E402
from raynas.search.opanas_config import OPANASSearchConfig  # noqa: E402
from raynas.spaces.opanas import OPANASSpace  # noqa: E402

COST_LABELS = [label for _, label in neck_evidence.COST_MATCHED]


def test_table_mean_std_and_delta_come_from_the_per_seed_rows() -> None:
    rows = pd.DataFrame(
        [
            {"arm": "FPN", "seed": s, "AP": ap, "AP50": 0.5, "AP75": 0.3, "APs": 0.2, "APm": 0.4, "APl": None,
             "params": 10, "flops": 100}
            for s, ap in enumerate([0.30, 0.32, 0.34])
        ]
        + [
            {"arm": "OPA-FPN (evolution)", "seed": s, "AP": ap, "AP50": 0.6, "AP75": 0.3, "APs": 0.2,
             "APm": 0.4, "APl": None, "params": 8, "flops": 90}
            for s, ap in enumerate([0.40, 0.41, 0.42])
        ]
        + [
            {"arm": "random arch 1", "seed": s, "AP": ap, "AP50": 0.5, "AP75": 0.3, "APs": 0.2, "APm": 0.4,
             "APl": None, "params": 9, "flops": 95}
            for s, ap in enumerate([0.33, 0.35, 0.37])
        ]
    )  # fmt: skip
    table = neck_evidence.summarize_evidence(rows).set_index("arm")
    assert table.loc["FPN", "AP_mean"] == pytest.approx(0.32)
    assert table.loc["FPN", "AP_std"] == pytest.approx(0.02)  # sample std over the 3 seeds
    assert table.loc["OPA-FPN (evolution)", "diff"] == pytest.approx(0.09)
    # Welch: t = 0.09 / sqrt(0.02^2/3 + 0.01^2/3) = 6.97 (p ~ 0.007); Holm over the 2 arms keeps it < 0.05
    assert table.loc["OPA-FPN (evolution)", "verdict"] == "beats"
    assert table.loc["random arch 1", "verdict"] == "not told apart"  # 0.03 apart, p ~ 0.14
    assert table.loc["FPN", "verdict"] == "baseline"
    assert (table["seeds"] == 3).all() and table.loc["OPA-FPN (evolution)", "params"] == 8
    extra = neck_evidence.random_summary(rows)
    assert extra["random_archs_mean_AP"] == pytest.approx(0.35)
    markdown = neck_evidence.markdown(table.reset_index(), extra)
    assert "| OPA-FPN (evolution) | 41.0 +/- 1.0 |" in markdown and "| +9.0 [" in markdown
    assert "| beats |" in markdown and "Holm's correction over the 2 tested arm(s)" in markdown


def test_width_matching_picks_neck_and_head_params_within_5_percent(tmp_path: Path) -> None:
    supernet = smoke_supernet_config(str(tmp_path / "d"), str(tmp_path / "o"), kind="retinanet")
    supernet.model.out_channels = 64
    recipe = neck_evidence.recipe_config(supernet, neck_evidence.EvidenceSettings(tmp_path, epochs=1))
    space = OPANASSpace()
    heavy = searched_neck_spec({key: "fusing_splitting" for key in space.keys}, supernet.opanas)
    target, _ = neck_evidence.neck_params_and_flops(recipe, 11)
    width, params = neck_evidence.matched_width(
        recipe, heavy, target, 11, neck_evidence.width_candidates("retinanet", 64)
    )
    assert width < 64  # the heavier neck needs fewer channels for the same parameters
    assert abs(params - target) <= neck_evidence.WIDTH_TOLERANCE * target
    assert neck_evidence.width_candidates("fcos", 64) == [64, 96, 128]  # GroupNorm(32, c), c >= 64


def test_the_flops_limit_is_the_fpns_neck_flops_as_the_search_constraint_counts_them(tmp_path: Path) -> None:
    supernet = smoke_supernet_config(str(tmp_path / "d"), str(tmp_path / "o"), kind="retinanet")
    supernet = replace(supernet, model=replace(supernet.model, backbone_weights=None))
    limit = cost_matched.fpn_neck_flops(supernet, 11)
    # the constraint's side: NeckCost as the search builds it from the super-net checkpoint's state
    state = {
        "config_class": "raynas.training.config.SupernetConfig",
        "config": asdict(supernet),
        "num_classes": 11,
    }
    cost = NeckCost("unused: the state is given", "flops", state)
    fpn = build_model(supernet.model, 11, None, supernet.head).backbone.neck
    assert limit > 0 and limit == count_flops(fpn, cost.features)  # the input candidates are judged on
    space = OPANASSpace()
    cheap = space.from_edges({(0, 1): "skip"})  # lateral convs only: less than the FPN
    heavy = space.from_config({key: "bottom_up" for key in space.keys})
    assert CostLimit(cost, limit)(cheap) and not CostLimit(cost, limit)(heavy)
    rng = random.Random(0)  # NeckCost counts by parts (fast under a tight limit): exactly neck_cost's count
    for arch in (cheap, heavy, *(space.sample(rng) for _ in range(4))):
        assert cost(arch) == neck_cost(cost.supernet, arch, cost.features)[1]
    # the table counts an arm's FLOPs the same way: the FPN's are the limit, an OPA-FPN's the constraint's
    recipe = neck_evidence.recipe_config(supernet, neck_evidence.EvidenceSettings(tmp_path, epochs=1))
    assert neck_evidence.neck_params_and_flops(recipe, 11)[1] == limit
    neck = searched_neck_spec(space.to_config(heavy), supernet.opanas)
    assert neck_evidence.neck_params_and_flops(replace(recipe, neck=neck), 11)[1] == cost(heavy)
    # the searches: the main job's settings, evolution under the limit, NSGA-II without one
    main = OPANASSearchConfig(
        population_size=4, generations=1, top_k=2, storage_path=str(tmp_path), name="search"
    )
    flops_matched, pareto = cost_matched.cost_matched_searches(main, limit, tmp_path / "ev", False, True)
    assert flops_matched.strategies == ["evolution"] and flops_matched.max_neck_flops == limit
    assert flops_matched.max_retries == cost_matched.FLOPS_MATCHED_RETRIES
    assert pareto.strategies == ["pareto"] and pareto.max_neck_flops is None
    folder = str(tmp_path / "ev")
    for cfg, name in ((flops_matched, "search_flops_matched"), (pareto, "search_pareto")):
        assert (cfg.budget, cfg.seed, cfg.name, cfg.storage_path) == (main.budget, 0, name, folder)
    assert len(cost_matched.cost_matched_searches(main, limit, tmp_path, False, False)) == 1
    tighter = replace(main, max_neck_flops=limit // 2)  # a limit of the main job's own is kept if lower
    (searched,) = cost_matched.cost_matched_searches(tighter, limit, tmp_path, False, False)
    assert searched.max_neck_flops == limit // 2


def test_the_nsga_arm_is_the_front_member_nearest_the_fpns_flops() -> None:
    table = pd.DataFrame(
        {"name": ["a", "b", "c", "d", "e"], "AP": [0.20, 0.30, 0.32, 0.31, 0.40],
         "neck_flops": [5, 10, 30, 31, 50]}
    )  # fmt: skip
    table = mark_pareto_front(table, "AP")
    assert list(table["pareto_front"]) == [True, True, True, False, True]  # d: more FLOPs, less AP than c
    nearest = cost_matched.nearest_front_member
    assert nearest(table, 32, "AP")["name"] == "c"  # d is nearer but off the front
    assert nearest(table, 40, "AP")["name"] == "e"  # c and e as near: the higher AP
    assert nearest(table, 0, "AP")["name"] == "a" and nearest(table, 1e9, "AP")["name"] == "e"
    with pytest.raises(RuntimeError, match="no Pareto front"):
        nearest(table.assign(pareto_front=False), 32, "AP")


def test_two_encodings_of_one_network_appear_once_in_the_evidence_table(tmp_path: Path) -> None:
    opanas = smoke_supernet_config(str(tmp_path / "d"), str(tmp_path / "o")).opanas
    space = OPANASSpace()
    dead_2 = {key: "top_down" for key in space.keys} | {"e0_2": "none", "e1_2": "none"}  # node 2 gets nothing
    one = dead_2 | {"e2_3": "bottom_up"}
    other = dead_2 | {"e2_3": "skip", "e2_5": "none"}  # differs only on edges out of the dead node
    canonical = [space.canonical(space.from_config(config)) for config in (one, other)]
    assert one != other and canonical[0] == canonical[1]
    neck = lambda config: searched_neck_spec(config, opanas)  # noqa: E731
    plan = [
        Arm("FPN", "fpn", None, 16),
        Arm("OPA-FPN (evolution)", "opa_evolution", neck(one), 16),
        Arm("all top_down", "all_top_down", neck({key: "top_down" for key in space.keys}), 16),
        Arm("OPA-FPN (random search)", "opa_random", neck(other), 16),
        Arm("OPA-FPN (evolution) @8", "opa_evolution_at8", neck(one), 8),  # same encoding, other width
    ]
    merged = neck_evidence.merge_identical(plan)
    same = "OPA-FPN (evolution) = OPA-FPN (random search)"
    assert [arm.label for arm in merged] == ["FPN", same, "all top_down", "OPA-FPN (evolution) @8"]
    assert merged[1].slug == "opa_evolution" and merged[1].neck == neck(one)  # trained once, in its folders
    rows = [
        neck_evidence.evidence_row(
            arm,
            seed,
            ReportedRun(
                {"AP": 0.3 + 0.01 * (k + seed), "AP50": 0.5, "AP75": 0.3, "APs": 0.1, "APm": 0.3},
                "test",
                False,
                Path("checkpoint"),
            ),
            (10, 100),
        )
        for seed in range(3)
        for k, arm in enumerate(merged)
    ]
    table = neck_evidence.summarize_evidence(pd.DataFrame(rows))
    assert list(table["arm"]) == [arm.label for arm in merged] and (table["seeds"] == 3).all()
    extra = {"random_archs_mean_AP": float("nan"), "random_archs_best_AP": float("nan")}
    markdown = neck_evidence.markdown(table, extra)
    assert markdown.count("OPA-FPN (random search)") == 2  # its row, and the line naming merged networks
    assert f"| {same} |" in markdown and f"trained once and shown once: {same}." in markdown
    assert {row["split"] for row in rows} == {"test"}


def test_cost_matched_arms_without_the_main_jobs_search_settings_are_refused_before_ray(
    tmp_path: Path, tiny_digits: Path, capfd: pytest.CaptureFixture
) -> None:
    search_dir = tmp_path / "main_job"
    make_supernet_checkpoint(search_dir / "supernet" / "checkpoint_000000", tiny_digits)
    for strategy in ("evolution", "random"):
        (search_dir / "search" / strategy).mkdir(parents=True)
        committed = EXPERIMENTS / "results" / "opanas_ea" / f"{strategy}_best_arch.json"
        (search_dir / "search" / strategy / "best_arch.json").write_text(committed.read_text())
    out = tmp_path / "evidence"
    code = opanas_evidence.main(["--search-dir", str(search_dir), "--out", str(out)])
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("opanas_evidence: error: ")
    assert "search/run_info.json" in lines[0] and "--no-cost-matched" in lines[0] and not out.exists()
    (search_dir / "search" / "run_info.json").write_text('{"config": {"population_size": "ten"}}')  # edited
    code = opanas_evidence.main(["--search-dir", str(search_dir), "--out", str(out)])
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "run_info.json" in lines[0] and "population_size" in lines[0]
    assert not out.exists()
    # another detector than the super-net's: the FLOPs limit would be another FPN's (refused first)
    code = opanas_evidence.main(["--search-dir", str(search_dir), "--out", str(out), "--kind", "fcos"])
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "--kind fcos" in lines[0]
    assert "--no-cost-matched" in lines[0]
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.smoke
def test_smoke_run_writes_all_outputs_and_skips_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, str(EXPERIMENTS / "opanas_evidence.py"), "--smoke", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)
    rows = pd.read_csv(out / "evidence.csv").set_index("arm")
    names = [name for label in rows.index for name in label.split(neck_evidence.SAME)]
    assert sorted(names) == sorted(["FPN", "OPA-FPN (evolution)", *COST_LABELS])  # identical ones merged
    assert rows["AP"].notna().all() and rows.index.is_unique  # one seed, each network once
    flops_matched = next(label for label in rows.index if COST_LABELS[0] in label)
    record = json.loads((out / "evidence.json").read_text())
    assert record["fpn_neck_flops"] == rows.loc["FPN", "flops"] >= rows.loc[flops_matched, "flops"]
    assert record["runs_started"] == len(rows)
    markdown = (out / "evidence.md").read_text()
    assert "| FPN |" in markdown and "Cost-matched arms:" in markdown
    assert (out / "evidence.png").stat().st_size > 0
    assert (out / "search_flops_matched" / "evolution" / "summary.json").is_file()
    assert (out / "search_pareto" / "pareto" / "summary.json").is_file()  # the smoke job ran no NSGA-II

    again = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, failure_text(again)
    assert json.loads((out / "evidence.json").read_text())["runs_started"] == 0
    assert "== cost-matched search" not in again.stdout  # both searches reused
    pd.testing.assert_frame_equal(pd.read_csv(out / "evidence.csv").set_index("arm"), rows)
