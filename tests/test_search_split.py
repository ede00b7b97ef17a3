"""The search split: held out of the training images in every job, never the val split."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_data import TINY_DIGITS

from raynas.data.config import DataConfig
from raynas.data.loaders import build_dataset, search_split_indices


def image_ids(dataset) -> set[int]:
    return {int(dataset[i][1]["image_id"]) for i in range(len(dataset))}


def test_search_split_is_disjoint_from_train_and_val(tiny_digits: Path) -> None:
    cfg = DataConfig(root=str(tiny_digits), **TINY_DIGITS, search_fraction=0.25)
    train, search, val = (build_dataset(cfg, split) for split in ("train", "search", "val"))
    assert len(train) == 6 and len(search) == 2 and len(val) == 4
    assert not image_ids(train) & image_ids(search)
    assert image_ids(train) | image_ids(search) == set(range(1, 9))  # every training image, once
    # val is read from its own folder and annotation file; the search split from the training ones
    assert val.image_dir == tiny_digits / "val" and search.dataset.image_dir == tiny_digits / "train"


def test_search_split_depends_on_the_seed_only() -> None:
    a = search_split_indices(100, DataConfig(seed=0, search_fraction=0.2))
    assert a == search_split_indices(100, DataConfig(seed=0, search_fraction=0.2))
    assert a != search_split_indices(100, DataConfig(seed=1, search_fraction=0.2))
    assert search_split_indices(100, DataConfig()) == (list(range(100)), [])  # default: no search split
    train, search = a
    assert len(search) == 20 and sorted(train + search) == list(range(100))


def test_max_train_images_is_a_seeded_random_subset(tiny_digits: Path) -> None:
    cfg = DataConfig(root=str(tiny_digits), **TINY_DIGITS, search_fraction=0.25, max_train_images=3)
    subset = build_dataset(cfg, "train")
    full_train, _ = search_split_indices(8, cfg)
    assert len(subset) == 3 and set(subset.indices) < set(full_train)
    firsts = [set(build_dataset(DataConfig(**{**vars(cfg), "seed": s}), "train").indices) for s in range(4)]
    assert len({frozenset(f) for f in firsts}) > 1  # not always the first three
    assert set(subset.indices) != set(full_train[:3]) or firsts[1] != firsts[0]


def test_no_search_split_is_a_clear_error(tiny_digits: Path) -> None:
    with pytest.raises(ValueError, match="search_fraction is 0"):
        build_dataset(DataConfig(root=str(tiny_digits), **TINY_DIGITS, search_fraction=0.0), "search")
