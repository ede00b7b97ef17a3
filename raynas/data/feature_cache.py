"""The outputs of a frozen body for every image of a split, computed once and read by every job on the node.

With ``model.cache_features`` (and ``trainable_backbone_layers: 0``) the neck and head train on these
instead of the images, as NAS-FCOS made neck/head search affordable. A cache lives beside the data, in
``{data.root}/features/{split}-{key}/``: one fp16 (or fp32) ``.npy`` per body level ``[N, C, h, w]``, read
through memory maps (the page cache is shared by every worker and actor on a node), the targets, and
``record.json``. The key is a digest of everything the outputs depend on (the body's weights and
structure, the transform's resize and normalisation, the split's images and annotations, the dtype), so
another body or other data gets another folder and a cache is never read for inputs it was not made from;
the record repeats those facts and is checked on every open. A cache is written to a temporary folder and
renamed into place under a file lock, so two workers on one node never both build it and a reader never
sees half of one.

Exactness: one body pass per image equals the batched pass only if every image of the split is padded to
one size after the transform's resize (true of the generated datasets, whose canvas is fixed); a split
where it is not is refused. Images are cached un-augmented, so flips are refused too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from raynas.config import ConfigError
from raynas.io import atomic_write_json, file_lock
from raynas.models.cached import BodyFeatures

FORMAT = 1
DTYPES = ("float16", "float32")
RECORD_FILE = "record.json"
TARGETS_FILE = "targets.pt"
BUILD_BATCH = 16


def features_root(data_root: str | os.PathLike) -> Path:
    """Where the caches of a dataset live: beside it, like its pretrained body."""
    return Path(data_root) / "features"


def body_digest(body: nn.Module) -> str:
    """A digest of a body's structure (its repr names every layer, norm and eps) and of every weight and
    buffer: two bodies with the same digest give the same outputs."""
    digest = hashlib.sha256(repr(body).encode())
    digest.update(repr(getattr(body, "return_layers", None)).encode())
    for name, tensor in sorted(body.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _transform_settings(transform: nn.Module) -> dict[str, Any]:
    """What the detector's transform does to an image before the body sees it."""
    return {
        "min_size": list(transform.min_size),
        "max_size": transform.max_size,
        "image_mean": list(transform.image_mean),
        "image_std": list(transform.image_std),
        "size_divisible": transform.size_divisible,
        "fixed_size": None if transform.fixed_size is None else list(transform.fixed_size),
    }


def _base_and_indices(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The dataset under (nested) ``Subset`` layers and the indices into it, in ``dataset``'s order."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [int(dataset.indices[i]) for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def _annotations_digest(dataset: Dataset) -> str:
    """The split's images (ids, files, sizes), their annotations, in item order, and each image file's
    size and modification time (data generated anew has new files): no pixel is read."""
    base, indices = _base_and_indices(dataset)
    coco = base.coco
    digest = hashlib.sha256()
    for index in indices:
        image_id = base.image_ids[index]
        record = coco.imgs[image_id]
        try:
            stat = os.stat(Path(base.image_dir) / record["file_name"])
            file = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            file = None  # reading it fails later, with the dataset's own message
        entry = [record, coco.imgToAnns.get(image_id, []), file]
        digest.update(json.dumps(entry, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def expected_record(dataset: Dataset, split: str, detector: nn.Module, dtype: str) -> dict[str, Any]:
    """The facts a cache of ``dataset`` through ``detector``'s body must have been made from."""
    if dtype not in DTYPES:
        raise ConfigError(f"model.cache_dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return {
        "format": FORMAT,
        "split": split,
        "images": len(dataset),
        "annotations": _annotations_digest(dataset),
        "body": body_digest(detector.backbone.body),
        "transform": _transform_settings(detector.transform),
        "dtype": dtype,
    }


def cache_folder(data_root: str | os.PathLike, record: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    return features_root(data_root) / f"{record['split']}-{key}"


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / RECORD_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _matches(record: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
    return record is not None and all(record.get(key) == value for key, value in expected.items())


def ensure_feature_cache(
    dataset: Dataset,
    split: str,
    detector: nn.Module,
    data_root: str | os.PathLike,
    dtype: str = "float16",
    progress: bool = False,
) -> Path:
    """The cache of ``dataset`` (the ``split`` images, un-augmented) through ``detector``'s frozen body,
    made when absent or stale; returns its folder. The body runs on the device it is on, in eval mode,
    without gradients; the detector gets its training flag back."""
    _refuse_augmentation(dataset)
    expected = expected_record(dataset, split, detector, dtype)
    return _ensure(dataset, detector, data_root, expected, progress)


def _ensure(
    dataset: Dataset,
    detector: nn.Module,
    data_root: str | os.PathLike,
    expected: dict[str, Any],
    progress: bool,
) -> Path:
    folder = cache_folder(data_root, expected)
    if _matches(_read_record(folder), expected):
        return folder  # there and made from these inputs (no lock: the data folder may be read-only)
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if not _matches(_read_record(folder), expected):
            if progress:
                print(f"[raynas] caching the body's outputs for {len(dataset)} {expected['split']} images")
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
            try:
                _write_cache(tmp, dataset, detector, expected)
                if folder.exists():  # a record that does not match: rebuilt, never read
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return folder


def _refuse_augmentation(dataset: Dataset) -> None:
    base, _ = _base_and_indices(dataset)
    if getattr(base, "transforms", None) is not None:
        raise ConfigError(
            "model.cache_features caches each image once, un-augmented, so it cannot train on flipped "
            "images: set data.hflip: 0, or model.cache_features: false"
        )


def _batches(dataset: Dataset) -> Iterator[tuple[list[torch.Tensor], list[dict[str, Any]]]]:
    for start in range(0, len(dataset), BUILD_BATCH):
        items = [dataset[i] for i in range(start, min(start + BUILD_BATCH, len(dataset)))]
        yield [image for image, _ in items], [target for _, target in items]


@torch.inference_mode()
def _write_cache(folder: Path, dataset: Dataset, detector: nn.Module, record: dict[str, Any]) -> None:
    transform, body = detector.transform, detector.backbone.body
    device = next(body.parameters()).device
    was_training = detector.training
    detector.eval()
    try:
        arrays: dict[str, np.ndarray] = {}
        targets: list[dict[str, Any]] = []
        image_sizes: list[list[int]] = []
        original_sizes: list[list[int]] = []
        padded: list[int] | None = None
        for images, batch_targets in _batches(dataset):
            image_list, _ = transform([image.to(device) for image in images])
            for image, size, target in zip(images, image_list.image_sizes, batch_targets, strict=True):
                own = [_round_up(s, transform.size_divisible) for s in size]
                padded = padded or own
                if own != padded:
                    raise ConfigError(
                        f"model.cache_features: image id {target['image_id']} of the {record['split']} split "
                        f"is padded to {own[0]}x{own[1]} after resizing, others to {padded[0]}x{padded[1]}; "
                        "the cache needs one image size: resize the data or set model.cache_features: false"
                    )
                image_sizes.append(list(size))
                original_sizes.append(list(image.shape[-2:]))
                targets.append({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in target.items()})
            start = len(targets) - len(images)
            for name, level in body(image_list.tensors).items():
                values = level.float().cpu().numpy().astype(record["dtype"])
                if not np.isfinite(values).all():
                    raise ConfigError(
                        f"model.cache_features: body level {name} overflows {record['dtype']} on the "
                        f"{record['split']} split; set model.cache_dtype: float32"
                    )
                if name not in arrays:
                    arrays[name] = np.lib.format.open_memmap(
                        folder / f"level_{name}.npy", mode="w+", dtype=values.dtype,
                        shape=(len(dataset), *values.shape[1:]),
                    )  # fmt: skip
                arrays[name][start : start + len(images)] = values
        for array in arrays.values():
            array.flush()
        torch.save(targets, folder / TARGETS_FILE)
        atomic_write_json(
            folder / RECORD_FILE,
            {
                **record,
                "levels": {name: list(array.shape[1:]) for name, array in arrays.items()},
                "padded_size": padded,
                "image_sizes": image_sizes,
                "original_sizes": original_sizes,
            },
        )
    finally:
        detector.train(was_training)


def _round_up(value: int, divisor: int) -> int:
    return -(-int(value) // divisor) * divisor


class FeatureDataset(Dataset):
    """A cached split: item ``i`` is ``(BodyFeatures, target)`` of the split's image ``i`` (fp16 levels
    stay fp16 until the model widens them). ``coco`` and ``num_classes`` are the image dataset's, so
    evaluation and class counts work as on images. The level files are opened lazily in each process
    (a loader worker maps them itself instead of receiving copies)."""

    def __init__(self, folder: str | os.PathLike, images: Dataset, expected: dict[str, Any]):
        self.folder = Path(folder)
        record = _read_record(self.folder)
        if not _matches(record, expected):
            differ = sorted(k for k, v in expected.items() if record is None or record.get(k) != v)
            raise ValueError(
                f"feature cache {str(self.folder)!r} was not made from this job's inputs (differs in "
                f"{differ}); delete the folder and run the job again to rebuild it"
            )
        base, _ = _base_and_indices(images)
        self.coco, self.num_classes = base.coco, base.num_classes
        self.category_names = getattr(base, "category_names", None)
        self.record = record
        self.targets = torch.load(self.folder / TARGETS_FILE, weights_only=False)
        self._levels: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.record["images"]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_levels": None}

    def __getitem__(self, index: int) -> tuple[BodyFeatures, dict[str, Any]]:
        if self._levels is None:
            self._levels = {
                name: np.load(self.folder / f"level_{name}.npy", mmap_mode="r")
                for name in self.record["levels"]
            }
        levels = {name: torch.from_numpy(np.array(array[index])) for name, array in self._levels.items()}
        record = self.record
        features = BodyFeatures(
            levels,
            tuple(record["image_sizes"][index]),
            tuple(record["padded_size"]),
            tuple(record["original_sizes"][index]),
        )
        target = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in self.targets[index].items()}
        return features, target


def feature_dataset(
    dataset: Dataset,
    split: str,
    detector: nn.Module,
    data_root: str | os.PathLike,
    dtype: str = "float16",
    progress: bool = False,
) -> FeatureDataset:
    """``dataset`` (the ``split`` images) as its frozen body's cached outputs, made first if missing."""
    _refuse_augmentation(dataset)
    expected = expected_record(dataset, split, detector, dtype)
    return FeatureDataset(_ensure(dataset, detector, data_root, expected, progress), dataset, expected)
