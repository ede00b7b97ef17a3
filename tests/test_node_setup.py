"""scripts/node_setup.sh, the setup of every cluster node: it installs once, then a prepared node is left
as it is (a second `ray up` takes seconds and needs no network).

The node's Python is replaced by a recorder, so the test sees which pip commands the script runs without
installing anything; the script itself is the real one that `ray up` runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "node_setup.sh"

RECORDER = """#!/usr/bin/env bash
echo "$*" >> "$HOME/calls.log"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
fi
"""


def _node(tmp_path: Path) -> dict[str, str]:
    """A fresh node's home and a PATH whose python3 records its calls."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    (home / ".bashrc").write_text("# the node's own\n")
    recorder = bin_dir / "python3"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    return {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _setup(env: dict[str, str]) -> tuple[str, list[str]]:
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    log = Path(env["HOME"]) / "calls.log"
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return done.stdout, calls


def test_first_setup_installs_then_a_prepared_node_is_left_alone(tmp_path: Path) -> None:
    env = _node(tmp_path)
    out, calls = _setup(env)
    assert calls[0].startswith("-m venv ") and calls[0].endswith("/venv")
    assert calls[1] == "-m pip install -U pip"
    assert calls[2].startswith("-m pip install torch==2.14.1 torchvision==0.29.1 ray[default,tune,train]==")
    assert calls[3] == f"-m pip install -e {ROOT}"
    assert "installed" in out
    bashrc = (Path(env["HOME"]) / ".bashrc").read_text()
    assert bashrc.startswith("# the node's own\n") and bashrc.count("source ~/venv/bin/activate") == 1

    out, calls = _setup(env)  # the second `ray up`
    assert calls == [] and "up to date" in out
    assert (Path(env["HOME"]) / ".bashrc").read_text() == bashrc


def test_changed_pins_or_project_reinstall(tmp_path: Path) -> None:
    env = _node(tmp_path)
    _setup(env)
    stamp = Path(env["HOME"]) / "venv" / ".raynas-stack"
    stamp.write_text(stamp.read_text().replace("torch==2.14.1", "torch==2.13.0"))  # an older install
    _, calls = _setup(env)
    assert [c.split()[2] for c in calls] == ["install"] * 3  # no new venv; pip, the stack, raynas
