"""The embedded default dataset: real handwritten digits pasted at strongly varying scales.

Scale variation is exactly what OPANAS's feature pyramid and FAD's receptive-field search attack, so the
default dataset makes it the main difficulty while staying small enough to train on a CPU: scikit-learn's
bundled UCI digits (1797 8x8 scans, no download) are upscaled to log-uniform sizes from 8 px to half the
canvas, coloured, and pasted onto noisy canvases. Output is a regular COCO-format dataset, so everything
downstream treats it like COCO.
"""

from __future__ import annotations

import functools
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from raynas.data.annotations import DatasetError
from raynas.data.provenance import claim_output, publish, read_json
from raynas.io import atomic_write_json

MIN_SIDE_PX = 8  # smallest pasted digit (patch height); the largest is image_size // 2
MAX_OBJECTS = 6
MAX_IOU = 0.3  # a new digit is re-placed if its box overlaps an earlier one more than this ...
MAX_COVER = 0.5  # ... or covers more than this fraction of the smaller of the two boxes
PLACEMENT_TRIES = 20
INK_THRESHOLD = 0.3  # alpha above which an upscaled pixel counts as ink (defines the tight box)
MIN_CONTRAST = 120.0  # minimum RGB distance between a digit's colour and the background colour
VAL_EVERY = 5  # every 5th scan of each digit class is held out for the val split
ENTRIES = ("train", "val", "annotations")  # what generate_digits publishes into its root


@functools.cache
def _digit_pools() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Split the 1797 sklearn scans into disjoint train / val pools (stratified, independent of the seed)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    scans = (digits.images.astype(np.float32) / 16.0).clip(0.0, 1.0)
    labels = digits.target.astype(np.int64)
    held_out = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        held_out[np.flatnonzero(labels == digit)[::VAL_EVERY]] = True
    return {"train": (scans[~held_out], labels[~held_out]), "val": (scans[held_out], labels[held_out])}


def _upscale(scan: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear upscaling of an 8x8 intensity scan to an alpha mask (strokes made solid)."""
    resized = Image.fromarray(scan).resize((width, height), Image.Resampling.BILINEAR)
    return (np.asarray(resized, dtype=np.float32) * 1.5).clip(0.0, 1.0)


def _too_close(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    area = (box[2] - box[0]) * (box[3] - box[1])
    for other in others:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        other_area = (other[2] - other[0]) * (other[3] - other[1])
        if inter / (area + other_area - inter) > MAX_IOU or inter / min(area, other_area) > MAX_COVER:
            return True
    return False


def _colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    for _ in range(10):
        colour = rng.uniform(0.0, 255.0, 3)
        if np.linalg.norm(colour - background) >= MIN_CONTRAST:
            return colour
    black, white = np.zeros(3), np.full(3, 255.0)
    return black if np.linalg.norm(background) > np.linalg.norm(white - background) else white


def _render(
    rng: np.random.Generator, size: int, scans: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int, int, int]], list[int], list[np.ndarray]]:
    """One canvas: uint8[size, size, 3], tight xyxy ink boxes (pixel edges), digit labels and instance masks
    (bool[size, size]: the glyph's own ink pixels, ``alpha > INK_THRESHOLD``, so each mask's bounding box is
    its box; a later digit may paint over part of an earlier one, whose mask and box stay whole)."""
    background = rng.uniform(0.0, 255.0, 3)
    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = background
    boxes: list[tuple[int, int, int, int]] = []
    classes: list[int] = []
    masks: list[np.ndarray] = []
    log_min, log_max = math.log(MIN_SIDE_PX), math.log(size // 2)
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _ in range(PLACEMENT_TRIES):
            pick = int(rng.integers(len(scans)))
            height = round(math.exp(rng.uniform(log_min, log_max)))
            width = min(size, max(4, round(height * rng.uniform(0.8, 1.25))))
            alpha = _upscale(scans[pick], width, height)
            rows = np.flatnonzero((alpha > INK_THRESHOLD).any(axis=1))
            cols = np.flatnonzero((alpha > INK_THRESHOLD).any(axis=0))
            if rows.size == 0:
                continue
            left, top = int(rng.integers(size - width + 1)), int(rng.integers(size - height + 1))
            box = (left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1, top + int(rows[-1]) + 1)
            if _too_close(box, boxes):
                continue
            region = canvas[top : top + height, left : left + width]
            region += (_colour(rng, background) - region) * alpha[..., None]
            boxes.append(box)
            classes.append(int(labels[pick]))
            mask = np.zeros((size, size), dtype=bool)
            mask[top : top + height, left : left + width] = alpha > INK_THRESHOLD
            masks.append(mask)
            break
    canvas += rng.normal(0.0, rng.uniform(2.0, 20.0), canvas.shape)
    return canvas.round().clip(0, 255).astype(np.uint8), boxes, classes, masks


def _write_split(
    out_dir: Path, split: str, count: int, image_size: int, seed: int, pool: tuple[np.ndarray, np.ndarray],
    progress: bool,
) -> None:  # fmt: skip
    scans, labels = pool
    split_code = {"train": 0, "val": 1}[split]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    for index in tqdm(range(count), desc=f"digits {split}", disable=not progress):
        # one generator per image: image i does not depend on how many images are generated
        rng = np.random.default_rng([seed, split_code, index])
        pixels, boxes, classes, masks = _render(rng, image_size, scans, labels)
        file_name = f"{index:06d}.png"
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        (out_dir / split / file_name).write_bytes(buffer.getvalue())  # a staging folder: see generate_digits
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
        for (x1, y1, x2, y2), digit, mask in zip(boxes, classes, masks, strict=True):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": digit + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,  # the box's: box and mask AP use the same small/medium/large split
                    "iscrowd": 0,
                    "segmentation": encode_mask(mask),
                }
            )
    info = {
        "description": "raynas digits: scikit-learn's UCI handwritten digits pasted at varying scales",
        "split": split,
        "seed": seed,
        "image_size": image_size,
        "digit_scans": int(len(scans)),
    }
    atomic_write_json(
        out_dir / "annotations" / f"instances_{split}.json",
        {
            "info": info,
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(10)],
        },
    )


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A binary mask [H, W] as COCO compressed RLE (``{"size": [H, W], "counts": str}``), JSON-ready."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _regenerate(root: Path) -> str:
    return (
        f"delete {str(root)!r} (raynas generated it) and run again, or regenerate it with "
        f"`raynas data digits --out {root} --replace` and its settings"
    )


def _annotations(root: Path, split: str) -> dict[str, Any]:
    """A generated annotation file, read back checked: damage is one line naming the file and the fix."""
    path = root / "annotations" / f"instances_{split}.json"
    payload = read_json(path, _regenerate(root))
    if not isinstance(payload.get("info"), dict) or not all(
        isinstance(payload.get(key), list) and all(isinstance(r, dict) for r in payload[key])
        for key in ("images", "annotations")
    ):
        raise DatasetError(
            f"{path} is damaged (edited: 'info', 'images' or 'annotations'); {_regenerate(root)}"
        )
    return payload


def digits_settings(root: str | os.PathLike) -> dict[str, int] | None:
    """The settings a digits dataset at ``root`` was generated with, read back from its annotation files
    (``None`` when there is none): ``{"num_train", "num_val", "image_size", "seed"}``."""
    root = Path(root)
    settings: dict[str, int] = {}
    for split in ("train", "val"):
        if not (root / "annotations" / f"instances_{split}.json").is_file():
            return None
        payload = _annotations(root, split)
        settings.update(image_size=payload["info"].get("image_size"), seed=payload["info"].get("seed"))
        settings[f"num_{split}"] = len(payload["images"])
    return settings


def digits_have_masks(root: str | os.PathLike) -> bool:
    """Whether the digits annotations at ``root`` carry instance masks (raynas before masks wrote none)."""
    for split in ("train", "val"):
        if any("segmentation" not in ann for ann in _annotations(Path(root), split)["annotations"]):
            return False
    return True


def generate_digits(
    out_dir: str | os.PathLike,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    *,
    replace: bool = False,
    what: str = "digits output",
    fix: str = "give a new or empty folder",
) -> Path:
    """Write the digits detection dataset as PNG + COCO JSON and return ``out_dir``.

    Layout: ``out_dir/{train,val}/NNNNNN.png`` and ``out_dir/annotations/instances_{train,val}.json``;
    10 categories named "0".."9" with ids 1..10 (so ``num_classes`` = 11); every annotation has an instance
    mask (``segmentation``, compressed RLE of the glyph's ink pixels). Each image has 1-6 digits of
    log-uniform size (8 px to ``image_size // 2``), random colours on a random background with gaussian
    noise; boxes are tight around the ink, overlaps are capped (IoU <= 0.3). Val images are drawn from
    digit scans never used for train (every 5th scan of each class is held out, whatever the seed), so
    validation measures generalisation to unseen handwriting. The same arguments give byte-identical
    files.

    ``out_dir`` must be missing, empty or raynas's own digits (:mod:`raynas.data.provenance`): anything
    else is refused before a byte is written (``what`` names the flag or key, ``fix`` says what to do);
    digits of other settings are replaced only with ``replace``. The dataset is written into a staging
    folder next to ``out_dir`` and moved into place only when complete, so an interrupted generation
    leaves the previous dataset (or none) intact, never a mix. Other entries of ``out_dir`` (e.g.
    ``pretrained/``) are kept.
    """
    limits = (("num_train", num_train, 1), ("num_val", num_val, 1), ("image_size", image_size, 32))
    for name, value, low in limits:
        if not isinstance(value, int) or value < low:
            raise ValueError(f"generate_digits: {name} must be an integer >= {low}, got {value!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"generate_digits: seed must be a non-negative integer, got {seed!r}")
    settings = {"num_train": num_train, "num_val": num_val, "image_size": image_size, "seed": seed}
    claim_output(out_dir, "digits", settings, replace=replace, what=what, fix=fix)
    out_dir = Path(out_dir).resolve()  # the staging folder must sit on the same filesystem
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    pools = _digit_pools()
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent) as staging:
        staging = Path(staging)
        for split, count in (("train", num_train), ("val", num_val)):
            _write_split(staging, split, count, image_size, seed, pools[split], progress)
        publish(staging, out_dir, ENTRIES, "digits", settings)
    return out_dir


def digit_crops(
    rng: np.random.Generator, count: int, size: int = 32, split: str = "train", min_side: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` single-digit classification crops: uint8 ``[count, size, size, 3]`` and int64 labels.

    The proxy's stand-in for ImageNet pretraining (``raynas pretrain``): one glyph per crop, its height
    log-uniform in ``[min_side, size]``, at a random position, with the detection canvases' random colours
    and gaussian noise. ``split="train"`` draws from the training scans only, so nothing of the detection
    val split leaks into a pretrained body; ``"val"`` draws from the held-out scans (for accuracy only).
    """
    scans, labels = _digit_pools()[split]
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    picks = rng.integers(len(scans), size=count)
    log_min, log_max = math.log(min_side), math.log(size)
    for index, pick in enumerate(picks):
        background = rng.uniform(0.0, 255.0, 3)
        canvas = np.empty((size, size, 3), dtype=np.float32)
        canvas[:] = background
        height = min(size, round(math.exp(rng.uniform(log_min, log_max))))
        width = min(size, max(4, round(height * rng.uniform(0.8, 1.25))))
        left, top = int(rng.integers(size - width + 1)), int(rng.integers(size - height + 1))
        alpha = _upscale(scans[pick], width, height)
        region = canvas[top : top + height, left : left + width]
        region += (_colour(rng, background) - region) * alpha[..., None]
        canvas += rng.normal(0.0, rng.uniform(2.0, 20.0), canvas.shape)
        images[index] = canvas.round().clip(0, 255).astype(np.uint8)
    return images, labels[picks]
