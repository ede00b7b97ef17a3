"""Stopping a job and running out of disk, through the one error path (``raynas.errors.run_main``).

1. Ctrl+C (SIGINT to the job's process group, as a terminal sends it) and SIGTERM (``kill PID``) end a job
   anywhere, a Ray Train stage and a Tune search included, with one line and exit status 130 / 143; what
   finished is kept and the same command continues. Subprocesses of the real ``raynas`` CLI; the
   in-process cases check the error path itself.
2. A full disk (a real one: ``/dev/full``, or a tmpfs of 256 KiB in a mount namespace of its own) is one
   line that names the file and the fix, exit status 2.
3. Ray Train's placement-group cleaner, which dies with a 30-line traceback whenever a second Ray runs on
   the machine, is quiet; other deaths of threads keep their traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers_supernet import make_supernet_checkpoint
from test_faults import Driver, finished_trials, registered_checkpoints, wait_for
from tiny_data import TINY_DIGITS

from raynas.checkpoints import load_state
from raynas.errors import CONTINUE_HINT, DiskFullError, raise_disk_full, run_main, user_message
from raynas.spaces.opanas import OPANASSpace
from raynas.training.ray_hooks import CLEANER_THREAD, quiet_ray_workers

#: a line that Ray forwards from one of its processes (``(RayTrainWorker pid=1)``, ``(raylet)``), not the
#: driver's own
FORWARDED = re.compile(r"^(\x1b\[\d+m)?\((\w+ )?(pid=\d+|raylet)")
#: the Train stage runs: its controller started the worker group (forwarded to the driver's output)
TRAIN_STARTED = "Started training worker group"


def train_config(tmp_path: Path, tiny_digits: Path, epochs: int) -> Path:
    cfg = {
        "data": {"root": str(tiny_digits), **TINY_DIGITS, "batch_size": 2},
        "model": {"kind": "retinanet", "out_channels": 16, "min_size": 64, "max_size": 64},
        "optim": {"epochs": epochs, "warmup_iters": 1, "milestones": []},
        "run": {"name": "t", "storage_path": str(tmp_path / "runs"), "num_workers": 1},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def stopped(driver: Driver, signum: int, timeout_s: float = 180) -> str:
    """Send ``signum`` (SIGINT to the process group, like Ctrl+C in a terminal; else to the driver, like
    ``kill``), wait, and check the exit status and that the driver ends with one line; returns it."""
    said_before = len(driver.log.read_bytes())
    if signum == signal.SIGINT:
        os.killpg(driver.proc.pid, signum)
    else:
        driver.proc.send_signal(signum)
    code = driver.wait(timeout_s)
    after = driver.log.read_bytes()[said_before:].decode(errors="replace")
    own = [line for line in after.splitlines() if line.strip() and not FORWARDED.match(line)]
    word = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[signum]
    assert code == 128 + signum, f"exit {code}; its log:\n{driver.tail()}"
    assert "Traceback" not in after, after
    assert own and own[-1].startswith(f"raynas: {word}; "), own
    return own[-1]


def test_ctrl_c_during_a_train_stage_is_one_line_and_exit_130(tiny_digits: Path, tmp_path: Path) -> None:
    """Ray Train's own SIGINT handler would abort the run and exit 1 with its log line."""
    config = train_config(tmp_path, tiny_digits, epochs=2)
    with Driver(["train", "--config", str(config)], tmp_path / "train.log", tmp_path) as driver:
        wait_for(lambda: TRAIN_STARTED in driver.log.read_text(errors="replace"), 300, "the Train stage",
                 driver.alive)  # fmt: skip
        line = stopped(driver, signal.SIGINT)
    assert line == f"raynas: interrupted; {CONTINUE_HINT}"
    assert (tmp_path / "runs" / "t" / "run_info.json").is_file()


@pytest.mark.slow
def test_ctrl_c_after_a_checkpoint_keeps_it_and_the_same_command_finishes(
    tiny_digits: Path, tmp_path: Path
) -> None:
    epochs, run_dir = 12, tmp_path / "runs" / "t"  # enough epochs left that Ctrl+C lands mid-run
    args = ["train", "--config", str(train_config(tmp_path, tiny_digits, epochs))]
    with Driver(args, tmp_path / "first.log", tmp_path) as driver:
        wait_for(lambda: registered_checkpoints(run_dir), 600, "the first checkpoint", driver.alive)
        stopped(driver, signal.SIGINT)
    kept = registered_checkpoints(run_dir)
    assert kept and all(load_state(run_dir / name)["epoch"] >= 1 for name in kept)

    with Driver(args, tmp_path / "again.log", tmp_path) as again:
        assert again.wait(600) == 0, again.tail()
    newest = load_state(run_dir / registered_checkpoints(run_dir)[-1])
    assert newest["epoch"] == epochs
    assert newest["metrics"]["started_at_epoch"] >= 1  # continued from the kept checkpoint, not from 0


@pytest.mark.slow
def test_sigterm_during_a_train_stage_is_one_line_and_exit_143(tiny_digits: Path, tmp_path: Path) -> None:
    """Ray's own SIGTERM handler (``ray.init``) would kill the local Ray under the job and exit 1."""
    run_dir = tmp_path / "runs" / "t"
    args = ["train", "--config", str(train_config(tmp_path, tiny_digits, epochs=3))]
    with Driver(args, tmp_path / "train.log", tmp_path) as driver:
        wait_for(lambda: registered_checkpoints(run_dir), 600, "the first checkpoint", driver.alive)
        assert stopped(driver, signal.SIGTERM) == f"raynas: terminated; {CONTINUE_HINT}"
    assert all(load_state(run_dir / name)["epoch"] >= 1 for name in registered_checkpoints(run_dir))


@pytest.mark.slow
def test_ctrl_c_during_a_search_saves_it_and_resume_finishes(tiny_digits: Path, tmp_path: Path) -> None:
    """Tune stops on SIGINT by itself, but returns as though the search had ended."""
    population, generations = 4, 1
    config = tmp_path / "search.yaml"
    config.write_text(
        f"population_size: {population}\ngenerations: {generations}\ntop_k: 2\nnum_scorers: 1\n"
        f"storage_path: {tmp_path / 'runs'}\nname: s\n"
    )
    checkpoint = make_supernet_checkpoint(tmp_path / "supernet", tiny_digits)
    args = ["search", "opanas", "--checkpoint", str(checkpoint), "--config", str(config)]
    with Driver(args, tmp_path / "search.log", tmp_path) as driver:
        wait_for(lambda: finished_trials(driver.staging_dirs("evolution")), 600, "a first result",
                 driver.alive)  # fmt: skip
        line = stopped(driver, signal.SIGINT)
    assert str(tmp_path / "runs" / "s" / "evolution") in line and "--resume" in line
    assert "Tuner.restore" not in (tmp_path / "search.log").read_text()  # Tune's own advice is not shown

    with Driver([*args, "--resume"], tmp_path / "resume.log", tmp_path) as resumed:
        assert resumed.wait(900) == 0, resumed.tail()
    for strategy in ("evolution", "random"):
        df = pd.read_csv(tmp_path / "runs" / "s" / strategy / "results.csv")
        assert len(df) == population * (generations + 1) and df["AP"].notna().all()
        assert not df[OPANASSpace().keys].duplicated().any()  # no candidate scored twice


# ---- the error path itself, in process -------------------------------------------------------------
def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(5)  # the handler raises long before
    pytest.fail(f"signal {signum} did not stop the job")


def test_sigterm_is_one_line_and_exit_143_and_the_handlers_come_back(capfd) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert run_main("raynas", lambda: _signal_self(signal.SIGTERM)) == 143
    assert capfd.readouterr().err == f"raynas: terminated; {CONTINUE_HINT}\n"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_what_ray_raises_after_a_stop_signal_is_still_the_interrupt(capfd) -> None:
    """``ray.get`` turns an exception raised by a signal handler into its own (``SystemExit(1)`` from Ray
    Train's handler, a plain ``KeyboardInterrupt``), and stopping workers fail: the signal decides."""

    def main() -> None:
        try:
            _signal_self(signal.SIGTERM)
        except KeyboardInterrupt:
            raise SystemExit(1) from None

    assert run_main("prog", main) == 143
    assert capfd.readouterr().err.splitlines() == [f"prog: terminated; {CONTINUE_HINT}"]
    assert run_main("prog", lambda: _signal_self(signal.SIGINT)) == 130
    assert capfd.readouterr().err.splitlines() == [f"prog: interrupted; {CONTINUE_HINT}"]


# ---- a full disk -----------------------------------------------------------------------------------
def test_a_full_disk_is_named_with_its_fix(tmp_path: Path) -> None:
    """``/dev/full`` fails every write with ENOSPC, as a full disk does."""
    with pytest.raises(OSError) as caught, open("/dev/full", "wb") as handle:
        handle.write(b"x" * 4096)
        handle.flush()
    assert caught.value.errno == errno.ENOSPC
    target = tmp_path / "runs" / "state.pt"
    with pytest.raises(DiskFullError) as full:
        raise_disk_full(caught.value, target)
    assert str(target) in str(full.value) and "free space" in str(full.value)
    assert user_message(full.value) == str(full.value)
    # Python's own error names no file; the one line still says what to do
    assert "free space" in user_message(caught.value) and "Errno" not in user_message(caught.value)
    raise_disk_full(PermissionError(errno.EACCES, "denied"), target)  # not a full disk: left to the caller


FULL_DISK_SCRIPT = """
import os, sys, torch
from raynas.spaces.opanas import OPANASSpace
from raynas.errors import run_main
from raynas.io import atomic_torch_save

folder = sys.argv[1]
def main():
    try:
        atomic_torch_save({"w": torch.zeros(1_000_000)}, os.path.join(folder, "state.pt"))
    finally:
        print(sorted(os.listdir(folder)))  # no temp file left behind
sys.exit(run_main("raynas", main))
"""


def test_torch_save_onto_a_full_disk_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """torch's own error would be ``[enforce fail at inline_container.cc] unexpected pos``, a traceback."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a small tmpfs")
    folder = tmp_path / "small"
    folder.mkdir()
    script = tmp_path / "save.py"
    script.write_text(textwrap.dedent(FULL_DISK_SCRIPT))
    mount = f"mount -t tmpfs -o size=256k tmpfs {folder} && exec {sys.executable} {script} {folder}"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", mount],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    if done.returncode != 2 and "mount" in done.stderr and "raynas" not in done.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"raynas: error: no space left on the device to write {folder / 'state.pt'}")
    assert "free space there, or write elsewhere" in lines[0]
    assert done.stdout.strip() == "[]"


# ---- quiet threads in Ray's workers ------------------------------------------------------------------
def _die_in_thread(name: str, error: BaseException) -> None:
    def target() -> None:
        raise error

    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join()


def test_the_placement_group_cleaner_dies_quietly_other_threads_do_not(capfd, caplog, monkeypatch) -> None:
    """The worker setup hook installs the real excepthook; the cleaner's death by the state API finding
    several Rays is dropped, anything else keeps its traceback; a full disk is one line."""
    # Python's own hook, as in a Ray worker (pytest's collects instead of printing); restored afterwards
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)
    quiet_ray_workers()
    several = ConnectionError("Found multiple active Ray instances: {'10.0.0.1:6379', '10.0.0.1:6380'}.")
    _die_in_thread(CLEANER_THREAD, several)
    assert capfd.readouterr().err == ""
    _die_in_thread(CLEANER_THREAD, RuntimeError("a real bug in the cleaner"))
    _die_in_thread("another thread", ConnectionError("refused"))
    err = capfd.readouterr().err
    assert err.count("Traceback") == 2 and "a real bug in the cleaner" in err and "refused" in err

    with caplog.at_level(logging.WARNING):
        try:
            with open("/dev/full", "wb") as handle:
                handle.write(b"x" * 4096)
                handle.flush()
        except OSError as full:
            _die_in_thread("tensorboard writer", full)
    assert capfd.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records if "tensorboard writer" in r.getMessage()] == [
        "tensorboard writer stopped: no space left on the device ([Errno 28] No space left on device)"
    ]
