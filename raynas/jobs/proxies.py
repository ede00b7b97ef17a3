"""The embedded proxies' data and model parts, shared by every job: where a proxy's data go, the digits
and scenes recipes' data and model configs, and the inputs (data, pretrained body, cached body outputs)
made on the driver before any worker starts.
"""

from __future__ import annotations

from pathlib import Path

from raynas.data.config import DataConfig
from raynas.models.config import ModelConfig
from raynas.registry import ONE_STAGE
from raynas.training.config import SupernetConfig, TrainConfig

#: the embedded proxies: digits (the earlier proxy: one pyramid level in use) and scenes (every level used;
#: docs/proxy.md)
PROXIES = ("digits", "scenes")
#: a smoke run's body: a few steps exercise every part of pretraining and learn nothing
SMOKE_PRETRAIN_STEPS = 5


def default_data(smoke: bool, proxy: str = "digits") -> str:
    """Where the main job's data go when no ``--data`` is given (a smoke run keeps its tiny set apart)."""
    return f"data/{proxy}_smoke" if smoke else f"data/{proxy}"


def digits_parts(data: str, kind: str) -> tuple[DataConfig, ModelConfig]:
    """Digits at 128 px from the body pretrained on digit crops, at the widths torchvision's heads need
    (FCOS: GroupNorm(32, c) with c >= 64)."""
    return (
        DataConfig(root=data, num_train=1000, num_val=200, batch_size=4, search_fraction=0.2),
        ModelConfig(
            kind=kind,
            backbone="resnet18",
            out_channels=64 if kind == "fcos" else 32,
            min_size=128,
            max_size=128,
            backbone_weights="proxy",
            trainable_backbone_layers=3,  # torchvision's default with weights; conv1 + layer1 frozen
        ),
    )


def scenes_parts(
    data: str,
    kind: str,
    *,
    train_images: int | None,
    body_steps: int | None,
    batch_size: int = 4,
    search_fraction: float = 0.2,
) -> tuple[DataConfig, ModelConfig]:
    """320 px scenes of the proxy's layout (generated as the calibration's: 1000 / 200 / 200), the context
    body pretrained on them (``body_steps``; None: the calibration's) and frozen, its outputs cached once
    (NAS-FCOS's setting: only the neck and the head train; Mask R-CNN runs the frozen body), ``train_images``
    of the training images, FCOS at the proxy's anchor sizes (every pyramid level gets positives;
    docs/proxy.md), the calibration's width."""
    from raynas.data.scenes import scenes_anchor_sizes

    size = 320
    return (
        DataConfig(
            root=data,
            format="scenes",
            num_train=1000,
            num_val=200,
            num_test=200,
            image_size=size,
            batch_size=batch_size,
            hflip=0.0,  # the cache holds each image once, un-augmented
            search_fraction=search_fraction,
            max_train_images=train_images,
        ),
        ModelConfig(
            kind=kind,
            backbone="resnet18",
            out_channels=64 if kind == "fcos" else 32,
            min_size=size,
            max_size=size,
            backbone_weights="proxy",
            body_steps=body_steps,
            trainable_backbone_layers=0,
            cache_features=kind in ONE_STAGE,
            anchor_sizes=list(scenes_anchor_sizes(size)) if kind == "fcos" else None,
        ),
    )


def prepare_inputs(config: SupernetConfig | TrainConfig, smoke: bool) -> None:
    """Data and pretrained body on the driver, before any worker starts (a body of a few steps for a smoke
    run: it exercises every part and learns nothing)."""
    from raynas.data.loaders import ensure_dataset
    from raynas.models.config import PROXY_BODIES
    from raynas.training.inputs import ensure_inputs
    from raynas.training.pretrain import ensure_proxy_weights

    ensure_dataset(config.data)
    weights = config.model.backbone_weights
    if smoke and weights and not Path(weights).is_file():
        source = "scenes" if config.data.format == "scenes" else "digits"
        body = PROXY_BODIES[source]
        ensure_proxy_weights(
            weights, config.model.backbone, source, body, SMOKE_PRETRAIN_STEPS, config.data.scenes_layout,
            smoke=True,
        )  # fmt: skip
    ensure_inputs(config)


__all__ = [
    "PROXIES",
    "SMOKE_PRETRAIN_STEPS",
    "default_data",
    "digits_parts",
    "prepare_inputs",
    "scenes_parts",
]
