"""What a job reads before its first step, made where it is missing: the dataset and the pretrained body.

Ray-free, because the driver (before Ray starts), every Ray Train worker and every scorer actor call it;
each piece is generated deterministically under a file lock, so concurrent callers on one node agree.
"""

from __future__ import annotations

from raynas.data.loaders import ensure_dataset
from raynas.models.config import proxy_weights_path
from raynas.models.detector import INSTANCE_SEGMENTATION
from raynas.training.config import TrainConfig


def ensure_backbone_weights(cfg: TrainConfig) -> None:
    """Pretrain the proxy body (``backbone_weights: proxy``) when it is not there yet; other paths are the
    user's to provide (the builder says which file is missing)."""
    weights = cfg.model.backbone_weights
    if weights is not None and weights == proxy_weights_path(cfg.data.root, cfg.model.backbone):
        from raynas.models.pretrain import ensure_proxy_weights

        ensure_proxy_weights(weights, cfg.model.backbone)


def ensure_inputs(cfg: TrainConfig, progress: bool = True) -> None:
    """Everything a job reads before its first step: the dataset and the pretrained body."""
    ensure_dataset(cfg.data, progress=progress, masks=cfg.model.kind in INSTANCE_SEGMENTATION)
    ensure_backbone_weights(cfg)
