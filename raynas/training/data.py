"""Datasets and loaders from a :class:`DataConfig` (shared by training jobs and scorer actors)."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from raynas.data import (
    CocoDetection,
    Compose,
    RandomHorizontalFlip,
    VOCDetection,
    detection_collate,
    generate_digits,
)
from raynas.training.config import DataConfig


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_dataset(cfg: DataConfig, progress: bool = True) -> Path:
    """Generate the embedded digits data into ``cfg.root`` unless it is already there.

    Generation is deterministic for a seed, so every node of a cluster can make its own copy;
    a file lock keeps two workers on one node from writing it at the same time.
    """
    root = Path(cfg.root)
    if cfg.format != "digits":
        if not root.exists() and cfg.train_annotations is None:
            raise FileNotFoundError(f"dataset root {str(root)!r} does not exist (format={cfg.format})")
        return root
    marker = root / "annotations" / "instances_val.json"
    if marker.exists():
        return root
    with _file_lock(root.parent / f".{root.name}.lock"):
        if not marker.exists():
            generate_digits(
                root,
                num_train=cfg.num_train,
                num_val=cfg.num_val,
                image_size=cfg.image_size,
                seed=cfg.seed,
                progress=progress,
            )
    return root


def _coco_paths(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    root = Path(cfg.root)
    images = getattr(cfg, f"{split}_images") or root / split
    annotations = getattr(cfg, f"{split}_annotations") or root / "annotations" / f"instances_{split}.json"
    return Path(images), Path(annotations)


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, range(limit))


def build_dataset(cfg: DataConfig, split: str, train_transforms: bool | None = None) -> Dataset:
    """The ``split`` ("train" or "val") dataset; flips only on the training split by default."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    augment = split == "train" if train_transforms is None else train_transforms
    transforms = Compose([RandomHorizontalFlip(cfg.hflip)]) if augment and cfg.hflip > 0 else None
    if cfg.format == "voc":
        image_set = cfg.voc_train_set if split == "train" else cfg.voc_val_set
        dataset = VOCDetection(cfg.root, image_set=image_set, transforms=transforms)
    else:
        images, annotations = _coco_paths(cfg, split)
        dataset = CocoDetection(images, annotations, transforms=transforms)
    limit = cfg.max_train_images if split == "train" else cfg.max_val_images
    return _limit(dataset, limit)


def base_dataset(dataset: Dataset) -> Dataset:
    """Unwrap ``Subset`` layers to the dataset that carries ``coco`` and ``num_classes``."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, workers: int = 0, seed: int = 0
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=detection_collate,
        generator=generator,
        drop_last=False,
    )
