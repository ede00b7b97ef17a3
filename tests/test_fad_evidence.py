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
    out = tmp_path / "out"
    command = [sys.executable, str(EXPERIMENTS / "fad_evidence.py"), "--smoke", "--out", str(out),
               "--data", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)
    rows = pd.read_csv(out / "fad_evidence.csv")
    assert list(rows["arm"]) == ["FCOS head", "FAD random", "FAD searched"] and rows["AP"].notna().all()
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
