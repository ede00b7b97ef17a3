"""Where a job's data is and how it is split and batched (:class:`DataConfig`).

Ray-free and import-light: the training and search configs nest it, and YAML loading
(``raynas.config.load_yaml``) builds it from its ``data:`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raynas.config import check_ranges


@dataclass
class DataConfig:
    """Where the data is. ``format="digits"`` / ``"scenes"`` generate that embedded dataset into ``root``
    if absent (:mod:`raynas.data.digits`, :mod:`raynas.data.scenes`)."""

    root: str = "data/digits"
    format: Literal["digits", "scenes", "coco", "voc"] = "digits"
    train_images: str | None = None  # default: {root}/train
    train_annotations: str | None = None  # default: {root}/annotations/instances_train.json
    val_images: str | None = None  # default: {root}/val
    val_annotations: str | None = None  # default: {root}/annotations/instances_val.json
    # the test split: what tables report, never read by a search or used to tune (digits have none)
    test_images: str | None = None  # default: {root}/test
    test_annotations: str | None = None  # default: {root}/annotations/instances_test.json
    voc_train_set: str = "trainval"
    voc_val_set: str = "test"
    num_train: int = 1000  # generation (digits, scenes) only
    num_val: int = 200
    num_test: int = 200  # scenes generation only
    image_size: int = 128
    seed: int = 0
    # scenes generation only: the context rules (docs/proxy.md); false labels by local cues (the control)
    context_small: bool = True
    context_large: bool = True
    scenes_layout: str = "outer"  # scenes generation only: scene_layout.LAYOUTS; its DEFAULT_LAYOUT
    # the default data are digits, and a mirrored digit is not that digit; 0.5 is the usual for COCO/VOC
    hflip: float = 0.0
    batch_size: int = 8  # per worker
    loader_workers: int = 0
    # the search split: this fraction of the training images (seeded by ``seed``) is held out of training
    # and is what search candidates are scored on; val stays for reported results only. OPANAS jobs set
    # it (0.2: the super-net, the search and every arm compared with it train on the same images); jobs
    # that search nothing keep every training image
    search_fraction: float = 0.0
    max_train_images: int | None = None  # a seeded random subset of the training images, not the first N
    max_search_images: int | None = None
    max_val_images: int | None = None
    max_test_images: int | None = None

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                "num_train": (1, None),
                "num_val": (1, None),
                "num_test": (1, None),
                "image_size": (32, None),
                "seed": (0, None),
                "hflip": (0.0, 1.0),
                "batch_size": (1, None),
                "loader_workers": (0, None),
                "search_fraction": (0.0, 0.9),
                "max_train_images": (1, None),
                "max_search_images": (1, None),
                "max_val_images": (1, None),
                "max_test_images": (1, None),
            },
            "data.",
        )
