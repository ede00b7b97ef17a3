"""Standalone detector training: the baseline and the OPANAS/FAD "full training phase"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from raynas.models.build import build_model
from raynas.training.config import TrainConfig
from raynas.training.engine import Task, check_finite
from raynas.training.launch import fit
from raynas.training.run_folder import TrainResult


class StandaloneTask(Task):
    """Plain supervised training of one detector (DDP through ``prepare_model``)."""

    config_class = TrainConfig

    def build_model(self, num_classes: int) -> nn.Module:
        return build_model(self.cfg.model, num_classes, self.cfg.neck, self.cfg.head)

    def build_optimizers(self, model: nn.Module, iters_per_epoch: int) -> dict[str, Any]:
        self._optim = super().build_optimizers(model, iters_per_epoch)
        return self._optim

    def train_step(self, model: nn.Module, batch, step: int, extra_batches: dict) -> dict[str, float]:
        images, targets = batch
        with self.autocast():
            loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        check_finite(loss, f"step {step}")
        optimizer = self._optim["optimizer"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.optim.grad_clip)
        optimizer.step()
        self._optim["scheduler"].step()
        return {"loss": float(loss.detach())}


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    split: str = "val",
    max_images: int | None = None,
    batch_size: int = 8,
    data_root: str | None = None,
) -> dict[str, float]:
    """COCO metrics of a trained detector's checkpoint on ``split`` ("search" to compare it with the
    sub-nets a search scored; "val" for choices; "test" for reported results), on the driver, without Ray.
    The full detector runs (its body too), so a run trained on cached body features is scored as the
    detector it is. ``data_root``: the split of another copy of the data (e.g. the same scenes generated
    with more test images), else the checkpoint's own."""
    from dataclasses import replace

    from raynas.checkpoints import load_detector
    from raynas.data.loaders import build_dataset, make_loader
    from raynas.evaluation import evaluate_coco
    from raynas.io import select_device
    from raynas.models.detector import INSTANCE_SEGMENTATION, iou_types

    model, cfg, _ = load_detector(checkpoint_dir)
    limit = {f"max_{split}_images": max_images}
    data = replace(cfg.data, **limit) if max_images is not None else cfg.data
    data = replace(data, root=data_root) if data_root is not None else data
    masks = cfg.model.kind in INSTANCE_SEGMENTATION
    dataset = build_dataset(data, split, train_transforms=False, masks=masks)
    loader = make_loader(dataset, batch_size, shuffle=False)
    device = select_device("auto")
    return evaluate_coco(model.to(device), loader, device=device, iou_types=iou_types(cfg.model.kind))


def train(cfg: TrainConfig, resume_from: str | Path | None = None) -> TrainResult:
    """Train a detector on Ray Train; returns the run directory, last checkpoint and metrics."""
    return fit("standalone", cfg, resume_from=resume_from)
