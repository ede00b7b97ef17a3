"""Datasets and loaders from a :class:`DataConfig` (shared by training jobs and scorer actors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from raynas.data.coco import CocoDetection
from raynas.data.config import DataConfig
from raynas.data.digits import check_digits_settings, digits_have_masks, generate_digits
from raynas.data.transforms import Compose, RandomHorizontalFlip, detection_collate
from raynas.data.voc import VOCDetection
from raynas.io import file_lock


def ensure_dataset(cfg: DataConfig, progress: bool = True, masks: bool = False) -> Path:
    """Generate the embedded digits data into ``cfg.root`` unless it is already there.

    Generation is deterministic for a seed, so every node of a cluster can make its own copy;
    a file lock keeps two workers on one node from writing it at the same time. ``masks``: the job needs
    instance masks; digits written before raynas had masks are generated again (the same images, the
    annotations gain ``segmentation``).
    """
    root = Path(cfg.root)
    if cfg.format != "digits":
        if not root.exists() and cfg.train_annotations is None:
            raise FileNotFoundError(f"dataset root {str(root)!r} does not exist (format={cfg.format})")
        return root
    wanted = {
        "num_train": cfg.num_train,
        "num_val": cfg.num_val,
        "image_size": cfg.image_size,
        "seed": cfg.seed,
    }

    def ready() -> bool:
        fix = "point data.root at another folder, or set data.num_train/num_val/image_size/seed to match"
        present = check_digits_settings(root, wanted, "data.root", fix)
        return present and (not masks or digits_have_masks(root))

    if ready():
        return root  # there, and generated with these settings (no lock: the folder may be read-only)
    with file_lock(root.parent / f".{root.name}.lock"):
        if not ready():
            generate_digits(root, **wanted, progress=progress)
    return root


def _coco_paths(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    root = Path(cfg.root)
    images = getattr(cfg, f"{split}_images") or root / split
    annotations = getattr(cfg, f"{split}_annotations") or root / "annotations" / f"instances_{split}.json"
    return Path(images), Path(annotations)


SPLITS = ("train", "search", "val")


def search_split_indices(num_images: int, cfg: DataConfig) -> tuple[list[int], list[int]]:
    """``(train, search)`` indices into the training images: a seeded random ``search_fraction`` held out.

    OPANAS scores sub-nets on images it sampled for the purpose (Sec. 3.2.2), never on the images results
    are reported on; the search split is carved out of the training images, the same way for every job
    (super-net, search, standalone arms), so no job trains on what the search scores with. At least one
    image stays on each side when the fraction is positive.
    """
    order = np.random.default_rng([cfg.seed, 0x5EA4C4]).permutation(num_images)
    held = (
        0
        if cfg.search_fraction == 0
        else min(num_images - 1, max(1, round(num_images * cfg.search_fraction)))
    )
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


def _subset(dataset: Dataset, indices: list[int], limit: int | None, seed: int) -> Dataset:
    """``indices`` of ``dataset``, cut to a seeded random ``limit`` of them (not the first ``limit``)."""
    if limit is not None and limit < len(indices):
        picked = np.random.default_rng([seed, 0x11A17]).permutation(len(indices))[:limit]
        indices = sorted(indices[i] for i in picked)
    if len(indices) == len(dataset):
        return dataset
    return Subset(dataset, indices)


def build_dataset(
    cfg: DataConfig, split: str, train_transforms: bool | None = None, masks: bool = False
) -> Dataset:
    """The ``split`` dataset: "train" (training images minus the search split), "search" (the held-out
    part of the training images that candidates are scored on) or "val" (what results are reported on).
    Flips only on the training split by default. ``masks``: instance masks in the targets (Mask R-CNN)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if split == "search" and cfg.search_fraction == 0:
        raise ValueError(
            "data.search_fraction is 0, so there is no search split to score candidates on; set it to the "
            "fraction of training images to hold out (e.g. 0.2)"
        )
    augment = split == "train" if train_transforms is None else train_transforms
    transforms = Compose([RandomHorizontalFlip(cfg.hflip)]) if augment and cfg.hflip > 0 else None
    source = "val" if split == "val" else "train"
    if cfg.format == "voc":
        image_set = cfg.voc_train_set if source == "train" else cfg.voc_val_set
        dataset = VOCDetection(cfg.root, image_set=image_set, transforms=transforms, masks=masks)
    else:
        images, annotations = _coco_paths(cfg, source)
        dataset = CocoDetection(images, annotations, transforms=transforms, masks=masks)
    if split == "val":
        return _subset(dataset, list(range(len(dataset))), cfg.max_val_images, cfg.seed)
    train, search = search_split_indices(len(dataset), cfg)
    if split == "search":
        return _subset(dataset, search, cfg.max_search_images, cfg.seed)
    return _subset(dataset, train, cfg.max_train_images, cfg.seed)


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
