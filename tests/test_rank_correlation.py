"""``experiments/rank_correlation.py --smoke`` end to end in its own process (its own Ray): a tiny
super-net, a pool scored by the scorer actors, 3 architectures trained standalone on Ray Train, tau and
rho with intervals. No threshold on tau here: that is for the real run (README)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tiny_data import failure_text

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "rank_correlation.py"


@pytest.mark.slow
@pytest.mark.smoke
def test_smoke_run_writes_the_table_the_coefficients_and_the_plot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--train-workers", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)
    assert "Kendall tau" in done.stdout

    table = pd.read_csv(out / "rank_correlation.csv")
    assert len(table) == 3 and table["arch_id"].is_unique
    assert table["supernet_AP"].is_monotonic_increasing  # picked in order of super-net score
    assert table["standalone_AP"].notna().all()
    record = json.loads((out / "rank_correlation.json").read_text())
    tau = record["kendall_tau"]
    assert record["n"] == 3 and (-1.0 <= tau <= 1.0 or math.isnan(tau))  # NaN when a side is constant
    assert (out / "rank_correlation.png").stat().st_size > 0
    assert len(pd.read_csv(out / "pool.csv")) == 6
    trained = sorted(p.name for p in (out / "standalone").iterdir() if p.is_dir())
    assert trained == sorted(f"arch_{a}" for a in table["arch_id"])

    # re-running skips every finished run: no new checkpoint folder appears, the table is the same
    before = sorted(str(p) for p in (out / "standalone").glob("*/checkpoint_*"))
    again = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, failure_text(again)
    assert sorted(str(p) for p in (out / "standalone").glob("*/checkpoint_*")) == before
    pd.testing.assert_frame_equal(pd.read_csv(out / "rank_correlation.csv"), table)
