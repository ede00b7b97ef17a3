"""Standalone detector training on real Ray Train (2 CPU workers, DDP): run, resume, NaN guard, errors.

Three real Ray Train runs share one Ray instance (each costs ~30-60 s on a loaded 2-core machine):
a 1-epoch run, a resume of it to 2 epochs, and a run whose loss becomes non-finite in epoch 2.
Data: the ``tiny_digits`` fixture (8 train / 4 val images); 2 workers x batch 2 = 2 steps an epoch.
"""

from __future__ import annotations

import json
import math
from importlib.metadata import version
from pathlib import Path

import pytest
import ray
import torch
from tiny_data import TINY_DIGITS

from raynas.checkpoints import STATE_FILE, config_from_state, load_detector, load_state
from raynas.config import ConfigError, from_dict, load_yaml, to_dict
from raynas.data.config import DataConfig
from raynas.data.loaders import build_dataset, make_loader
from raynas.io import atomic_write_json, run_info
from raynas.models.build import build_model
from raynas.models.config import ModelConfig
from raynas.training.config import OPANASConfig, OptimConfig, RunConfig, TrainConfig
from raynas.training.run_folder import TrainResult, check_same_run
from raynas.training.standalone import train

AP_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl"}
STEPS_PER_EPOCH = 2  # 8 images / 2 workers / batch 2
TINY_MODEL = ModelConfig(kind="retinanet", backbone="resnet18", out_channels=16, min_size=64, max_size=64)


def tiny_config(root: Path, storage: Path, name: str, epochs: int = 1, **optim) -> TrainConfig:
    """RetinaNet-ResNet18 at 64 px with a 16-channel FPN: the smallest detector that still trains."""
    return TrainConfig(
        data=DataConfig(root=str(root), **TINY_DIGITS, batch_size=2, hflip=0.0),
        model=TINY_MODEL,
        optim=OptimConfig(**{"epochs": epochs, "lr": 0.01, "warmup_iters": 2, "milestones": [], **optim}),
        run=RunConfig(name=name, storage_path=str(storage), num_workers=2, max_failures=0),
    )


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("checkpoint_*") if (p / STATE_FILE).is_file())


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def first_run(ray_session, tiny_digits: Path, storage: Path) -> TrainResult:
    """One epoch of 2-worker DDP training (shared by the tests that need a real checkpoint)."""
    return train(tiny_config(tiny_digits, storage, "first", epochs=1))


def test_training_writes_tensorboard_curves(first_run: TrainResult) -> None:
    from helpers_supernet import tensorboard_tags

    tags = tensorboard_tags(first_run.run_dir / "tensorboard")
    assert {"train_loss", "lr", "epoch_time_s", "AP", "AP50"} <= tags


def test_two_worker_run_writes_a_checkpoint(first_run: TrainResult, tiny_digits: Path, storage: Path) -> None:
    directory = first_run.checkpoint_dir
    assert {STATE_FILE, "config.yaml", "metrics.json"} <= {p.name for p in directory.iterdir()}
    assert checkpoint_dirs(first_run.run_dir) == [directory]
    metrics = first_run.metrics
    assert set(metrics) >= AP_KEYS
    assert all(metrics[k] is None or 0.0 <= metrics[k] <= 1.0 for k in AP_KEYS)
    # the step count shows the DistributedSampler split the 8 images over 2 ranks (1 rank: 4 steps)
    assert (metrics["epoch"], metrics["step"]) == (1, STEPS_PER_EPOCH)
    assert math.isfinite(metrics["train_loss"])
    assert json.loads((directory / "metrics.json").read_text())["step"] == STEPS_PER_EPOCH

    state = first_run.load_state()
    assert (state["epoch"], state["step"], state["num_classes"]) == (1, STEPS_PER_EPOCH, 11)
    assert state["task"] == "standalone"
    assert set(state["optim"]) == {"optimizer", "scheduler"}
    assert not any(key.startswith("module.") for key in state["model"])  # saved unwrapped from DDP
    cfg = tiny_config(tiny_digits, storage, "first", epochs=1)
    assert config_from_state(state) == cfg
    assert load_yaml(TrainConfig, directory / "config.yaml") == cfg

    # what reproduces the run: the config (seed included) and the versions of the stack
    info = json.loads((first_run.run_dir / "run_info.json").read_text())
    assert info["task"] == "standalone" and info["resume_from"] is None
    assert from_dict(TrainConfig, info["config"]) == cfg and info["config"]["run"]["seed"] == cfg.run.seed
    assert info["versions"]["torch"] == version("torch") and info["versions"]["ray"] == version("ray")
    assert {"raynas", "torchvision", "pycocotools", "numpy"} <= set(info["versions"])


def test_checkpoint_loads_without_ray(first_run: TrainResult, tiny_digits: Path) -> None:
    """The checkpoint rebuilds the detector in plain PyTorch, and it detects."""
    # no neck spec in a TrainConfig means torchvision's FPN
    model, cfg, state = load_detector(first_run.checkpoint_dir, expect="fpn")
    assert cfg.model == TINY_MODEL and state["epoch"] == 1
    images, _ = next(iter(make_loader(build_dataset(cfg.data, "val"), 2, shuffle=False)))
    model.eval()
    with torch.inference_mode():
        outputs = model(images)
    assert len(outputs) == 2 and {"boxes", "scores", "labels"} <= set(outputs[0])


def test_supernet_loader_rejects_a_standalone_checkpoint(first_run: TrainResult) -> None:
    with pytest.raises(ValueError, match="holds a 'fpn' neck, not 'opanas_supernet'"):
        load_detector(first_run.checkpoint_dir, expect="opanas_supernet")


def test_resume_continues_at_the_next_epoch(first_run: TrainResult, tiny_digits: Path, storage: Path) -> None:
    cfg = tiny_config(tiny_digits, storage, "resumed", epochs=2)
    result = train(cfg, resume_from=first_run.checkpoint_dir)
    assert (result.metrics["epoch"], result.metrics["step"]) == (2, 2 * STEPS_PER_EPOCH)
    # epoch 1 was not redone: the resumed run reported (and checkpointed) epoch 2 only
    assert checkpoint_dirs(result.run_dir) == [result.checkpoint_dir]
    state = result.load_state()
    assert (state["epoch"], state["step"]) == (2, 2 * STEPS_PER_EPOCH)
    assert state["optim"]["scheduler"]["last_epoch"] == 2 * STEPS_PER_EPOCH  # LR schedule carried on
    first = load_state(first_run.checkpoint_dir)
    assert first["epoch"] == 1  # the source checkpoint is untouched
    # weights were loaded, then trained further: close to epoch 1's but not equal
    key = "head.classification_head.cls_logits.weight"
    assert not torch.equal(state["model"][key], first["model"][key])


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    ray_session, tiny_digits: Path, storage: Path
) -> None:
    """Epoch 1 trains normally; from epoch 2 the step decay multiplies the LR by 1e12 (no clipping), so
    the first update of epoch 2 blows the weights up and the next loss is NaN/Inf on both ranks."""
    cfg = tiny_config(tiny_digits, storage, "nan", epochs=3, milestones=[1], decay=1e12, grad_clip=None)
    with pytest.raises(RuntimeError, match="non-finite loss") as info:
        train(cfg)
    message = str(info.value)
    assert "training stopped on a non-finite loss" in message
    assert "lower optim.lr" in message.lower()  # says what to do
    assert str(storage / "nan") in message  # and where the checkpoints are

    (last_good,) = checkpoint_dirs(storage / "nan")
    state = load_state(last_good)
    assert (state["epoch"], state["step"]) == (1, STEPS_PER_EPOCH)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    model, _, _ = load_detector(last_good)
    assert model.backbone.neck.out_channels == 16


def test_use_gpu_without_gpus_fails_before_launching(ray_session, tiny_digits: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_digits, tmp_path, "gpu")
    cfg.run.use_gpu = True
    if ray.cluster_resources().get("GPU", 0) >= cfg.run.num_workers:
        pytest.skip("this machine has enough GPUs for the job")
    expected = r"run.use_gpu: true asks for 2 GPU\(s\) \(run.num_workers\).*set run.use_gpu: false"
    with pytest.raises(RuntimeError, match=expected):
        train(cfg)
    assert not (tmp_path / "gpu").exists()  # nothing was launched


def test_an_attached_cluster_may_autoscale_so_a_shortfall_only_warns(ray_session, caplog) -> None:
    from raynas.training.cluster import check_resources

    gpus = int(ray.cluster_resources().get("GPU", 0))
    with caplog.at_level("WARNING", logger="raynas.training.cluster"):
        check_resources(gpus + 1, use_gpu=True, cpus_per_worker=1, attached=True)
    assert f"asks for {gpus + 1} GPU(s)" in caplog.text and "autoscaler" in caplog.text


def test_resume_from_a_folder_that_is_not_a_checkpoint(
    ray_session, tiny_digits: Path, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="cannot resume: .* is not a raynas checkpoint"):
        train(tiny_config(tiny_digits, tmp_path, "bad_resume"), resume_from=tmp_path)


def test_load_state_of_a_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"is not a raynas checkpoint \(no state.pt\)") as info:
        load_state(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="is not a raynas checkpoint"):
        load_detector(tmp_path / "missing")


def test_load_state_of_a_corrupt_checkpoint(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="could not read checkpoint") as info:
        load_state(tmp_path)
    assert str(tmp_path / STATE_FILE) in str(info.value)


def test_a_few_steps_on_one_batch_decrease_the_loss(tiny_digits: Path) -> None:
    """Plain PyTorch, no Ray: the detector a config describes learns (loss and gradients are wired)."""
    torch.manual_seed(0)
    data = DataConfig(root=str(tiny_digits), **TINY_DIGITS, hflip=0.0)
    images, targets = next(iter(make_loader(build_dataset(data, "train"), 2, shuffle=False)))
    model = build_model(TINY_MODEL, num_classes=11)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(5):
        loss_dict = model(images, targets)
        assert set(loss_dict) == {"classification", "bbox_regression"}
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.99 * losses[0], losses


def test_a_changed_config_under_the_name_of_a_checkpointed_run_is_refused(tmp_path: Path) -> None:
    """Ray Train would continue the old run (its weights and schedule) under the new config: refuse."""
    config = to_dict(TrainConfig())
    run_dir = tmp_path / "train"
    atomic_write_json(run_dir / "run_info.json", run_info(config))
    check_same_run(run_dir, config)  # no checkpoint yet: nothing to continue
    (run_dir / "checkpoint_2026-01-01_00-00-00.000000").mkdir()
    check_same_run(run_dir, config)  # the same config continues the run (a killed driver, rerun)
    check_same_run(run_dir, {**config, "run": {**config["run"], "address": "auto"}})  # where it runs
    changed = {**config, "optim": {**config["optim"], "epochs": 9, "milestones": [7]}}
    with pytest.raises(ConfigError, match=r"differs in \['optim.epochs', 'optim.milestones'\].*new run.name"):
        check_same_run(run_dir, changed)


def test_a_run_written_before_a_setting_existed_counts_as_its_default(tmp_path: Path) -> None:
    """A super-net run from before the sampling/gamma switches continues under today's defaults, and is
    refused when a switch changes."""
    from raynas.training.config import SupernetConfig

    config = to_dict(SupernetConfig())
    older = json.loads(json.dumps(config))
    for key in ("sampling", "gamma", "train_paths"):
        del older["opanas"][key]
    del older["neck"]["gamma"]
    run_dir = tmp_path / "supernet"
    atomic_write_json(run_dir / "run_info.json", run_info(older))
    (run_dir / "checkpoint_2026-01-01_00-00-00.000000").mkdir()
    check_same_run(run_dir, config, SupernetConfig)
    uniform = to_dict(SupernetConfig(opanas=OPANASConfig(sampling="uniform")))
    with pytest.raises(ConfigError, match=r"opanas.sampling"):
        check_same_run(run_dir, uniform, SupernetConfig)
