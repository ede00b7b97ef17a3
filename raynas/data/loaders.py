"""Datasets and loaders from a :class:`DataConfig` (shared by training jobs and scorer actors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from raynas.data.coco import CocoDetection
from raynas.data.config import DataConfig
from raynas.data.digits import digits_have_masks, generate_digits
from raynas.data.provenance import claim_output
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
    if cfg.format == "scenes":
        return _ensure_scenes(cfg, root, progress)
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

    claim = {"what": "data.root", "fix": (
        "point data.root at another folder (new or empty), or set data.num_train/num_val/image_size/seed "
        "to match the digits there; to train on your own data there, set data.format: coco or voc"
    )}  # fmt: skip

    def ready() -> bool:  # a folder raynas did not make is refused here, before anything is written
        present = claim_output(root, "digits", wanted, replace=False, **claim)
        return present and (not masks or digits_have_masks(root))

    if ready():
        return root  # there, and generated with these settings (no lock: the folder may be read-only)
    with file_lock(root.parent / f".{root.name}.lock"):
        if not ready():
            generate_digits(root, **wanted, progress=progress, **claim)
    return root


def _ensure_scenes(cfg: DataConfig, root: Path, progress: bool) -> Path:
    """The scenes data (:mod:`raynas.data.scenes`, always with masks) at ``root``, generated under a file
    lock unless there with ``cfg``'s settings; anything else at ``root`` is refused."""
    from raynas.data.scenes import KIND, generate_scenes, scenes_settings

    counts = (cfg.num_train, cfg.num_val, cfg.num_test)
    wanted = scenes_settings(
        *counts, cfg.image_size, cfg.seed, cfg.context_small, cfg.context_large, cfg.scenes_layout
    )
    claim = {"what": "data.root", "fix": (
        "point data.root at another folder (new or empty), or set data.num_train/num_val/num_test/image_size/"
        "seed/context_small/context_large/scenes_layout to match the scenes there"
    )}  # fmt: skip
    if claim_output(root, KIND, wanted, replace=False, **claim):
        return root  # there, and generated with these settings (no lock: the folder may be read-only)
    with file_lock(root.parent / f".{root.name}.lock"):
        generate_scenes(root, **wanted, progress=progress, **claim)  # returns at once if made meanwhile
    return root


def _coco_paths(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    root = Path(cfg.root)
    images = getattr(cfg, f"{split}_images") or root / split
    annotations = getattr(cfg, f"{split}_annotations") or root / "annotations" / f"instances_{split}.json"
    return Path(images), Path(annotations)


SPLITS = ("train", "search", "val", "test")


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


def has_test_split(cfg: DataConfig) -> bool:
    """Whether the data have a test split of their own (scenes; COCO with ``data.test_annotations``). The
    digits proxy and Pascal VOC have none: their tables report val (VOC's val *is* its test set)."""
    if cfg.format in ("digits", "voc"):
        return False
    return cfg.format == "scenes" or cfg.test_annotations is not None


def build_dataset(
    cfg: DataConfig, split: str, train_transforms: bool | None = None, masks: bool = False
) -> Dataset:
    """The ``split`` dataset: "train" (training images minus the search split), "search" (the held-out
    part of the training images that candidates are scored on), "val" (choices while building) or "test"
    (what tables report; its own images, never part of train, search or val). Flips only on the training
    split by default. ``masks``: instance masks in the targets (Mask R-CNN)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if split == "search" and cfg.search_fraction == 0:
        raise ValueError(
            "data.search_fraction is 0, so there is no search split to score candidates on; set it to the "
            "fraction of training images to hold out (e.g. 0.2)"
        )
    augment = split == "train" if train_transforms is None else train_transforms
    transforms = Compose([RandomHorizontalFlip(cfg.hflip)]) if augment and cfg.hflip > 0 else None
    source = split if split in ("val", "test") else "train"
    if split == "test" and cfg.format in ("digits", "voc"):
        raise ValueError(
            f"data.format {cfg.format} has no test split (digits: train/val only; Pascal VOC: its test set "
            "is data.voc_val_set); use data.format: scenes, or coco with data.test_annotations"
        )
    if cfg.format == "voc":
        image_set = cfg.voc_train_set if source == "train" else cfg.voc_val_set
        dataset = VOCDetection(cfg.root, image_set=image_set, transforms=transforms, masks=masks)
    else:
        images, annotations = _coco_paths(cfg, source)
        dataset = CocoDetection(images, annotations, transforms=transforms, masks=masks)
    if split in ("val", "test"):
        return _subset(dataset, list(range(len(dataset))), getattr(cfg, f"max_{split}_images"), cfg.seed)
    train, search = search_split_indices(len(dataset), cfg)
    if split == "search":
        return _subset(dataset, search, cfg.max_search_images, cfg.seed)
    return _subset(dataset, train, cfg.max_train_images, cfg.seed)


def base_dataset(dataset: Dataset) -> Dataset:
    """Unwrap ``Subset`` layers to the dataset that carries ``coco`` and ``num_classes``."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _process_group() -> tuple[int, int]:
    """``(rank, world_size)`` of the current torch.distributed process group; ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int = 0,
    seed: int = 0,
    shard: tuple[int, int] | None = None,
) -> DataLoader:
    """A detection loader. ``shuffle=True`` makes a training loader whose order comes from ``seed`` (the run
    seed) on every world size: in a distributed run it reads one rank's share through a
    ``DistributedSampler`` seeded with ``seed`` (the training loop calls its ``set_epoch`` every epoch).

    The sampler is built here because Ray's ``prepare_data_loader`` would put in one of seed 0: with 2
    workers, runs of seeds 0/1/2 then saw the same data order and their spread understated the
    seed-to-seed variance (issue 27). ``shard``: ``(rank, world_size)`` whose share a shuffled loader reads;
    by default the current process group's, ``(0, 1)`` outside one. An unshuffled loader (evaluation,
    scoring) reads the whole dataset in order on any rank.
    """
    generator = torch.Generator().manual_seed(seed)
    rank, world_size = shard if shard is not None else _process_group()
    sampler = None
    if shuffle and world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=detection_collate,
        generator=generator,
        drop_last=False,
    )
