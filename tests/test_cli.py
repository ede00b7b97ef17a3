"""Bad input at the command line: one line that says what is wrong and what to do, exit status 2,
nothing started or written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from raynas.cli import main


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_an_unreachable_cluster_address_fails_fast(tmp_path: Path, capsys) -> None:
    config = write(tmp_path, "train.yaml", f"run: {{storage_path: {tmp_path / 'runs'}}}\n")
    assert main(["train", "--config", str(config), "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in err and "omit --address" in err
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, None, None),  # a Ray of its own, even when a `ray start` cluster runs on this machine
        (None, "local", None),
        (None, "10.0.0.1:6379", "10.0.0.1:6379"),  # what `ray job submit` sets for its job
        ("auto", "10.0.0.1:6379", "auto"),  # --address wins
    ],
)
def test_without_address_a_driver_starts_its_own_ray(monkeypatch, flag, env, expected) -> None:
    from raynas.training.cluster import attach_address

    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert attach_address(flag) == expected


def test_an_unreachable_ray_address_from_the_environment_fails_fast(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    config = write(tmp_path, "train.yaml", f"run: {{storage_path: {tmp_path / 'runs'}}}\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model: {kind: yolo}\n",
            "model.kind: must be one of ['fcos', 'retinanet', 'faster_rcnn', 'cascade_rcnn', 'mask_rcnn']",
        ),
        ("optim: {lrate: 0.1}\n", "unknown key(s) ['lrate']"),
        ("optim: {epochs: many}\n", "optim.epochs: expected an integer"),
        ("model: [oops\n", "not valid YAML"),
    ],
)
def test_a_bad_training_config_names_the_problem(tmp_path: Path, capsys, text: str, message: str) -> None:
    config = write(tmp_path, "train.yaml", text)
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(config) in err
    assert not ray.is_initialized()


def test_an_unknown_backbone_lists_the_valid_ones(tmp_path: Path, capsys) -> None:
    from raynas.models.build import build_model
    from raynas.models.config import ModelConfig

    with pytest.raises(ValueError, match="resnet18"):
        build_model(ModelConfig(backbone="vgg16"), num_classes=3)


def test_a_missing_config_file(tmp_path: Path, capsys) -> None:
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_bad_architecture_json_for_the_opa_fpn_neck(tmp_path: Path, capsys) -> None:
    from raynas.models.build import build_model
    from raynas.models.config import ModelConfig

    arch = {f"e{i}_{j}": "top_down" for j in range(1, 6) for i in range(j)}
    bad = {**arch, "e0_1": "teleport"}
    with pytest.raises(ValueError, match="teleport"):
        build_model(ModelConfig(kind="retinanet", out_channels=16), 3, {"type": "opa_fpn", "arch": bad})
    short = dict(list(arch.items())[:3])
    with pytest.raises(ValueError, match="e0_4|missing"):
        build_model(ModelConfig(kind="retinanet", out_channels=16), 3, {"type": "opa_fpn", "arch": short})
    assert json.dumps(arch)  # the valid one is plain JSON
