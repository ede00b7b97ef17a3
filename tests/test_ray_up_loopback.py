"""`ray up` for real: scripts/ray_up_loopback.sh brings up cluster-onprem.yaml over SSH on this machine,
submits the main job's smoke run to it, fetches its result table and tears everything down.

Slow (minutes; the first run also installs the node's virtualenv). Needs root, to install and start an SSH
server on 127.0.0.1 and add the node user; the script exits 77 where that is impossible, and the test is
then skipped with the script's reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ray_up_loopback.sh"


def _alive(pid: int, name: str) -> bool:
    """Whether ``pid`` still runs a process whose command line names ``name`` (pids can be reused)."""
    try:
        return name in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_ray_up_submit_rsync_down_and_down_on_loopback(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to install and start an SSH server on 127.0.0.1")
    env = {**os.environ, "RAY": str(Path(sys.executable).parent / "ray")}
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True, timeout=3600
    )
    verdict = done.stdout.strip().splitlines()[-1]
    if done.returncode == 77:
        pytest.skip(verdict)
    assert done.returncode == 0 and verdict.startswith("ray up loopback: PASSED"), (
        verdict,
        done.stderr[-2000:],
    )

    # the table that came back is the smoke search's, one row per scored candidate
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) >= 1 and {"AP", "neck_params", "e0_1"} <= set(table.columns)
    assert table["AP"].between(0, 1).all()

    transcript = (tmp_path / "transcript.md").read_text()
    for command in ("ray up -y", "ray exec", "ray submit", "ray rsync-down", "ray down -y"):
        assert f"`{command}" in transcript
    assert all(row.rstrip().endswith("| 0 |") for row in transcript.splitlines()[2:])

    # nothing it started is left running: the SSH server and every Ray process of the node
    recorded = [line.split() for line in (tmp_path / "pids.txt").read_text().splitlines()]
    assert [kind for kind, _ in recorded].count("sshd") == 1
    assert any(kind == "ray" for kind, _ in recorded)
    assert not [(kind, pid) for kind, pid in recorded if _alive(int(pid), kind)]
