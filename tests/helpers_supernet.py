"""Super-net (and standalone) checkpoints for tests and benchmarks, written without Ray Train.

A Ray Train run costs ~30-60 s on the shared CI machine; the scorer, the pool and the search only
need a checkpoint directory, written by the same ``raynas.checkpoints.write_checkpoint`` as
``raynas.training.engine.worker_loop`` uses. Weights
are untrained; :func:`make_checkpoint` raises the classification bias so that the detector fires
(the torchvision prior, ~0.01, sits below the 0.05 score threshold), which gives the scorer real
detections to compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tiny_data import TINY_DIGITS

from raynas.checkpoints import write_checkpoint
from raynas.data.config import DataConfig
from raynas.data.loaders import base_dataset, build_dataset, ensure_dataset
from raynas.models.build import build_model
from raynas.models.config import ModelConfig
from raynas.training.config import OptimConfig, SupernetConfig, TrainConfig

TASKS = {
    SupernetConfig: "supernet",
    TrainConfig: "standalone",
}


def tiny_config(
    data_root: str | Path,
    kind: str = "retinanet",
    backbone: str = "resnet18",
    size: int = 64,
    max_size: int = 96,
    out_channels: int = 16,
    batch_size: int = 4,
    standalone: bool = False,
) -> TrainConfig:
    """A tiny super-net config (``standalone=True``: the same detector with a plain FPN)."""
    # a quarter of the 8 training images is the search split the scorer scores on
    data = DataConfig(
        root=str(data_root), **TINY_DIGITS, batch_size=batch_size, hflip=0.0, search_fraction=0.25
    )
    model = ModelConfig(
        kind=kind, backbone=backbone, out_channels=out_channels, min_size=size, max_size=max_size
    )
    optim = OptimConfig(epochs=1, warmup_iters=1, milestones=[])
    cfg = SupernetConfig(data=data, model=model, optim=optim)
    if standalone:
        return TrainConfig(data=cfg.data, model=cfg.model, optim=cfg.optim, run=cfg.run)
    return cfg


def make_checkpoint(
    out_dir: str | Path, cfg: TrainConfig, seed: int = 0, cls_bias: float | None = -1.0
) -> Path:
    """Write ``out_dir/state.pt`` (+ ``config.yaml``, ``metrics.json``) for ``cfg``'s model.

    ``cls_bias``: value of the classification logits' bias, whose weights are then also drawn wider
    so that scores vary with the features (``None`` keeps torchvision's initialisation).
    """
    ensure_dataset(cfg.data, progress=False)
    num_classes = base_dataset(build_dataset(cfg.data, "val")).num_classes
    torch.manual_seed(seed)
    model = build_model(cfg.model, num_classes, cfg.neck, cfg.head)
    if cls_bias is not None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("cls_logits.bias"):
                    param.fill_(cls_bias)
                elif name.endswith("cls_logits.weight"):
                    param.normal_(0.0, 0.1)  # scores that depend on the features, not only on the bias
    metrics: dict[str, Any] = {"epoch": 1, "step": 0}
    return write_checkpoint(
        out_dir, cfg, TASKS[type(cfg)], model.state_dict(), num_classes, epoch=1, step=0, metrics=metrics
    )


def make_supernet_checkpoint(out_dir: str | Path, data_root: str | Path, **kwargs: Any) -> Path:
    """A tiny untrained OPANAS super-net checkpoint over the dataset at ``data_root``."""
    return make_checkpoint(out_dir, tiny_config(data_root, **kwargs))


def make_standalone_checkpoint(out_dir: str | Path, data_root: str | Path, **kwargs: Any) -> Path:
    """A checkpoint of the same detector with a plain FPN (the wrong kind for a scorer)."""
    return make_checkpoint(out_dir, tiny_config(data_root, standalone=True, **kwargs))


def tensorboard_tags(folder) -> set[str]:
    """The scalar and histogram tags of every TensorBoard event file under ``folder``."""
    from raynas.training.curves import summary_values

    return {value.tag for _, value in summary_values(folder)}
