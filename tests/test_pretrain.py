"""The proxy's pretrained body (``raynas pretrain``): what it writes and how detectors load it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raynas.cli import main as cli_main
from raynas.config import ConfigError
from raynas.data.config import DataConfig
from raynas.data.digits import digit_crops
from raynas.models import build_detector
from raynas.models.backbones import build_backbone_body
from raynas.models.config import ModelConfig, proxy_weights_path
from raynas.training.config import TrainConfig
from raynas.training.pretrain import PretrainConfig, ensure_proxy_weights, pretrain_body


@pytest.fixture(scope="module")
def body(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet18 body after 3 pretraining steps (what is saved, not how well it learned)."""
    path = tmp_path_factory.mktemp("pretrained") / "resnet18.pt"
    pretrain_body(PretrainConfig(steps=3, batch_size=8, eval_crops=16), path, log_every=0)
    return path


def test_crops_come_from_the_training_scans_only_and_are_deterministic() -> None:
    a, labels = digit_crops(np.random.default_rng(0), 6, size=32)
    b, _ = digit_crops(np.random.default_rng(0), 6, size=32)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert set(labels.tolist()) <= set(range(10))
    val, _ = digit_crops(np.random.default_rng(0), 6, size=32, split="val")
    assert not np.array_equal(a, val)  # another pool of scans


def test_pretraining_writes_a_torchvision_state_dict_without_the_classifier(body: Path) -> None:
    state = torch.load(body, weights_only=True)
    assert not any(key.startswith("fc.") for key in state)
    assert not any(key.endswith("running_mean") for key in state)  # GroupNorm: no BN statistics
    record = json.loads(body.with_suffix(".run_info.json").read_text())
    assert record["config"]["steps"] == 3 and 0.0 <= record["heldout_accuracy"] <= 1.0
    assert record["versions"]["torch"]


def test_a_detector_loads_the_body_strictly_and_keeps_its_norm(body: Path) -> None:
    model = build_detector("fcos", backbone="resnet18", num_classes=11, backbone_weights=str(body))
    saved = torch.load(body, weights_only=True)
    loaded = model.backbone.body.state_dict()
    for key in ("conv1.weight", "layer4.1.conv2.weight", "layer2.0.bn1.weight"):
        torch.testing.assert_close(loaded[key], saved[key])
    assert isinstance(model.backbone.body.bn1, torch.nn.GroupNorm)  # norm inferred from the file
    trainable = [n for n, p in model.backbone.body.named_parameters() if p.requires_grad]
    assert not any(n.startswith(("conv1", "layer1")) for n in trainable)  # torchvision: 3 layers


def test_a_body_of_another_architecture_is_refused_with_the_file_named(body: Path) -> None:
    with pytest.raises(ValueError, match=r"resnet18\.pt.*(wrong shape|does not match)"):
        build_backbone_body("resnet50", weights=str(body))
    with pytest.raises(ValueError, match="GroupNorm has no BN stats"):
        build_backbone_body("resnet18", weights=str(body), norm="frozen_bn")


def test_proxy_weights_resolve_next_to_the_data_and_are_made_when_absent(tmp_path: Path) -> None:
    cfg = TrainConfig(data=DataConfig(root=str(tmp_path / "d")), model=ModelConfig(backbone_weights="proxy"))
    assert cfg.model.backbone_weights == proxy_weights_path(str(tmp_path / "d"), "resnet18")
    assert cfg.model.backbone_weights.endswith("d/pretrained/resnet18.pt")
    with pytest.raises(ValueError, match="proxy"):
        TrainConfig(data=DataConfig(format="coco"), model=ModelConfig(backbone_weights="proxy"))
    scenes = TrainConfig(
        data=DataConfig(root=str(tmp_path / "s"), format="scenes"),
        model=ModelConfig(backbone_weights="proxy"),
    )  # the scenes proxy's body learns the context task too: its own file
    assert scenes.model.backbone_weights.endswith("s/pretrained/resnet18-context.pt")
    target = tmp_path / "made" / "resnet18.pt"
    target.parent.mkdir()
    target.write_bytes(b"already there")  # an existing body is never replaced
    assert ensure_proxy_weights(target, "resnet18") == target and target.read_bytes() == b"already there"
    with pytest.raises(ConfigError, match="'context' is not one of"):
        ensure_proxy_weights(tmp_path / "other.pt", "resnet18", "digits", "context")
    assert not (tmp_path / "other.pt").exists()


def test_a_body_of_another_length_is_its_own_file_made_at_that_length(tmp_path: Path) -> None:
    """``model.body_steps``: a shorter body than the recipe's never stands in for it (nor it for the
    recipe's), and the job's inputs pretrain it for exactly that many steps."""
    from raynas.models.config import RECIPE_BODY_STEPS
    from raynas.training.inputs import ensure_backbone_weights

    root = str(tmp_path / "d")
    assert proxy_weights_path(root, "resnet18", "context", 300).endswith(
        "d/pretrained/resnet18-context-300steps.pt"
    )
    assert proxy_weights_path(root, "resnet18", "glyphs", RECIPE_BODY_STEPS) == proxy_weights_path(
        root, "resnet18"
    )
    cfg = TrainConfig(data=DataConfig(root=root), model=ModelConfig(backbone_weights="proxy", body_steps=2))
    assert cfg.model.backbone_weights.endswith("d/pretrained/resnet18-2steps.pt")
    ensure_backbone_weights(cfg)  # the digits glyph body, 2 steps
    record = json.loads(Path(cfg.model.backbone_weights).with_suffix(".run_info.json").read_text())
    assert record["config"]["steps"] == 2
    assert not Path(proxy_weights_path(root, "resnet18")).exists()
    with pytest.raises(ConfigError, match="body_steps"):
        ModelConfig(body_steps=0)


def test_cli_pretrain_writes_the_body(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "body.pt"
    assert cli_main(["pretrain", "--data", str(tmp_path), "--steps", "2", "--out", str(out)]) == 0
    assert out.is_file() and "held-out accuracy" in capsys.readouterr().out
    other = tmp_path / "context.pt"
    argv = ["pretrain", "--data", str(tmp_path), "--source", "digits", "--body", "context"]
    argv += ["--out", str(other)]
    assert cli_main(argv) == 2 and not other.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'context' is not one of ['glyphs'] for digits data" in err[0]


def test_scenes_crops_are_glyphs_of_the_scenes_characters_and_deterministic() -> None:
    from raynas.data.scene_layout import GLYPHS
    from raynas.training.pretrain import glyph_crops

    a, labels = glyph_crops(np.random.default_rng(0), 6, size=32)
    b, again = glyph_crops(np.random.default_rng(0), 6, size=32)
    assert a.shape == (6, 32, 32, 3) and np.array_equal(a, b) and np.array_equal(labels, again)
    assert set(labels.tolist()) <= set(range(len(GLYPHS)))


def test_raynas_pretrain_takes_the_crops_of_the_proxy_its_data_folder_holds(tmp_path: Path) -> None:
    """A scenes folder gets a body pretrained on scenes glyphs, without a flag saying so."""
    from raynas.data.scenes import generate_scenes

    root = generate_scenes(
        tmp_path / "scenes", num_train=1, num_val=1, num_test=1, image_size=128, progress=False
    )
    out = tmp_path / "body.pt"
    argv = ["pretrain", "--data", str(root), "--steps", "2", "--out", str(out)]
    assert cli_main(argv) == 0
    record = json.loads(out.with_suffix(".run_info.json").read_text())
    assert record["config"]["source"] == "scenes"


def test_pretrain_never_overwrites_a_file_it_did_not_write(tmp_path: Path, capsys) -> None:
    """A user's own weights at --out survive byte for byte; raynas's own body may be pretrained again."""
    theirs = tmp_path / "mine.pt"
    theirs.write_bytes(b"my weights")
    assert cli_main(["pretrain", "--data", str(tmp_path), "--steps", "2", "--out", str(theirs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "raynas did not write it" in err[0] and theirs.read_bytes() == b"my weights"
    ours = tmp_path / "ours.pt"
    for _ in range(2):  # the second run replaces raynas's own body
        assert cli_main(["pretrain", "--data", str(tmp_path), "--steps", "2", "--out", str(ours)]) == 0


def test_zone_maps_label_each_zone_box_with_its_type_and_crops_keep_cells_aligned() -> None:
    from raynas.data.scene_context import NO_ZONE, context_crops, context_scenes

    images, maps = context_scenes(np.random.default_rng(3), 2, 128)
    assert images.shape == (2, 128, 128, 3) and maps.shape == (2, 128, 128)
    assert set(np.unique(maps).tolist()) <= {NO_ZONE, 1, 2} and (maps != NO_ZONE).any()
    crops, labels = context_crops(np.random.default_rng(4), images, maps, 5, 64, (16, 32))
    assert crops.shape == (5, 64, 64, 3) and labels[16].shape == (5, 4, 4) and labels[32].shape == (5, 2, 2)
    again, labels_again = context_crops(np.random.default_rng(4), images, maps, 5, 64, (16, 32))
    assert np.array_equal(crops, again) and np.array_equal(labels[32], labels_again[32])
    # whole-canvas crops of a hand-made map: each label grid is the map's cell-centre grid, turned / flipped
    # as its image was
    zones = np.zeros((1, 64, 64), dtype=np.uint8)
    zones[0, :, :32] = 1
    zones[0, :16, 32:] = 2
    image = np.repeat(zones[..., None] * 100, 3, axis=-1).astype(np.uint8)
    turned, grids = context_crops(np.random.default_rng(5), image, zones, 8, 64, (16,))
    expected = zones[0][np.ix_([8, 24, 40, 56], [8, 24, 40, 56])]
    views = [np.rot90(v, k) for v in (expected, expected[:, ::-1]) for k in range(4)]
    for crop, grid in zip(turned, grids[16]):
        assert any(np.array_equal(grid, view) for view in views)
        assert np.array_equal(crop[8::16, 8::16, 0] // 100, grid)  # the label is what the pixel shows
    with pytest.raises(ValueError, match="multiple"):
        context_crops(np.random.default_rng(4), images, maps, 1, 48, (32,))


def test_the_context_task_is_for_scenes_only_and_reports_what_each_level_reads(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="context_weight"):
        PretrainConfig(source="digits", context_weight=1.0)
    with pytest.raises(ValueError, match="multiple of 32"):
        PretrainConfig(source="scenes", context_weight=1.0, context_crop=100)
    cfg = PretrainConfig(
        source="scenes", steps=2, batch_size=4, eval_crops=8, context_weight=1.0, context_scenes=2,
        context_crop=64, context_batch=2,
    )  # fmt: skip
    record = pretrain_body(cfg, tmp_path / "resnet18.pt", log_every=0)
    assert set(record["heldout_context_accuracy"]) == {"C4", "C5"}
    assert all(0.0 <= v <= 1.0 for v in record["heldout_context_accuracy"].values())
    state = torch.load(tmp_path / "resnet18.pt", weights_only=True)
    assert not any(key.startswith(("fc.", "c4.", "c5.")) for key in state)  # the task's convs are dropped


def test_a_layout_whose_zone_type_shows_at_the_canvas_edge_pretrains_on_whole_scenes() -> None:
    """Layout ``outer`` shows a zone's type only at the canvas edge, which 192 px crops would cut off: its
    context task takes whole scenes; the other layouts keep the default crops (their bodies' settings)."""
    from raynas.training.pretrain import PretrainConfig, context_settings

    assert context_settings("pair") == {"context_layout": "pair"}
    outer = context_settings("outer")
    assert outer == {"context_layout": "outer", "context_crop": 320, "context_batch": 4}
    assert PretrainConfig(source="scenes", context_weight=1.0, **outer).context_crop == 320


def test_a_body_raynas_pretrained_for_another_layout_is_refused_not_reused(tmp_path: Path) -> None:
    """A context body's record names its layout and crops: a job that needs another body is told so in one
    line (the file stays), the same body is reused, and a user's own weights (no record) are always used."""
    import json

    body = tmp_path / "resnet18-context.pt"
    body.write_bytes(b"pretrained for pair scenes")
    record = {
        "config": {"context_weight": 1.0, "context_layout": "pair", "context_crop": 192, "context_batch": 8}
    }
    body.with_suffix(".run_info.json").write_text(json.dumps(record))
    assert ensure_proxy_weights(body, "resnet18", "scenes", "context", layout="pair") == body
    with pytest.raises(ConfigError, match="context_layout='pair'.*context_layout='outer'"):
        ensure_proxy_weights(body, "resnet18", "scenes", "context", layout="outer")
    assert body.read_bytes() == b"pretrained for pair scenes"
    body.with_suffix(".run_info.json").unlink()
    assert ensure_proxy_weights(body, "resnet18", "scenes", "context", layout="outer") == body
