"""The main job, ``experiments/opanas_ea.py --smoke``, end to end in its own process.

Data generation, super-net training on Ray Train, evolutionary and random search on Ray Tune and
the comparison table: about a minute on the shared 2-core machine. A subprocess gives the job its
own Ray instance, as a user's run has, and keeps it away from the suite's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from raynas.checkpoints import load_state
from raynas.spaces.base import arch_from_json
from raynas.spaces.opanas import OPANASSpace

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "opanas_ea.py"


def test_smoke_run_trains_searches_and_prints_the_comparison(tmp_path: Path) -> None:
    data, out = tmp_path / "digits", tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--smoke", "--data", str(data), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    stdout = done.stdout
    assert "== super-net training" in stdout and "== strategies compared" in stdout
    table = stdout.split("== strategies compared (Tune result tables) ==")[1].strip().splitlines()
    assert table[0].split() == ["strategy", "best_AP", "top5_mean_AP", "evaluations", "wall_time_s"]
    rows = {line.split()[0]: line.split() for line in table[1:3]}
    assert set(rows) == {"evolution", "random"}
    assert rows["evolution"][3] == rows["random"][3] == "8"  # same budget: 4 x (1 + 1)
    assert "-- top 5 evolution --" in stdout and "-- top 5 random --" in stdout

    (checkpoint,) = [p for p in (out / "supernet").glob("checkpoint_*") if p.is_dir()]
    assert load_state(checkpoint)["task"] == "raynas.training.supernet.SupernetTask"
    search = out / "search"
    comparison = json.loads((search / "comparison.json").read_text())
    assert [row["evaluations"] for row in comparison] == [8, 8]
    space = OPANASSpace()
    for strategy in ("evolution", "random"):
        assert len(pd.read_csv(search / strategy / "results.csv")) == 8
        assert space.is_valid(arch_from_json(space, (search / strategy / "best_arch.json").read_text()))
        assert (search / strategy / "best_arch.png").stat().st_size > 0
    assert (search / "search_curves.png").stat().st_size > 0
