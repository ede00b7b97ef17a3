"""Cached body outputs (``model.cache_features``): training and evaluation on them equal the same through the
frozen body, a cache made from other inputs is never read, and a run on them is a normal run."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tiny_data import TINY_DIGITS
from torch.utils.data import Subset

from raynas.checkpoints import load_detector, write_checkpoint
from raynas.data.config import DataConfig
from raynas.data.feature_cache import (
    RECORD_FILE,
    FeatureDataset,
    ensure_feature_cache,
    expected_record,
    feature_dataset,
)
from raynas.data.loaders import base_dataset, build_dataset, make_loader
from raynas.data.transforms import detection_collate
from raynas.evaluation import evaluate_coco
from raynas.models.cached import CachedBodyDetector
from raynas.models.config import ModelConfig
from raynas.training.config import (
    OPANASConfig,
    OPANASDartsConfig,
    OPANASDartsSettings,
    OptimConfig,
    RunConfig,
    SupernetConfig,
    TrainConfig,
)
from raynas.training.darts import OPANASDartsTask
from raynas.training.standalone import StandaloneTask
from raynas.training.supernet import SupernetTask

# 96 px images resized to 64: the cached targets go through the transform's box resize
SIZES = {"min_size": 64, "max_size": 96}


@pytest.fixture(scope="module")
def root(tiny_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny digits, so the caches written beside it stay in this module."""
    copy_root = tmp_path_factory.mktemp("cached") / "digits"
    shutil.copytree(tiny_digits, copy_root)
    return copy_root


def config(root: Path, kind: str = "fcos", dtype: str = "float32", job: str = "train", **model):
    """A frozen-body job on the module's digits. The searched necks have 2 nodes (3 edges), the super-net
    draws K=2 fair sub-nets a step, DARTS holds a quarter of the training images out for its alphas."""
    search = 0.25 if job == "darts" else 0.0
    data = DataConfig(root=str(root), **TINY_DIGITS, batch_size=4, hflip=0.0, search_fraction=search)
    options = {"out_channels": 64 if kind == "fcos" else 16, **SIZES, **model}
    model_cfg = ModelConfig(
        kind=kind, trainable_backbone_layers=0, cache_features=True, cache_dtype=dtype, **options
    )
    optim = OptimConfig(epochs=1, warmup_iters=1, milestones=[])
    if job == "supernet":
        return SupernetConfig(data=data, model=model_cfg, optim=optim, opanas=OPANASConfig(num_nodes=2, k=2))
    if job == "darts":
        return OPANASDartsConfig(
            data=data, model=model_cfg, optim=optim, darts=OPANASDartsSettings(num_nodes=2)
        )
    return TrainConfig(data=data, model=model_cfg, optim=optim)


def both_batches(cfg, split: str, model, count: int = 4):
    """The first ``count`` items of ``split`` as images and as the cache of ``model``'s body."""
    images = build_dataset(cfg.data, split)
    cached = feature_dataset(images, split, model, cfg.data.root, cfg.model.cache_dtype)
    return (
        detection_collate([images[i] for i in range(count)]),
        detection_collate([cached[i] for i in range(count)]),
    )


def build(task, cfg, seed: int = 0):
    torch.manual_seed(seed)
    return task.build_model(base_dataset(build_dataset(cfg.data, "train")).num_classes)


def assert_close_dicts(a: dict, b: dict, rtol: float, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol, msg=key)


@pytest.mark.parametrize(("dtype", "rtol"), [("float32", 1e-4), ("float16", 2e-2)])
def test_fcos_loss_and_gradients_on_the_cache_equal_those_through_the_body(root, dtype, rtol) -> None:
    cfg = config(root, "fcos", dtype)
    model = build(StandaloneTask(cfg), cfg).train()
    (images, targets), (features, cached_targets) = both_batches(cfg, "train", model)
    cached_model = CachedBodyDetector(copy.deepcopy(model)).train()

    through_body = model(images, targets)
    on_cache = cached_model(features, cached_targets)
    assert_close_dicts(through_body, on_cache, rtol=rtol, atol=1e-5)
    assert all(v > 0 for v in on_cache.values())

    if dtype == "float16":
        return  # the losses agree to fp16's precision; single gradients move by a few percent
    sum(through_body.values()).backward()
    sum(on_cache.values()).backward()
    own = dict(model.named_parameters())
    grads = [
        (own[name].grad, p.grad) for name, p in cached_model.detector.named_parameters() if p.requires_grad
    ]
    assert grads and all(a is not None for a, _ in grads)
    for a, b in grads:
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)
    assert all(p.grad is None for p in model.backbone.body.parameters())  # the body stayed frozen


def test_supernet_step_on_the_cache_equals_the_step_through_the_body(root) -> None:
    cfg = config(root, "retinanet", job="supernet")
    task = SupernetTask(cfg)
    model = build(task, cfg)
    (images, targets), cached_batch = both_batches(cfg, "train", model, count=2)
    cached_model = CachedBodyDetector(copy.deepcopy(model))

    loss = task.accumulate_gradients(model.train(), (images, targets), step=3)
    cached_loss = task.accumulate_gradients(cached_model.train(), cached_batch, step=3)
    assert cached_loss == pytest.approx(loss, rel=1e-4)
    own = dict(model.named_parameters())
    compared = 0
    for name, p in cached_model.detector.named_parameters():
        if own[name].grad is not None:
            torch.testing.assert_close(own[name].grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)
            compared += 1
    assert compared > 10  # neck (the step's sub-nets), gamma and head


def test_darts_steps_on_the_cache_equal_those_through_the_body(root) -> None:
    """Both DARTS loaders read the cache (alphas: the search split), and both steps see the same losses."""
    cfg = config(root, "retinanet", job="darts")
    task, cached_task = OPANASDartsTask(cfg), OPANASDartsTask(cfg)
    model = build(task, cfg)
    cached_model = CachedBodyDetector(copy.deepcopy(model))
    cached_task.frozen = cached_model.detector
    train = cached_task.features(build_dataset(cfg.data, "train"), "train")
    loaders = cached_task.train_loaders(train)
    assert all(isinstance(base_dataset(loader.dataset), FeatureDataset) for loader in loaders.values())
    task.build_optimizers(model, 1)
    cached_task.build_optimizers(cached_model, 1)

    for split, step in (("search", task.alpha_step), ("train", task.weight_step)):
        images, cached = both_batches(cfg, split, model, count=2)
        cached_step = getattr(cached_task, step.__name__)
        assert cached_step(cached_model.train(), cached, 0) == pytest.approx(
            step(model.train(), images, 0), rel=1e-4
        )
    own = dict(model.named_parameters())
    for name, value in cached_model.detector.named_parameters():  # the same updates: alphas and weights
        torch.testing.assert_close(value, own[name], rtol=1e-4, atol=1e-6, msg=name)


def test_eval_detections_and_coco_metrics_on_the_cache_equal_those_through_the_body(root) -> None:
    cfg = config(root, "fcos")
    model = build(StandaloneTask(cfg), cfg).eval()
    with torch.no_grad():  # an untrained detector fires only below the score threshold: raise its prior
        for name, param in model.named_parameters():
            if name.endswith("cls_logits.bias"):
                param.fill_(-1.0)
    cached_model = CachedBodyDetector(model).eval()
    (images, _), (features, _) = both_batches(cfg, "val", model, count=2)
    with torch.no_grad():
        through_body, on_cache = model(images), cached_model(features)
    assert sum(len(d["boxes"]) for d in through_body) > 0
    for a, b in zip(through_body, on_cache, strict=True):
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
        assert a["boxes"].max() > 64  # mapped back to the 96 px originals

    val = build_dataset(cfg.data, "val")
    cached_val = feature_dataset(val, "val", model, cfg.data.root, "float32")
    metrics = evaluate_coco(model, make_loader(Subset(val, [0, 1]), 2, False))
    cached_metrics = evaluate_coco(cached_model, make_loader(Subset(cached_val, [0, 1]), 2, False))
    assert metrics == pytest.approx(cached_metrics, abs=1e-6, nan_ok=True)


def test_a_stale_cache_is_refused_on_read_and_rebuilt_by_ensure(root) -> None:
    cfg = config(root, "fcos")
    model = build(StandaloneTask(cfg), cfg)
    dataset = build_dataset(cfg.data, "val")
    expected = expected_record(dataset, "val", model, "float32")
    folder = ensure_feature_cache(dataset, "val", model, cfg.data.root, "float32")
    record = json.loads((folder / RECORD_FILE).read_text())
    (folder / RECORD_FILE).write_text(json.dumps({**record, "body": "another body"}))

    with pytest.raises(ValueError, match=r"not made from this job's inputs \(differs in \['body'\]\)"):
        FeatureDataset(folder, dataset, expected)
    assert ensure_feature_cache(dataset, "val", model, cfg.data.root, "float32") == folder
    assert json.loads((folder / RECORD_FILE).read_text())["body"] == expected["body"]
    assert len(FeatureDataset(folder, dataset, expected)) == len(dataset)

    with torch.no_grad():  # another body: another folder, the first one untouched
        next(model.backbone.body.parameters()).add_(0.01)
    other = ensure_feature_cache(dataset, "val", model, cfg.data.root, "float32")
    assert other != folder and other.parent == folder.parent


def test_a_checkpoint_of_the_cached_detector_loads_into_a_plain_detector(root, tmp_path: Path) -> None:
    cfg = config(root, "fcos")
    model = build(StandaloneTask(cfg), cfg)
    cached_model = CachedBodyDetector(model)
    assert cached_model.state_dict().keys() == model.state_dict().keys()
    write_checkpoint(
        tmp_path, cfg, "raynas.training.standalone.StandaloneTask", cached_model.state_dict(), 11, 1, 0
    )
    loaded, loaded_cfg, _ = load_detector(tmp_path)
    assert loaded_cfg.model.cache_features and type(loaded) is type(model)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("model_yaml", "data_yaml", "says"),
    [
        ({"cache_features": True}, {}, "model.cache_features needs a frozen body: set "
         "model.trainable_backbone_layers: 0 (got None)"),
        ({"cache_features": True, "trainable_backbone_layers": 0, "kind": "faster_rcnn"}, {},
         "model.cache_features is for model.kind fcos or retinanet, not 'faster_rcnn'"),
        ({"cache_features": True, "trainable_backbone_layers": 0}, {"hflip": 0.5},
         "model.cache_features caches each image once, un-augmented: set data.hflip: 0 (got 0.5)"),
    ],
)  # fmt: skip
def test_settings_the_cache_cannot_serve_are_one_line_at_the_front_door(
    root, tmp_path: Path, capsys, model_yaml, data_yaml, says
) -> None:
    from raynas.cli import main

    data = {"root": str(root), **TINY_DIGITS, **data_yaml}
    path = tmp_path / "job.yaml"
    storage = tmp_path / "runs"
    path.write_text(
        yaml.safe_dump({"data": data, "model": model_yaml, "run": {"storage_path": str(storage)}})
    )
    before = sorted(p.name for p in root.iterdir())
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raynas: error: ") and says in err[0], err
    assert sorted(p.name for p in root.iterdir()) == before
    assert not list(storage.glob("*/checkpoint_*"))


def test_a_ray_train_run_on_cached_features(root, ray_session, tmp_path: Path) -> None:
    """The wiring end to end: the driver makes the caches, the worker trains and evaluates on them, the
    checkpoint is a plain detector's."""
    from raynas.training.standalone import train

    cfg = config(root, "fcos", "float16")
    cfg.run = RunConfig(name="cached", storage_path=str(tmp_path / "runs"))
    result = train(cfg)
    assert result.metrics["epoch"] == 1 and result.metrics["train_loss"] > 0
    assert "AP" in result.metrics
    caches = sorted(p.name.split("-")[0] for p in (root / "features").iterdir() if p.is_dir())
    assert {"train", "val"} <= set(caches)
    model, _, _ = load_detector(result.checkpoint_dir)
    assert not isinstance(model, CachedBodyDetector)
