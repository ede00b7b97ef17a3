"""What a job reads before its first step, made where it is missing: the dataset, the pretrained body and
the frozen body's cached outputs.

Ray-free, because the driver (before Ray starts), every Ray Train worker and every scorer actor call it;
each piece is generated deterministically under a file lock, so concurrent callers on one node agree.
"""

from __future__ import annotations

from pathlib import Path

from raynas.data.loaders import ensure_dataset
from raynas.models.config import PROXY_BODIES, proxy_weights_path
from raynas.models.detector import INSTANCE_SEGMENTATION
from raynas.training.config import TrainConfig


def ensure_backbone_weights(cfg: TrainConfig) -> None:
    """Pretrain the proxy body (``backbone_weights: proxy``) when it is not there yet; other paths are the
    user's to provide (the builder says which file is missing)."""
    weights, source, steps = cfg.model.backbone_weights, cfg.data.format, cfg.model.body_steps
    body = PROXY_BODIES.get(source)
    if body is not None and weights == proxy_weights_path(cfg.data.root, cfg.model.backbone, body, steps):
        from raynas.training.pretrain import ensure_proxy_weights

        ensure_proxy_weights(weights, cfg.model.backbone, source, body, steps, cfg.data.scenes_layout)


def ensure_body_features(cfg: TrainConfig, progress: bool = True) -> dict[str, Path]:
    """With ``model.cache_features``: the frozen body's outputs for every split the job trains and
    evaluates on (the search split too for the OPANAS DARTS search), made here so that the workers only
    read them; returns each split's cache folder. The body is the one a worker builds: the same config
    under the run seed (which only matters for a randomly initialised body; a worker that finds no cache
    for its body makes its own)."""
    import torch

    from raynas.config import ConfigError
    from raynas.data.feature_cache import ensure_feature_cache
    from raynas.data.loaders import base_dataset, build_dataset
    from raynas.io import select_device
    from raynas.models.build import build_model
    from raynas.training.config import OPANASDartsConfig

    if cfg.data.hflip > 0:
        raise ConfigError(
            f"model.cache_features caches each image once, un-augmented: set data.hflip: 0 (got "
            f"{cfg.data.hflip}), or model.cache_features: false"
        )
    splits = ("train", "val", "search") if isinstance(cfg, OPANASDartsConfig) else ("train", "val")
    datasets = {split: build_dataset(cfg.data, split, train_transforms=False) for split in splits}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.run.seed)
        detector = build_model(cfg.model, base_dataset(datasets["train"]).num_classes, cfg.neck, cfg.head)
    detector.to(select_device("auto"))
    return {
        split: ensure_feature_cache(dataset, split, detector, cfg.data.root, cfg.model.cache_dtype, progress)
        for split, dataset in datasets.items()
    }


def ensure_inputs(cfg: TrainConfig, progress: bool = True, features: bool = True) -> None:
    """Everything a job reads before its first step: the dataset, the pretrained body and (``features``,
    with ``model.cache_features``) the body's cached outputs."""
    ensure_dataset(cfg.data, progress=progress, masks=cfg.model.kind in INSTANCE_SEGMENTATION)
    ensure_backbone_weights(cfg)
    if features and cfg.model.cache_features:
        ensure_body_features(cfg, progress)
