"""The main job, ``experiments/opanas_ea.py --smoke``, end to end in its own process.

Data generation, super-net training on Ray Train, evolutionary and random search on Ray Tune and
the comparison table: about a minute on the shared 2-core machine. A subprocess gives the job its
own Ray instance, as a user's run has, and keeps it away from the suite's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tiny_data import failure_text

from raynas.checkpoints import load_state
from raynas.config import to_dict
from raynas.models.build import build_model
from raynas.spaces.base import arch_from_json
from raynas.spaces.opanas import OPAFPN, OPANASSpace

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "opanas_ea.py"
sys.path.insert(0, str(SCRIPT.parent))
import opanas_ea  # noqa: E402  (the script's flags -> MainJob)

from raynas.jobs.main_job import main_job_configs, retrain_config, smoke_supernet_config  # noqa: E402


def test_command_line_flags_win_over_the_config_files(tmp_path: Path) -> None:
    supernet, search = main_job_configs(opanas_ea.job_from_args(["--smoke"]))
    supernet.run.storage_path, supernet.run.num_workers = "from_file", 1
    search.storage_path, search.num_scorers, search.name = "from_file", 1, "file_search"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(to_dict(supernet)))
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(to_dict(search)))
    files = ["--supernet-config", str(tmp_path / "s.yaml"), "--search-config", str(tmp_path / "q.yaml")]

    supernet, search = main_job_configs(opanas_ea.job_from_args(files))
    assert (supernet.run.storage_path, supernet.run.num_workers) == ("from_file", 1)
    assert (search.storage_path, search.num_scorers, search.name) == ("from_file", 1, "file_search")
    flags = ["--out", "cli_out", "--scorers", "3", "--train-workers", "2", "--address", "auto", "--gpu"]
    supernet, search = main_job_configs(opanas_ea.job_from_args(files + flags))
    assert supernet.run.storage_path == search.storage_path == "cli_out"
    assert (supernet.run.num_workers, supernet.run.address, supernet.run.use_gpu) == (2, "auto", True)
    assert (search.num_scorers, search.use_gpu, search.name) == (3, True, "file_search")


def test_the_scenes_proxy_trains_the_neck_and_head_on_the_frozen_body_s_cached_outputs() -> None:
    """--proxy scenes: 320 px scenes, every split generated, the body frozen and cached, FCOS at the proxy's
    anchor sizes (so every pyramid level gets positives); digits stays the earlier recipe."""
    from raynas.data.config import DataConfig
    from raynas.data.scene_layout import DEFAULT_LAYOUT
    from raynas.data.scenes import scenes_anchor_sizes
    from raynas.jobs.main_job import SCENES_BODY_STEPS, SCENES_EPOCHS, SCENES_TRAIN_IMAGES

    supernet, _ = main_job_configs(opanas_ea.job_from_args(["--proxy", "scenes"]))
    data = supernet.data
    assert (data.root, data.format, data.image_size) == ("data/scenes", "scenes", 320)
    assert supernet.model.trainable_backbone_layers == 0 and supernet.model.cache_features
    assert supernet.data.hflip == 0.0 and supernet.model.anchor_sizes == list(scenes_anchor_sizes(320))
    # the proxy's layout; the budget measured for it: a shorter body (its own file) and part of the images
    assert data.scenes_layout == DEFAULT_LAYOUT == DataConfig().scenes_layout
    assert (
        supernet.model.backbone_weights
        == f"data/scenes/pretrained/resnet18-context-{SCENES_BODY_STEPS}steps.pt"
    )
    assert data.max_train_images == SCENES_TRAIN_IMAGES and supernet.optim.epochs == SCENES_EPOCHS
    smoke, _ = main_job_configs(opanas_ea.job_from_args(["--proxy", "scenes", "--smoke"]))
    assert smoke.data.root == "data/scenes_smoke" and smoke.data.image_size == smoke.model.min_size == 128
    assert smoke.model.anchor_sizes == list(scenes_anchor_sizes(128))
    assert smoke.model.backbone_weights == "data/scenes_smoke/pretrained/resnet18-context.pt"
    digits, _ = main_job_configs(opanas_ea.job_from_args([]))
    assert digits.data.format == "digits" and not digits.model.cache_features


def test_the_evidence_budget_is_the_calibrations_recipe_on_the_scenes_super_net() -> None:
    """--budget evidence (issue 27): the calibration's body (its file), every training image outside the
    search split, 8 epochs with x0.1 for the last 2; the default scenes budget is untouched."""
    from raynas.jobs.main_job import SCENES_EPOCHS

    calibration = yaml.safe_load((SCRIPT.parent / "configs" / "scenes_calibration.yaml").read_text())
    evidence, _ = main_job_configs(opanas_ea.job_from_args(["--proxy", "scenes", "--budget", "evidence"]))
    assert evidence.model.backbone_weights == "data/scenes/pretrained/resnet18-context.pt"
    assert evidence.data.max_train_images is None and evidence.data.search_fraction == 0.2
    optim = calibration["optim"]
    assert (evidence.optim.epochs, evidence.optim.milestones) == (optim["epochs"], optim["milestones"])
    assert evidence.optim.warmup_iters == optim["warmup_iters"]
    default, _ = main_job_configs(opanas_ea.job_from_args(["--proxy", "scenes"]))
    assert default.optim.epochs == SCENES_EPOCHS and default.data.max_train_images is not None


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--proxy", "scenes", "--kind", "faster_rcnn"], "cannot use"),
        (["--budget", "evidence"], "add --proxy scenes"),
        (["--proxy", "scenes", "--budget", "evidence", "--smoke"], "drop --budget evidence"),
        (["--proxy", "scenes", "--supernet-checkpoint", "runs/x/checkpoint_1"], "give one of them"),
    ],
)
def test_a_proxy_the_job_cannot_honour_is_one_line_before_anything_runs(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import ray

    code = opanas_ea.main([*argv, "--out", str(tmp_path / "out"), "--data", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0] and "--proxy scenes" in err[0]
    assert not ray.is_initialized() and not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_retraining_builds_the_neck_that_was_searched(tmp_path: Path) -> None:
    """deformable, norm and num_nodes come from the super-net's config, not the OPA-FPN defaults."""
    supernet = smoke_supernet_config(str(tmp_path / "d"), str(tmp_path / "o"))
    supernet.opanas.num_nodes, supernet.opanas.deformable, supernet.opanas.norm = 3, True, "gn"
    space = OPANASSpace(num_nodes=3)
    arch = space.from_config({key: "scale_equalizing" for key in space.keys})
    cfg = retrain_config(supernet, {**space.to_config(arch), "AP": 0.5, "generation": 1})
    assert cfg.neck == {"type": "opa_fpn", "arch": space.to_config(arch), "num_nodes": 3,
                        "deformable": True, "norm": "gn"}  # fmt: skip
    assert cfg.optim == supernet.optim and cfg.data == supernet.data
    cfg.model.backbone_weights = None
    neck = build_model(cfg.model, 11, cfg.neck, cfg.head).backbone.neck
    assert isinstance(neck, OPAFPN) and neck.arch == arch and neck.deformable and neck.norm == "gn"


@pytest.mark.smoke
def test_smoke_run_trains_searches_and_prints_the_comparison(tmp_path: Path) -> None:
    data, out = tmp_path / "digits", tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--smoke", "--data", str(data), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)

    stdout = done.stdout
    assert "== super-net training" in stdout and "== strategies compared" in stdout
    assert "== standalone FPN reference" in stdout and "x the standalone FPN's" in stdout
    table = stdout.split("== strategies compared (Tune result tables) ==")[1].strip().splitlines()
    header = ["strategy", "supernet_sampling", "supernet_gamma", "supernet_train_paths", "best_AP",
              "top5_mean_AP", "mean_AP", "evaluations", "wall_time_s"]  # fmt: skip
    assert table[0].split() == header
    rows = {line.split()[0]: line.split() for line in table[1:3]}
    assert set(rows) == {"evolution", "random"}
    assert rows["evolution"][1:4] == ["fair", "True", "parameterised"]  # how the super-net was trained
    assert rows["evolution"][7] == rows["random"][7] == "8"  # same budget: 4 x (1 + 1)
    assert "-- top 5 evolution --" in stdout and "-- top 5 random --" in stdout
    # Tune's banner and its TensorBoard hint stay out of raynas's own output (issue 29)
    assert "Number of trials" not in stdout
    # the one TensorBoard hint is raynas's own, naming this job's runs (not Ray's temporary session folder)
    hints = [line for line in stdout.splitlines() if "tensorboard --logdir" in line]
    assert hints == [f"training curves: tensorboard --logdir {out} (a tensorboard/ folder in each run)"]
    assert any((out / "supernet" / "tensorboard").iterdir())

    (checkpoint,) = [p for p in (out / "supernet").glob("checkpoint_*") if p.is_dir()]
    assert load_state(checkpoint)["task"] == "supernet"
    search = out / "search"
    comparison = json.loads((search / "comparison.json").read_text())
    assert [row["evaluations"] for row in comparison] == [8, 8]
    space = OPANASSpace()
    for strategy in ("evolution", "random"):
        assert len(pd.read_csv(search / strategy / "results.csv")) == 8
        assert space.is_valid(arch_from_json(space, (search / strategy / "best_arch.json").read_text()))
        assert (search / strategy / "best_arch.png").stat().st_size > 0
    assert (search / "search_curves.png").stat().st_size > 0
    record = json.loads((out / "main_job.json").read_text())
    random_mean = next(row["mean_AP"] for row in record["strategies"] if row["strategy"] == "random")
    reference = record["reference_fpn"]["AP"]
    ratio = record["subnet_to_standalone_ratio"]
    assert ratio == pytest.approx(random_mean / reference) if reference > 0 else math.isnan(ratio)
    assert (data / "pretrained" / "resnet18.pt").is_file()  # the smoke's tiny pretrained body


@pytest.mark.slow
def test_smoke_run_on_the_scenes_proxy_trains_on_cached_body_outputs(tmp_path: Path) -> None:
    """``--proxy scenes --smoke``: scenes generated with a test split, a scenes-pretrained body, the body's
    outputs cached, the super-net / reference / search on them (about 2 minutes on 2 cores)."""
    data, out = tmp_path / "scenes", tmp_path / "out"
    command = [
        sys.executable,
        str(SCRIPT),
        "--proxy",
        "scenes",
        "--smoke",
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, failure_text(done)
    assert "== strategies compared" in done.stdout and "x the standalone FPN's" in done.stdout
    assert json.loads((data / ".raynas-dataset.json").read_text())["generator"] == "scenes"
    assert (data / "test").is_dir() and (data / "pretrained" / "resnet18-context.pt").is_file()
    assert any((data / "features").rglob("*")), "the frozen body's outputs were not cached"
    record = json.loads((out / "main_job.json").read_text())
    assert [row["evaluations"] for row in record["strategies"]] == [8, 8]
