"""Bad input through the real entry points (``raynas ...`` and ``experiments/*.py``): one line on stderr
naming what is wrong, exit status 2, no traceback, and the files that were there unchanged.

Every case is checked before Ray starts anything (config checks, the driver's preflight), so these run in
process and in seconds; the case that needs a subprocess (an interrupted data generation) says so.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers_supernet import make_standalone_checkpoint, make_supernet_checkpoint
from tiny_data import TINY_DIGITS

from raynas.cli import main as raynas_main

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import compare_strategies  # noqa: E402
import opanas_ea  # noqa: E402
import train_baseline  # noqa: E402


def tree_hash(root: Path) -> str:
    """A hash of every file under ``root`` (names and bytes): equal before and after = nothing lost."""
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
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert ": error: " in lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def train_config(tmp_path: Path, tiny_digits: Path, **changes) -> Path:
    """A tiny standalone training config (YAML) with ``changes`` merged per section."""
    cfg = {
        "data": {"root": str(tiny_digits), **TINY_DIGITS, "batch_size": 2},
        "model": {"kind": "retinanet", "out_channels": 16, "min_size": 64, "max_size": 64},
        "optim": {"epochs": 1, "warmup_iters": 1, "milestones": []},
        "run": {"name": "t", "storage_path": str(tmp_path / "runs"), "num_workers": 1},
    }
    for section, values in changes.items():
        cfg[section] = values if not isinstance(values, dict) else {**cfg.get(section, {}), **values}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---- 1. errors that used to surface inside Ray Train workers -------------------------------------------
def test_a_bad_neck_architecture_is_refused_before_ray_starts(tmp_path, tiny_digits, capfd) -> None:
    arch = {f"e{i}_{j}": "top_down" for j in range(1, 6) for i in range(j)} | {"e0_2": "sideways"}
    config = train_config(tmp_path, tiny_digits, neck={"type": "opa_fpn", "arch": arch})
    refused(capfd, raynas_main(["train", "--config", str(config)]), "e0_2", "sideways")
    assert not (tmp_path / "runs").exists()


def test_an_edge_outside_the_space_is_refused(tmp_path, tiny_digits, capfd) -> None:
    arch = {f"e{i}_{j}": "skip" for j in range(1, 6) for i in range(j)} | {"e5_6": "top_down"}
    config = train_config(tmp_path, tiny_digits, neck={"type": "opa_fpn", "arch": arch})
    refused(capfd, raynas_main(["train", "--config", str(config)]), "e5_6", "not choices")


def test_a_bad_fad_option_is_refused(tmp_path, tiny_digits, capfd) -> None:
    config = train_config(tmp_path, tiny_digits, fad={"streams": ["std", "wide"]})
    code = raynas_main(["search", "fad", "--config", str(config)])
    refused(capfd, code, "wide")


def test_a_coco_file_without_images_is_refused(tmp_path, capfd) -> None:
    (tmp_path / "images").mkdir()
    annotations = tmp_path / "bad.json"
    annotations.write_text(json.dumps({"annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    data = {
        "format": "coco",
        "root": str(tmp_path),
        "train_images": str(tmp_path / "images"),
        "train_annotations": str(annotations),
        "val_images": str(tmp_path / "images"),
        "val_annotations": str(annotations),
    }
    config = train_config(tmp_path, tmp_path, data=data)
    refused(capfd, raynas_main(["train", "--config", str(config)]), "bad.json", "images")


def test_resuming_from_a_checkpoint_of_another_job_is_refused(tmp_path, tiny_digits, capfd) -> None:
    supernet = make_supernet_checkpoint(tmp_path / "supernet", tiny_digits)
    config = train_config(tmp_path, tiny_digits)
    code = raynas_main(["train", "--config", str(config), "--resume", str(supernet)])
    refused(capfd, code, "cannot resume", "written by 'supernet', not 'standalone'")


# ---- 2. values that can never work ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"optim": {"epochs": 0}}, "optim.epochs must be >= 1"),
        ({"data": {"batch_size": 0}}, "data.batch_size must be >= 1"),
        ({"optim": {"lr": -0.1}}, "optim.lr must be > 0"),
        ({"data": {"hflip": 1.5}}, "data.hflip must be >= 0.0 and <= 1.0"),
        ({"run": {"num_workers": 0}}, "run.num_workers must be >= 1"),
    ],
)
def test_out_of_range_values_are_refused_with_the_field_named(tmp_path, tiny_digits, capfd, changes, needle):
    config = train_config(tmp_path, tiny_digits, **changes)
    refused(capfd, raynas_main(["train", "--config", str(config)]), needle, str(config))


@pytest.mark.parametrize(("key", "value"), [("lr", ".nan"), ("lr", ".inf"), ("grad_clip", ".nan")])
def test_a_non_finite_number_is_refused_before_ray_starts(tmp_path, tiny_digits, capfd, key, value) -> None:
    config = train_config(tmp_path, tiny_digits)
    config.write_text(config.read_text().replace("optim:\n", f"optim:\n  {key}: {value}\n", 1))
    refused(capfd, raynas_main(["train", "--config", str(config)]), f"optim.{key}", "finite number")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("betas", "needle"), [([0.5], "two numbers"), ([0.5, 1.0], "must be >= 0.0 and < 1.0")]
)
def test_adam_betas_of_the_architecture_are_checked(tmp_path, tiny_digits, capfd, betas, needle) -> None:
    config = train_config(tmp_path, tiny_digits, fad={"arch_betas": betas})
    refused(capfd, raynas_main(["search", "fad", "--config", str(config)]), "fad.arch_betas", needle)


@pytest.mark.parametrize("name", ["", "..", "../elsewhere"])
def test_a_run_name_that_is_not_one_folder_is_refused(tmp_path, tiny_digits, capfd, name) -> None:
    config = train_config(tmp_path, tiny_digits, run={"name": name})
    refused(capfd, raynas_main(["train", "--config", str(config)]), "run.name must be a folder name")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "elsewhere").exists()


@pytest.mark.slow
def test_zero_workers_or_scorers_and_empty_strategies_are_refused(tmp_path, capfd) -> None:
    out = ["--smoke", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "d")]
    refused(capfd, opanas_ea.main([*out, "--train-workers", "0"]), "num_workers must be >= 1")
    refused(capfd, opanas_ea.main([*out, "--scorers", "0"]), "num_scorers must be >= 1")
    search = tmp_path / "search.yaml"
    search.write_text("strategies: []\n")
    refused(capfd, opanas_ea.main([*out, "--search-config", str(search)]), "strategies")
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()


def test_a_config_that_is_not_utf8_text_is_refused(tmp_path, tiny_digits, capfd) -> None:
    config = train_config(tmp_path, tiny_digits)
    config.write_bytes("# réglages\n".encode("latin-1") + config.read_bytes())
    refused(capfd, raynas_main(["train", "--config", str(config)]), str(config), "not a UTF-8 text file")
    config.write_bytes(bytes(range(256)))
    refused(capfd, opanas_ea.main(["--search-config", str(config)]), "not a UTF-8 text file")


def test_backbone_weights_that_torch_cannot_read_are_refused(tmp_path, tiny_digits, capfd) -> None:
    junk = tmp_path / "weights.pt"
    junk.write_bytes(bytes(range(256)) * 4)
    config = train_config(tmp_path, tiny_digits, model={"backbone_weights": str(junk)})
    refused(capfd, raynas_main(["train", "--config", str(config)]), "weights.pt", "could not be read")


def test_a_key_given_twice_in_yaml_is_refused(tmp_path, tiny_digits, capfd) -> None:
    config = train_config(tmp_path, tiny_digits)
    text = config.read_text() + "optim:\n  epochs: 3\n"
    config.write_text(text)
    refused(capfd, raynas_main(["train", "--config", str(config)]), "'optim' appears twice")


# ---- 3. existing work is neither silently reused nor thrown away ---------------------------------------
def test_a_data_root_generated_with_other_settings_is_refused(tmp_path, tiny_digits, capfd) -> None:
    before = tree_hash(tiny_digits)
    config = train_config(tmp_path, tiny_digits, data={"num_train": 16})
    refused(capfd, raynas_main(["train", "--config", str(config)]), "other settings", "num_train")
    assert tree_hash(tiny_digits) == before


def test_an_unfinished_search_is_resumed_only_with_resume(tmp_path, tiny_digits, capfd) -> None:
    from raynas.search.opanas_config import OPANASSearchConfig
    from raynas.search.search_folder import guard_search_folder

    cfg = OPANASSearchConfig(storage_path=str(tmp_path), name="s")
    guard_search_folder(tmp_path / "s", cfg, "ckpt", resume=False)  # first start: writes run_info
    (tmp_path / "s" / "evolution").mkdir()  # Tune's folder of a search that did not finish
    (tmp_path / "s" / "evolution" / "tuner.pkl").write_bytes(pickle.dumps(None))  # whole, as --resume checks
    before = tree_hash(tmp_path / "s")
    with pytest.raises(ValueError, match="unfinished evolution search; run the same command with --resume"):
        guard_search_folder(tmp_path / "s", cfg, "ckpt", resume=False)
    guard_search_folder(tmp_path / "s", cfg, "ckpt", resume=True)
    with pytest.raises(ValueError, match="other settings"):
        guard_search_folder(tmp_path / "s", OPANASSearchConfig(storage_path=str(tmp_path), name="s", top_k=3),
                            "ckpt", resume=True)  # fmt: skip
    assert tree_hash(tmp_path / "s") == before


def test_resume_is_refused_where_ray_train_would_ignore_it(tmp_path, tiny_digits, capfd) -> None:
    supernet = make_supernet_checkpoint(tmp_path / "other", tiny_digits)
    run_dir = tmp_path / "runs" / "t"
    (run_dir / "checkpoint_000").mkdir(parents=True)  # the run folder holds checkpoints of its own
    config = train_config(tmp_path, tiny_digits)
    before = tree_hash(run_dir)
    code = raynas_main(["train", "--config", str(config), "--resume", str(supernet)])
    refused(capfd, code, "cannot resume")  # another job's checkpoint: refused first
    assert tree_hash(run_dir) == before


def test_an_interrupted_generation_leaves_the_old_dataset_intact(tmp_path: Path, capfd) -> None:
    """SIGINT to `raynas data digits --replace` while it regenerates: the previous dataset stays whole."""
    from raynas.data import generate_digits
    from raynas.data.digits import digits_settings

    root = generate_digits(tmp_path / "digits", num_train=4, num_val=2, image_size=64, progress=False)
    before = tree_hash(root)
    arguments = ["data", "digits", "--out", str(root), "--train", "3000"]
    refused(capfd, raynas_main(arguments), "other settings", "--replace")
    assert tree_hash(root) == before  # other settings: refused unless --replace
    command = [sys.executable, "-m", "raynas.cli", *arguments, "--replace"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staging = f".{root.name}.staging-"
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(staging) and any(p.rglob("*.png")) for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert tree_hash(root) == before
    assert digits_settings(root) == {"num_train": 4, "num_val": 2, "image_size": 64, "seed": 0}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(staging)]  # staging removed


def test_a_wrong_search_checkpoint_leaves_nothing_behind(tmp_path, tiny_digits, capfd) -> None:
    """The likeliest slips, the run folder instead of its checkpoint_* folder or a standalone checkpoint,
    are refused before the search folder is claimed (its run_info.json would refuse the corrected command
    as a search 'with other settings')."""
    standalone = make_standalone_checkpoint(tmp_path / "runs_fpn" / "checkpoint_0", tiny_digits)
    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({"storage_path": str(tmp_path / "out"), "name": "s"}))
    for wrong, needle in ((standalone.parent, "not a raynas checkpoint"), (standalone, "not by OPANAS")):
        code = raynas_main(["search", "opanas", "--checkpoint", str(wrong), "--config", str(search)])
        refused(capfd, code, needle)
    assert not (tmp_path / "out" / "s").exists()


def test_opanas_ea_checks_a_given_supernet_checkpoint_first(tmp_path, tiny_digits, capfd) -> None:
    standalone = make_standalone_checkpoint(tmp_path / "fpn", tiny_digits)
    out = tmp_path / "o"
    code = opanas_ea.main(["--smoke", "--out", str(out), "--supernet-checkpoint", str(standalone)])
    refused(capfd, code, "not by OPANAS super-net training")
    assert not out.exists()


# ---- 4. filesystem mistakes ----------------------------------------------------------------------------
def test_out_pointing_at_a_file_or_below_one_is_refused(tmp_path, tiny_digits, capfd) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for out in (afile, afile / "below"):
        code = train_baseline.main(["--config", str(train_config(tmp_path, tiny_digits)), "--out", str(out)])
        refused(capfd, code, "is a file")
    assert afile.read_text() == "keep me"


def test_outputs_below_a_file_are_refused_before_any_work(tmp_path, capfd) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    pretrain = ["pretrain", "--data", str(tmp_path), "--steps", "100000"]
    refused(capfd, raynas_main([*pretrain, "--out", str(afile / "b.pt")]), "is a file")  # before the steps
    refused(capfd, raynas_main([*pretrain, "--out", str(tmp_path)]), "is a folder")
    (tmp_path / "evolution").mkdir()
    (tmp_path / "evolution" / "results.csv").write_text("AP,AP50\n0.1,0.2\n")
    code = compare_strategies.main([str(tmp_path), "--out", str(afile / "c.png")])
    refused(capfd, code, "is a file")
    assert afile.read_text() == "keep me"


def test_a_directory_given_as_config_is_named_a_directory(tmp_path, capfd) -> None:
    refused(capfd, raynas_main(["train", "--config", str(tmp_path)]), "is a directory")
    refused(capfd, opanas_ea.main(["--supernet-config", str(tmp_path)]), "is a directory")


# ---- 5. scripts outside the CLI ------------------------------------------------------------------------
def test_compare_strategies_names_a_missing_metric_column(tmp_path, capfd) -> None:
    (tmp_path / "evolution").mkdir()
    (tmp_path / "evolution" / "results.csv").write_text("AP,AP50\n0.1,0.2\n")
    code = compare_strategies.main([str(tmp_path), "--metric", "mAP", "--out", str(tmp_path / "c.png")])
    refused(capfd, code, "'mAP'", "AP50")
    refused(capfd, compare_strategies.main([str(tmp_path / "nothing")]), "results.csv")


def test_a_genuine_bug_keeps_its_traceback() -> None:
    from raynas.errors import run_main

    def buggy() -> int:
        return {}["missing"]

    with pytest.raises(KeyError):
        run_main("raynas", buggy)


def test_an_error_from_a_ray_worker_is_unwrapped_to_its_own_message() -> None:
    """What Ray Train raises on the driver when a worker fails: the worker's raynas error, as one line."""
    from ray.train import WorkerGroupError

    from raynas.errors import user_message

    worker_error = ValueError("neck spec 'arch': edge 3 (e0_3) has unknown path 'sideways'")
    wrapped = WorkerGroupError("Training failed\nTraceback ...\n", {1: RuntimeError("peer"), 0: worker_error})
    assert user_message(wrapped) == "neck spec 'arch': edge 3 (e0_3) has unknown path 'sideways'"
    assert user_message(WorkerGroupError("x", {0: KeyError("bug")})) is None  # a bug stays a traceback


def test_a_mistake_found_inside_a_worker_reaches_the_driver_as_its_one_line() -> None:
    """What ``_worker_entry`` raises for a user's mistake found at run time, and how Ray Train's logs of
    it are recognised (``ray_hooks.MuteUserErrorTracebacks``)."""
    import logging

    from ray.train import WorkerGroupError

    from raynas.errors import WorkerUserError, user_message
    from raynas.training.ray_hooks import MuteUserErrorTracebacks

    carried = WorkerUserError("non-finite loss ([nan]) at step 1; lower optim.lr", "NonFiniteLossError")
    assert user_message(WorkerGroupError("Training failed", {0: carried})) == str(carried)
    assert carried.kind == "NonFiniteLossError"

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("ray.train", logging.ERROR, __file__, 1, text, None, None)

    mute = MuteUserErrorTracebacks()
    assert not mute.filter(record("Error in training function:\n...\nraynas.errors.WorkerUserError: x"))
    assert mute.filter(record("Error in training function:\n...\nKeyError: 'a bug keeps its traceback'"))


def test_a_nan_loss_through_raynas_train_is_one_line_without_ray_tracebacks(tmp_path, tiny_digits) -> None:
    """A real run (its own local Ray, in a subprocess like a user's shell) whose loss is NaN at step 1:
    exit 2, the one line last, and none of the worker's or controller's tracebacks on stderr."""
    config = train_config(tmp_path, tiny_digits, optim={"lr": 1.0e12}, model={"backbone_weights": None})
    command = [sys.executable, "-m", "raynas.cli", "train", "--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_without_ray_address())
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("raynas: error: training stopped on a non-finite loss"), last
    assert "Lower optim.lr" in last and str(tmp_path / "runs" / "t") in last


def _without_ray_address() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def test_ray_that_cannot_start_here_is_one_line(monkeypatch, capsys) -> None:
    """Ray raises a bare Exception when its local node does not start in time (an overloaded machine):
    the entry point says so in one line, not with Ray's traceback."""
    import ray

    from raynas.errors import run_main
    from raynas.training import cluster

    def timed_out(**kwargs):
        raise Exception("The current node timed out during startup. This could happen because ...")  # noqa: TRY002

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", timed_out)
    assert run_main("raynas", lambda: cluster.ensure_ray(None)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Ray could not start on this machine (The current node timed out" in err[0]
