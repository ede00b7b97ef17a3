"""Run and search folders: one job per folder, state files checked on read, a folder known by where it is.

Through the real entry point (``raynas.cli.main`` in process, one case in subprocesses like a user's two
shells): a second job on a claimed folder is refused with one line naming the first, and changes nothing;
a lock left by a killed job is taken over; a damaged run_info.json, checkpoint, Ray Train record, search
summary, result table or Tune state is one line naming the file, and the folder stays byte for byte; the
same run folder through a symlink, a relative path or after a move is the same run. One real Ray Train
run (the ``job`` fixture, ~30 s) serves the run-folder cases; the search cases need no search to run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers_supernet import make_supernet_checkpoint
from ray import tune
from test_training import tiny_config

from raynas.cli import main as raynas_main
from raynas.config import dump_yaml
from raynas.io import LOCK_FILE, FolderInUseError, claim_folder, same_place
from raynas.search.opanas_config import OPANASSearchConfig
from raynas.search.random import RandomSearcher
from raynas.search.run import TUNE_STATE, check_tune_state, write_results
from raynas.search.search_folder import guard_search_folder
from raynas.spaces.opanas import OPANASSpace
from raynas.training.config import TrainConfig
from raynas.training.standalone import train

RUN = "first"  # run.name of the job fixture's run


def tree_hash(root: Path) -> str:
    """A hash of every file under ``root`` (names and bytes): equal before and after = nothing changed."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def refused(capfd: pytest.CaptureFixture, code: int, *needles: str) -> str:
    """The entry point said one line naming ``needles`` and exited 2, without a traceback."""
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("raynas: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def job_config(data: str | Path, storage: str | Path, epochs: int = 1) -> TrainConfig:
    """test_training's tiny run on one worker (half the start-up of two), paths as spelt."""
    cfg = tiny_config(Path(data), Path(storage), RUN, epochs=epochs)
    cfg.data.root, cfg.run.storage_path, cfg.run.num_workers = str(data), str(storage), 1
    return cfg


def train_yaml(where: Path, data: str | Path, storage: str | Path, epochs: int = 1) -> Path:
    """The job fixture's training config as a YAML file in ``where`` (outside the job's folder)."""
    path = where / "train.yaml"
    path.write_text(dump_yaml(job_config(data, storage, epochs)))
    return path


@pytest.fixture(scope="module")
def job(ray_session, tiny_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job folder like an experiment's --out: its data in ``data/`` and one finished 1-epoch run in
    ``runs/first`` (real Ray Train)."""
    root = tmp_path_factory.mktemp("job")
    shutil.copytree(tiny_digits, root / "data")
    train(job_config(root / "data", root / "runs"))
    return root


def checkpoint_of(run_dir: Path) -> Path:
    (checkpoint,) = [p for p in run_dir.glob("checkpoint_*") if p.is_dir()]
    return checkpoint


# ---- one job per folder ---------------------------------------------------------------------------
def test_a_second_train_on_a_claimed_run_folder_is_refused_and_changes_nothing(
    tmp_path: Path, tiny_digits: Path, capfd: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "runs" / RUN
    config = train_yaml(tmp_path, tiny_digits, tmp_path / "runs")
    with claim_folder(run_dir, "run folder"):  # a job runs there (this process holds the claim)
        (run_dir / "run_info.json").write_text("{}")  # stands for what the running job wrote
        before = tree_hash(run_dir)
        code = raynas_main(["train", "--config", str(config)])
        refused(capfd, code, f"run folder {run_dir} is in use", f"pid {os.getpid()}", "wait for it to end")
        assert tree_hash(run_dir) == before
    assert not (run_dir / LOCK_FILE).exists()  # released on exit
    assert (run_dir / "run_info.json").read_text() == "{}"


def test_a_refused_job_leaves_no_folder_behind(
    tmp_path: Path, tiny_digits: Path, capfd: pytest.CaptureFixture
) -> None:
    """The claim made runs/first; the job is refused after it (a resume that is no checkpoint): gone."""
    config = train_yaml(tmp_path, tiny_digits, tmp_path / "runs")
    code = raynas_main(["train", "--config", str(config), "--resume", str(tmp_path)])
    refused(capfd, code, "not a raynas checkpoint")
    assert not (tmp_path / "runs").exists()


def test_a_claim_held_by_another_process_is_refused_and_taken_over_once_it_is_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "runs" / RUN
    hold = "import sys, time\nfrom raynas.io import claim_folder\nwith claim_folder(sys.argv[1]):\n"
    hold += "    print('held', flush=True)\n    time.sleep(300)\n"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = rf"in use by another raynas job \(pid {holder.pid} on "
        with pytest.raises(FolderInUseError, match=busy), claim_folder(folder, "run folder"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no goodbye: the lock file still names it
        holder.wait(timeout=30)
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger="raynas.io"), claim_folder(folder, "run folder"):
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"taking over run folder {folder}" in caplog.text and f"pid {holder.pid}" in caplog.text
    assert not (folder / LOCK_FILE).exists()


@pytest.mark.slow
def test_two_raynas_train_on_one_run_folder(tmp_path: Path, tiny_digits: Path) -> None:
    """Two shells start the same run: the second is refused at once, naming the first, which finishes
    with its checkpoint (before the claim, each deleted the other's checkpoints and both exited 0)."""
    config = train_yaml(tmp_path, tiny_digits, tmp_path / "runs")
    command = [sys.executable, "-m", "raynas.cli", "train", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lock = tmp_path / "runs" / RUN / LOCK_FILE
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip()):
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.1)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert first.poll() is None  # refused while the first runs
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert f"is in use by another raynas job (pid {first.pid} on " in lines[0], lines[0]
    assert "train --config" in lines[0]
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    run_dir = tmp_path / "runs" / RUN
    assert f"checkpoint: {checkpoint_of(run_dir)}" in out
    assert json.loads((checkpoint_of(run_dir) / "metrics.json").read_text())["epoch"] == 1
    assert not lock.exists()


# ---- state files checked, not trusted ----------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _resume_own(run: Path) -> list[str]:
    return ["--resume", str(checkpoint_of(run))]


DAMAGES = {
    # name: (what is done to the copied run folder, epochs of the rerun, its flags, what the one line says)
    "run_info truncated": (lambda run: _truncate(run / "run_info.json"), 2, None, "run_info.json is damaged"),
    "run_info not a record": (
        lambda run: (run / "run_info.json").write_text("[]"),
        2,
        None,
        "damaged (no config)",
    ),
    "run_info deleted": (lambda run: (run / "run_info.json").unlink(), 2, None, "but no run_info.json"),
    "checkpoint deleted": (lambda run: shutil.rmtree(checkpoint_of(run)), 1, None, "is missing"),
    "state.pt truncated": (lambda run: _truncate(checkpoint_of(run) / "state.pt"), 1, None, "is cut short"),
    # what Ray Train continues from is checked when it would continue: a resume from the run's checkpoint
    "Ray Train record truncated": (
        lambda run: _truncate(run / "checkpoint_manager_snapshot.json"),
        1,
        _resume_own,
        "Ray Train's record",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_run_folder_is_one_line_and_stays_as_it_is(
    job: Path, tmp_path: Path, capfd: pytest.CaptureFixture, damage: str
) -> None:
    """A damaged record must not turn the changed-config check off (the reruns of run_info's cases
    change optim.epochs: before, the earlier run's result came back for them), nor reach Ray Train."""
    copy = tmp_path / "job"
    shutil.copytree(job, copy, symlinks=True)
    run_dir = copy / "runs" / RUN
    act, epochs, flags, needle = DAMAGES[damage]
    arguments = ["train", "--config", str(train_yaml(tmp_path, copy / "data", copy / "runs", epochs))]
    arguments += flags(run_dir) if flags else []
    act(run_dir)
    before = tree_hash(copy)
    line = refused(capfd, raynas_main(arguments), needle, f"delete {run_dir} to start that run again")
    assert "restore" in line
    assert tree_hash(copy) == before


# ---- a folder is known by where it is -----------------------------------------------------------------
def _finished_without_training(capfd: pytest.CaptureFixture, code: int, run_dir: Path) -> None:
    out, err = capfd.readouterr()
    assert code == 0, err
    assert f"checkpoint: {checkpoint_of(run_dir.resolve())}" in out


def test_the_same_run_folder_through_a_symlink_or_a_relative_path_is_the_same_run(
    job: Path, tmp_path: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree_hash(job)
    (tmp_path / "link").symlink_to(job, target_is_directory=True)
    config = train_yaml(tmp_path, tmp_path / "link" / "data", tmp_path / "link" / "runs")
    _finished_without_training(capfd, raynas_main(["train", "--config", str(config)]), job / "runs" / RUN)
    monkeypatch.chdir(job)
    config = train_yaml(tmp_path, "./data", "./runs")
    _finished_without_training(capfd, raynas_main(["train", "--config", str(config)]), job / "runs" / RUN)
    assert tree_hash(job) == before  # finished: nothing trained or written again


def test_a_moved_job_folder_continues_where_it_is(
    job: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    """Its data moved along (data.root differs by where the folder is): the same run; another number of
    epochs is named alone as what differs."""
    shutil.copytree(job, tmp_path / "before" / "out", symlinks=True)
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(tmp_path / "before" / "out", moved)
    before = tree_hash(moved)
    config = train_yaml(tmp_path, moved / "data", moved / "runs")
    _finished_without_training(capfd, raynas_main(["train", "--config", str(config)]), moved / "runs" / RUN)
    config = train_yaml(tmp_path, moved / "data", moved / "runs", epochs=2)
    refused(capfd, raynas_main(["train", "--config", str(config)]), "config differs in ['optim.epochs']")
    assert tree_hash(moved) == before


def test_same_place_matches_spellings_and_moves_not_other_paths(tmp_path: Path) -> None:
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    run_a, run_b = tmp_path / "a" / "runs" / "r", tmp_path / "b" / "runs" / "r"
    assert same_place(str(tmp_path / "link" / "data"), str(tmp_path / "a" / "data"), None, run_a)
    assert same_place(str(tmp_path / "a" / "data"), str(tmp_path / "b" / "data"), run_a, run_b)  # moved
    assert not same_place(str(tmp_path / "a" / "data"), str(tmp_path / "b" / "other"), run_a, run_b)
    assert not same_place(str(tmp_path / "a" / "data"), str(tmp_path / "b" / "data"), run_a, run_a)
    assert not same_place("AP", "AP50", run_a, run_b) and same_place(3, 3, run_a, run_b)


# ---- search folders ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def supernet(tiny_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_supernet_checkpoint(tmp_path_factory.mktemp("supernet") / "checkpoint_0", tiny_digits)


def search_yaml(where: Path, storage: Path) -> Path:
    path = where / "search.yaml"
    settings = {"storage_path": str(storage), "name": "s", "population_size": 2, "generations": 0}
    path.write_text(yaml.safe_dump({**settings, "top_k": 1}))
    return path


def finished_search(run_dir: Path, supernet: Path) -> None:
    """A search folder whose two strategies finished, as the search writes it (tables of 2 rows)."""
    cfg = OPANASSearchConfig(storage_path=str(run_dir.parent), name=run_dir.name, population_size=2,
                             generations=0, top_k=1)  # fmt: skip
    guard_search_folder(run_dir, cfg, str(supernet.resolve()), resume=False)
    for strategy in ("evolution", "random"):
        table = pd.DataFrame({"AP": [0.1, 0.2], "neck_flops": [5, 7], "evaluation": [1, 2],
                              "pareto_front": [True, True], "strategy": strategy})  # fmt: skip
        write_results(run_dir / strategy, table, "{}", {"strategy": strategy, "evaluations": 2})


def test_a_second_search_on_a_claimed_search_folder_is_refused(
    ray_session, supernet: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    config = search_yaml(tmp_path, tmp_path / "out")
    with claim_folder(tmp_path / "out" / "s", "search folder"):
        code = raynas_main(["search", "opanas", "--checkpoint", str(supernet), "--config", str(config)])
        refused(capfd, code, f"search folder {tmp_path / 'out' / 's'} is in use", f"pid {os.getpid()}")
        assert not (tmp_path / "out" / "s" / "run_info.json").exists()


SEARCH_DAMAGES = {
    "run_info truncated": (lambda s: _truncate(s / "run_info.json"), [], "run_info.json is damaged"),
    "run_info deleted": (lambda s: (s / "run_info.json").unlink(), [], "but no run_info.json"),
    "summary truncated": (lambda s: _truncate(s / "random" / "summary.json"), [], "summary.json is damaged"),
    "a row cut from the table": (
        lambda s: (s / "random" / "results.csv").write_text(
            "".join((s / "random" / "results.csv").read_text().splitlines(keepends=True)[:-1])
        ),
        [],
        "1 rows, its summary counts 2",
    ),
    # random left unfinished (the test puts a real Tune experiment there), continued with --resume
    "Tune state truncated": (
        lambda s: _truncate(max((s / "random").glob("experiment_state-*.json"))),
        ["--resume"],
        "/random/experiment_state-",
    ),
}


def _report(config: dict) -> None:
    tune.report({"AP": 0.5})


@pytest.fixture(scope="module")
def tune_experiment(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Tune experiment of raynas's random searcher (2 candidates, a trivial trainable): the files
    ``--resume`` continues from, as Tune writes them."""
    storage = tmp_path_factory.mktemp("tune")
    searcher = RandomSearcher(OPANASSpace(), max_evaluations=2, batch_size=2)
    tune.Tuner(
        tune.with_resources(_report, {"cpu": 0.05}),
        tune_config=tune.TuneConfig(search_alg=searcher, metric="AP", mode="max", num_samples=-1),
        run_config=tune.RunConfig(name="random", storage_path=str(storage), verbose=0),
    ).fit()
    return storage / "random"


@pytest.mark.parametrize("damage", list(SEARCH_DAMAGES))
def test_a_damaged_search_folder_is_one_line_and_stays_as_it_is(
    supernet: Path, tune_experiment: Path, tmp_path: Path, capfd: pytest.CaptureFixture, damage: str
) -> None:
    run_dir = tmp_path / "out" / "s"
    finished_search(run_dir, supernet)
    act, flags, needle = SEARCH_DAMAGES[damage]
    if "--resume" in flags:
        (run_dir / "random" / "summary.json").unlink()
        shutil.copytree(tune_experiment, run_dir / "random", dirs_exist_ok=True)
    act(run_dir)
    before = tree_hash(run_dir)
    config = search_yaml(tmp_path, run_dir.parent)
    arguments = ["search", "opanas", "--checkpoint", str(supernet), "--config", str(config), *flags]
    line = refused(capfd, raynas_main(arguments), needle)
    assert "delete" in line and "restore" in line
    assert tree_hash(run_dir) == before


@pytest.mark.parametrize("pattern", list(TUNE_STATE))
def test_each_file_tune_resumes_from_is_checked(tune_experiment: Path, tmp_path: Path, pattern: str) -> None:
    experiment = tmp_path / "random"
    shutil.copytree(tune_experiment, experiment)
    check_tune_state(experiment)  # as Tune wrote them: whole
    damaged = max(experiment.glob(pattern))
    _truncate(damaged)
    with pytest.raises(ValueError, match=rf"{damaged} is damaged .*; restore it, or delete {experiment} to"):
        check_tune_state(experiment)
    damaged.unlink()
    with pytest.raises(ValueError, match=r"is missing, and Tune cannot continue the search"):
        check_tune_state(experiment)


def test_tune_state_names_are_tunes_own() -> None:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.impl.tuner_internal import _TUNER_PKL
    from ray.tune.search import Searcher, SearchGenerator

    templates = (TuneController.CKPT_FILE_TMPL, SearchGenerator.CKPT_FILE_TMPL, Searcher.CKPT_FILE_TMPL)
    assert (_TUNER_PKL, *(template.format("*") for template in templates)) == tuple(TUNE_STATE)


def test_a_moved_search_folder_with_its_supernet_is_the_same_search(tmp_path: Path) -> None:
    old, new = tmp_path / "old" / "out", tmp_path / "new" / "out2"
    checkpoint = old / "supernet" / "checkpoint_0"
    checkpoint.mkdir(parents=True)
    cfg = OPANASSearchConfig(storage_path=str(old), name="s")
    guard_search_folder(old / "s", cfg, str(checkpoint), resume=False)
    new.parent.mkdir()
    shutil.move(old, new)
    before = tree_hash(new)
    guard_search_folder(new / "s", OPANASSearchConfig(storage_path=str(new), name="s"),
                        str(new / "supernet" / "checkpoint_0"), resume=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"other settings \(\['supernet checkpoint'\]\)"):
        guard_search_folder(new / "s", OPANASSearchConfig(storage_path=str(new), name="s"),
                            str(tmp_path / "other" / "checkpoint_0"), resume=False)  # fmt: skip
    assert tree_hash(new) == before


def test_a_body_pretrained_again_at_the_same_path_is_another_run(tmp_path: Path) -> None:
    """The config names the body by its path only: the recorded digest of its content tells a body
    pretrained again (another recipe) apart, so the old run is neither continued nor read as finished."""
    from dataclasses import replace

    from raynas.config import ConfigError, to_dict
    from raynas.training.run_folder import check_same_run, input_digests

    body = tmp_path / "resnet18.pt"
    body.write_bytes(b"first body")
    cfg = TrainConfig()
    cfg = replace(cfg, model=replace(cfg.model, backbone_weights=str(body)))
    first = input_digests(cfg)
    assert set(first) == {"backbone_weights"} and input_digests(TrainConfig()) == {}
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint_000000").mkdir(parents=True)
    config = json.loads(json.dumps(to_dict(cfg), default=str))
    (run_dir / "run_info.json").write_text(json.dumps({"config": config, "inputs": first}))
    check_same_run(run_dir, config, TrainConfig, first)  # the same body: the same run
    body.write_bytes(b"pretrained again")
    with pytest.raises(ConfigError, match=r"the content of model.backbone_weights"):
        check_same_run(run_dir, config, TrainConfig, input_digests(cfg))
    (run_dir / "run_info.json").write_text(json.dumps({"config": config}))  # recorded before digests
    check_same_run(run_dir, config, TrainConfig, input_digests(cfg))
