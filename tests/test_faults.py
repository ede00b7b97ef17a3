"""Fault injection: processes killed with SIGKILL mid-run, and what the run does about it.

1. A Ray Train worker of a standalone training run dies: Ray Train restarts the worker group from the
   last registered checkpoint (``run.max_failures``), the run finishes and no checkpoint is lost.
2. The search driver (the ``raynas search opanas`` process) dies: ``--resume`` finishes the search from
   what Tune had saved, and no candidate is evaluated twice.

Processes are found through ``/proc`` (psutil is not a dependency) and only among the descendants of the
process that started them: the machine may run other Ray clusters whose workers must not be touched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers_supernet import make_supernet_checkpoint
from ray.tune.result import EXPR_RESULT_FILE as RESULT_FILE
from test_training import tiny_config

from raynas.checkpoints import STATE_FILE, load_state
from raynas.search.run import EXPERIMENT_CHECKPOINT_S, frequent_experiment_checkpoints
from raynas.spaces.opanas import OPANASSpace
from raynas.training.run_folder import TrainResult
from raynas.training.standalone import train

#: Ray Train V2 writes this (``checkpoint_manager_snapshot.json``) each time it registers a checkpoint
CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"


# ---- /proc helpers ----------------------------------------------------------------------------------
def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # the process is gone
        return None
    # the command name (field 2) may hold spaces or parentheses: the parent pid follows the last ")"
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    seen = set()
    while pid and pid not in seen:
        if pid == ancestor:
            return True
        seen.add(pid)
        pid = _parent_pid(pid) or 0
    return False


def find_processes(needle: str, ancestor: int) -> list[int]:
    """Pids whose command line contains ``needle`` and that descend from ``ancestor``.

    Ray workers rename themselves (``ray::RayTrainWorker``) and are children of the raylet, which is a
    child of the process that ran ``ray.init``; the ancestry check keeps other users' clusters safe.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == ancestor:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline and _descends_from(int(entry.name), ancestor):
            found.append(int(entry.name))
    return sorted(found)


def wait_for(condition, timeout_s: float, what: str, alive=None, poll_s: float = 0.2) -> Any:
    """Poll ``condition()`` until it returns something truthy; fail with ``what`` after ``timeout_s``.

    ``alive()`` returning False (the run under test ended early) fails at once instead of waiting.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if alive is not None and not alive():
            pytest.fail(f"the run ended before {what}")
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


# ---- 1. a Ray Train worker killed -------------------------------------------------------------------
def registered_checkpoints(run_dir: Path) -> list[str]:
    """Checkpoint folder names that Ray Train registered (fully uploaded), oldest first."""
    try:
        snapshot = json.loads((run_dir / CHECKPOINT_SNAPSHOT).read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return []
    return [result["checkpoint_dir_name"] for result in snapshot.get("checkpoint_results", [])]


class _Background(threading.Thread):
    """Runs ``fn`` and keeps its return value or exception for the test thread to re-raise."""

    def __init__(self, fn):
        super().__init__(daemon=True)  # a hung run must not keep pytest alive
        self.fn, self.result, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as err:  # noqa: BLE001 (re-raised in the test thread)
            self.error = err

    def outcome(self, timeout_s: float):
        self.join(timeout_s)
        if self.is_alive():
            pytest.fail(f"the run did not finish within {timeout_s:.0f} s after the fault")
        if self.error is not None:
            raise self.error
        return self.result


def writing_into(pids: list[int], directory: Path) -> tuple[int, Path] | None:
    """``(pid, file)`` of one of ``pids`` that has a file under a ``checkpoint_*`` folder of ``directory``
    open, else None (rank 0 keeps its TensorBoard events file in ``directory`` open all the time)."""
    prefix = str(directory.resolve() / "checkpoint_")
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(prefix):
                return pid, Path(target)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after_checkpoint", "mid_copy"])
def test_killed_train_worker_restores_from_the_last_checkpoint(
    ray_session, tiny_digits: Path, tmp_path: Path, when: str
) -> None:
    """SIGKILL one of the 2 workers once the first checkpoint is registered (``after_checkpoint``: at
    once; ``mid_copy``: while it copies the next checkpoint into storage). The worker group restarts from
    the last registered checkpoint (``started_at_epoch >= 1``), the run reaches its last epoch, and every
    checkpoint folder on disk loads: the half-copied one is removed (``launch.fit``)."""
    epochs = 6
    cfg = tiny_config(tiny_digits, tmp_path, "worker_killed", epochs=epochs)
    cfg.run.max_failures = 1
    cfg.run.num_to_keep = None  # keep every checkpoint, to check that none is lost
    run_dir = tmp_path / cfg.run.name
    started = time.monotonic()
    run = _Background(lambda: train(cfg))
    run.start()

    first = wait_for(lambda: registered_checkpoints(run_dir), 300, "the first checkpoint", run.is_alive)
    assert (run_dir / first[0] / STATE_FILE).is_file()
    workers = find_processes("RayTrainWorker", os.getpid())
    assert len(workers) == cfg.run.num_workers, f"expected 2 RayTrainWorker processes, found {workers}"
    victim, half_copied = workers[-1], None
    if when == "mid_copy":  # the next checkpoint is copied ~1-2 s later and takes a few 100 ms
        victim, half_copied = wait_for(
            lambda: writing_into(workers, run_dir), 120, "a worker copying a checkpoint", run.is_alive, 0.005
        )
    os.kill(victim, signal.SIGKILL)
    killed_at = len(first)

    result: TrainResult = run.outcome(600)
    copying = f" while it copied {half_copied.parent.name}" if half_copied else ""
    took = time.monotonic() - started
    print(f"\nworker killed after checkpoint {killed_at}{copying}; the run took {took:.1f} s")
    assert result.metrics["epoch"] == epochs
    assert result.metrics["started_at_epoch"] >= 1, "the restarted workers did not resume from a checkpoint"
    assert result.metrics["started_at_epoch"] >= killed_at
    assert math.isfinite(result.metrics["train_loss"])

    registered = registered_checkpoints(run_dir)
    on_disk = sorted(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir())
    assert set(first) <= set(registered)
    # a folder the killed worker was still copying is never registered; fit removes it (launch.py)
    assert on_disk == sorted(registered), f"left over: {set(on_disk) - set(registered)}"
    epochs_on_disk = [load_state(run_dir / name)["epoch"] for name in on_disk]  # raises on a truncated file
    # the restart continued from the latest registered checkpoint: every epoch exactly once, in order
    assert epochs_on_disk == list(range(1, epochs + 1))
    assert load_state(result.checkpoint_dir)["epoch"] == epochs
    if half_copied is not None:
        assert half_copied.parent.name not in registered and not half_copied.parent.exists()


# ---- 2. the search driver killed --------------------------------------------------------------------
SPACE = OPANASSpace()
POPULATION, GENERATIONS = 4, 2
BUDGET = POPULATION * (GENERATIONS + 1)


def finished_trials(experiment_dirs: list[Path]) -> dict[str, float]:
    """``{trial folder: time of its result}`` for trials with a reported result (a non-empty
    ``result.json``), in the first of ``experiment_dirs`` that exists."""
    for directory in experiment_dirs:
        if directory.is_dir():
            results = {}
            for path in directory.glob(f"*/{RESULT_FILE}"):
                with contextlib.suppress(OSError):  # a trial folder being replaced by a copy
                    stat = path.stat()
                    if stat.st_size > 0:
                        results[path.parent.name] = stat.st_mtime
            return results
    return {}


class Driver:
    """``raynas ...`` in a subprocess of its own session; on exit, it and every process it started die.

    SIGKILL leaves no chance to shut Ray down: the local Ray node the CLI started (``ray.init``) is a
    child of the driver and is killed with its process group and with the descendants noted before.
    """

    def __init__(self, args: list[str], log: Path, cwd: Path):
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, always
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raynas.cli", *args],
            cwd=cwd,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._family: dict[int, bytes] = {}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def staging_dirs(self, experiment: str) -> list[Path]:
        """Tune's driver staging folders of ``experiment`` (Ray names its session after the driver pid)."""
        pattern = f"session_*_{self.proc.pid}/artifacts/*/{experiment}/driver_artifacts"
        # Ray's temp dir on Linux: $RAY_TMPDIR, else $TMPDIR, else /tmp (ray._common.utils)
        temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
        return sorted(Path(temp, "ray").glob(pattern))

    def kill(self) -> None:
        """SIGKILL the driver alone (the fault); its Ray processes are noted for the cleanup."""
        for pid in find_processes("", self.proc.pid):
            with contextlib.suppress(OSError):
                self._family[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
        self.proc.kill()
        self.proc.wait(30)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`raynas` did not finish within {timeout_s:.0f} s; its log:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid, cmdline in self._family.items():  # those that left the group, if still the same process
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        self._log_file.close()


@pytest.mark.slow
def test_killed_search_driver_resumes_without_evaluating_a_candidate_twice(
    tiny_digits: Path, tmp_path: Path
) -> None:
    """SIGKILL ``raynas search opanas`` in evolution's second generation; ``--resume`` finishes both
    strategies with exactly the budget, each candidate once, every generation whole."""
    checkpoint = make_supernet_checkpoint(tmp_path / "supernet", tiny_digits)
    storage = tmp_path / "runs"
    config = tmp_path / "search.yaml"
    config.write_text(
        f"population_size: {POPULATION}\ngenerations: {GENERATIONS}\ntop_k: 2\nnum_scorers: 2\n"
        # one candidate per Tune trial: the bookkeeping below counts trial folders as candidates
        f"candidates_per_trial: 1\nstorage_path: {storage}\nname: killed\n"
    )
    args = ["search", "opanas", "--checkpoint", str(checkpoint), "--config", str(config)]
    run_dir = storage / "killed"
    started = time.monotonic()

    with Driver(args, tmp_path / "first.log", tmp_path) as driver:
        wait_for(
            lambda: len(finished_trials(driver.staging_dirs("evolution"))) > POPULATION,
            600,
            f"more than {POPULATION} evaluated candidates",
            driver.alive,
        )
        killed_at = time.time()
        driver.kill()
        in_staging = finished_trials(driver.staging_dirs("evolution"))  # what the driver knew
        in_storage = finished_trials([run_dir / "evolution"])  # what it had saved for --resume
    killed_after = time.monotonic() - started
    assert set(in_storage) <= set(in_staging) and POPULATION < len(in_staging) < BUDGET
    # snapshots every EXPERIMENT_CHECKPOINT_S (2 s): a result older than 8 s must have been saved
    unsaved = [name for name, at in in_staging.items() if at < killed_at - 8 and name not in in_storage]
    assert not unsaved, f"results older than 8 s that the killed driver had not saved: {unsaved}"

    with Driver([*args, "--resume"], tmp_path / "resume.log", tmp_path) as resumed:
        returncode = resumed.wait(900)
        assert returncode == 0, f"the resumed search failed ({returncode}); its log:\n{resumed.tail()}"
    print(
        f"\ndriver killed after {killed_after:.1f} s with {len(in_staging)} evaluations done, "
        f"{len(in_storage)} of them saved; the test took {time.monotonic() - started:.1f} s"
    )

    for strategy in ("evolution", "random"):
        df = pd.read_csv(run_dir / strategy / "results.csv")
        assert len(df) == BUDGET, f"{strategy}: {len(df)} rows"
        assert df["trial_id"].is_unique
        assert not df[SPACE.keys].duplicated().any(), f"{strategy}: a candidate was evaluated twice"
        assert df["AP"].notna().all()
    # a candidate scored before the kill but missing from the snapshot would be scored again under a new
    # trial id, leaving a second trial folder with a result
    assert len(finished_trials([run_dir / "evolution"])) == BUDGET
    evolution = pd.read_csv(run_dir / "evolution" / "results.csv")
    assert sorted(evolution["generation"]) == sorted(list(range(GENERATIONS + 1)) * POPULATION)
    comparison = json.loads((run_dir / "comparison.json").read_text())
    assert [row["evaluations"] for row in comparison] == [BUDGET, BUDGET]


def test_experiment_checkpoint_period_is_set_for_the_search_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tune reads TUNE_GLOBAL_CHECKPOINT_S when ``fit`` builds its controller: set there, not process-wide,
    and a value the user chose wins."""
    key = "TUNE_GLOBAL_CHECKPOINT_S"
    monkeypatch.delenv(key, raising=False)
    with frequent_experiment_checkpoints():
        assert os.environ[key] == str(EXPERIMENT_CHECKPOINT_S)
    assert key not in os.environ
    monkeypatch.setenv(key, "30")
    with frequent_experiment_checkpoints():
        assert os.environ[key] == "30"
    assert os.environ[key] == "30"
