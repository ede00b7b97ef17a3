"""``experiments/opanas_evidence.py``: the table's statistics, the width-matching rule, and the smoke run
end to end (its own process and Ray), re-run without training anything again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tiny_data import failure_text

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import opanas_evidence  # noqa: E402

from raynas.jobs.main_job import smoke_supernet_config  # noqa: E402
from raynas.models.build import searched_neck_spec  # noqa: E402
from raynas.spaces.opanas import OPANASSpace  # noqa: E402


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
    table = opanas_evidence.summarize_evidence(rows).set_index("arm")
    assert table.loc["FPN", "AP_mean"] == pytest.approx(0.32)
    assert table.loc["FPN", "AP_std"] == pytest.approx(0.02)  # sample std over the 3 seeds
    assert table.loc["OPA-FPN (evolution)", "diff"] == pytest.approx(0.09)
    # Welch: t = 0.09 / sqrt(0.02^2/3 + 0.01^2/3) = 6.97 (p ~ 0.007); Holm over the 2 arms keeps it < 0.05
    assert table.loc["OPA-FPN (evolution)", "verdict"] == "beats"
    assert table.loc["random arch 1", "verdict"] == "not told apart"  # 0.03 apart, p ~ 0.14
    assert table.loc["FPN", "verdict"] == "baseline"
    assert (table["seeds"] == 3).all() and table.loc["OPA-FPN (evolution)", "params"] == 8
    extra = opanas_evidence.random_summary(rows)
    assert extra["random_archs_mean_AP"] == pytest.approx(0.35)
    markdown = opanas_evidence.markdown(table.reset_index(), extra)
    assert "| OPA-FPN (evolution) | 41.0 +/- 1.0 |" in markdown and "| +9.0 [" in markdown
    assert "| beats |" in markdown and "Holm's correction over the 2 tested arm(s)" in markdown


def test_width_matching_picks_neck_and_head_params_within_5_percent(tmp_path: Path) -> None:
    supernet = smoke_supernet_config(str(tmp_path / "d"), str(tmp_path / "o"), kind="retinanet")
    supernet.model.out_channels = 64
    recipe = opanas_evidence.recipe_config(
        supernet, opanas_evidence.build_parser().parse_args(["--epochs", "1"])
    )
    space = OPANASSpace()
    heavy = searched_neck_spec({key: "fusing_splitting" for key in space.keys}, supernet.opanas)
    target, _ = opanas_evidence.neck_params_and_flops(recipe, 11)
    width, params = opanas_evidence.matched_width(
        recipe, heavy, target, 11, opanas_evidence.width_candidates("retinanet", 64)
    )
    assert width < 64  # the heavier neck needs fewer channels for the same parameters
    assert abs(params - target) <= opanas_evidence.WIDTH_TOLERANCE * target
    assert opanas_evidence.width_candidates("fcos", 64) == [64, 96, 128]  # GroupNorm(32, c), c >= 64


@pytest.mark.slow
@pytest.mark.smoke
def test_smoke_run_writes_all_outputs_and_skips_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, str(EXPERIMENTS / "opanas_evidence.py"), "--smoke", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)
    rows = pd.read_csv(out / "evidence.csv")
    assert list(rows["arm"]) == ["FPN", "OPA-FPN (evolution)"] and rows["AP"].notna().all()
    assert "| FPN |" in (out / "evidence.md").read_text()
    assert (out / "evidence.png").stat().st_size > 0
    assert json.loads((out / "evidence.json").read_text())["runs_started"] == 2

    again = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, failure_text(again)
    assert json.loads((out / "evidence.json").read_text())["runs_started"] == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "evidence.csv"), rows)
