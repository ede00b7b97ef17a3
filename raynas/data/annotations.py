"""Validation of COCO-format annotations: every problem a user can hit becomes one clear error.

A bad box found at step 40,000 of a training run, or a silently mis-scored evaluation, costs far more than
checking every annotation once at construction. Each message names the file, the image id (and file name),
the annotation id, what is wrong and what to do about it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Boxes may overhang the image border by this much (sub-pixel rounding in exported annotations is common;
# real COCO has boxes ending at width + 0.x). Training targets are clipped to the image afterwards.
BOX_TOLERANCE_PX = 1.0


class DatasetError(ValueError):
    """An annotation or image problem; the message names the file, image, annotation and the fix."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def box_problem(x: float, y: float, w: float, h: float, width: int, height: int) -> str | None:
    """Describe what is wrong with box ``[x, y, w, h]`` in a ``width`` x ``height`` image, or ``None``."""
    if w <= 0 or h <= 0:
        return f"has zero or negative size (width {w:g}, height {h:g})"
    tol = BOX_TOLERANCE_PX
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        return (
            f"extends outside the {width}x{height} image (x {x:g}..{x + w:g}, y {y:g}..{y + h:g}; "
            f"boxes may overhang the border by at most {tol:g} px)"
        )
    return None


def load_coco_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a COCO-format JSON file; malformed JSON is reported with its line and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file {path} does not exist; pass the path of a COCO-format instances JSON "
            "(for the embedded dataset run `raynas data digits` first)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err}); is this really a COCO JSON file?") from None
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}; "
            "fix the file there or export the annotations again"
        ) from None
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: the top level is a {type(data).__name__}, expected an object with "
            "'images', 'annotations' and 'categories'"
        )
    return data


def _missing(record: Any, keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if key not in record] if isinstance(record, dict) else list(keys)


def _check_categories(data: dict[str, Any], source: str) -> set[int]:
    categories = data["categories"]
    if not isinstance(categories, list) or not categories:
        raise DatasetError(f"{source}: 'categories' must be a non-empty list of {{'id', 'name'}} objects")
    ids: set[int] = set()
    for index, cat in enumerate(categories):
        missing = _missing(cat, ("id", "name"))
        if missing:
            raise DatasetError(f"{source}: category #{index} is missing key(s) {missing}; add them")
        cid = cat["id"]
        if not _is_int(cid) or cid <= 0:
            raise DatasetError(
                f"{source}: category '{cat['name']}' has id {cid!r}; category ids must be integers >= 1 "
                "(0 is the background class of torchvision detectors), renumber the categories"
            )
        if cid in ids:
            raise DatasetError(f"{source}: category id {cid} appears twice; category ids must be unique")
        ids.add(cid)
    return ids


def _check_images(
    data: dict[str, Any], source: str, image_sources: Mapping[int, str]
) -> dict[int, dict[str, Any]]:
    images = data["images"]
    if not isinstance(images, list):
        raise DatasetError(f"{source}: 'images' must be a list, got {type(images).__name__}")
    if not images:
        raise DatasetError(
            f"{source}: the dataset is empty (no images); check that this is the right annotation file "
            "or image set"
        )
    by_id: dict[int, dict[str, Any]] = {}
    for index, img in enumerate(images):
        missing = _missing(img, ("id", "file_name", "width", "height"))
        if missing:
            found = img if isinstance(img, dict) else {}
            raise DatasetError(
                f"{source}: image record #{index} (id {found.get('id')!r}, file "
                f"'{found.get('file_name')}') is missing key(s) {missing}; every image needs "
                "id, file_name, width and height"
            )
        iid = img["id"]
        if not _is_int(iid):
            raise DatasetError(
                f"{source}: image '{img['file_name']}' has id {iid!r}; image ids must be integers"
            )
        where = image_sources.get(iid, source)
        if iid in by_id:
            raise DatasetError(
                f"{where}: image id {iid} appears twice ('{img['file_name']}'); image ids must be unique"
            )
        for key in ("width", "height"):
            if not _is_int(img[key]) or img[key] <= 0:
                raise DatasetError(
                    f"{where}: image id {iid} ('{img['file_name']}') has {key} {img[key]!r}; "
                    "it must be a positive integer (the image's size in pixels)"
                )
        by_id[iid] = img
    return by_id


def _check_annotations(
    data: dict[str, Any],
    source: str,
    images: dict[int, dict[str, Any]],
    category_ids: set[int],
    image_sources: Mapping[int, str],
    drop_empty_boxes: bool,
) -> set[int]:
    annotations = data["annotations"]
    if not isinstance(annotations, list):
        raise DatasetError(f"{source}: 'annotations' must be a list, got {type(annotations).__name__}")
    seen: set[int] = set()
    dropped: set[int] = set()
    for index, ann in enumerate(annotations):
        missing = _missing(ann, ("id", "image_id", "category_id", "bbox"))
        if missing:
            found = ann if isinstance(ann, dict) else {}
            raise DatasetError(
                f"{source}: annotation #{index} (id {found.get('id')!r}, image id {found.get('image_id')!r}) "
                f"is missing key(s) {missing}; every annotation needs id, image_id, category_id and "
                "bbox [x, y, width, height]"
            )
        aid, iid = ann["id"], ann["image_id"]
        if not _is_int(aid) or aid in seen:
            raise DatasetError(
                f"{source}: annotation #{index} (image id {iid!r}) has id {aid!r}, which is "
                f"{'a duplicate' if _is_int(aid) else 'not an integer'}; "
                "annotation ids must be unique integers"
            )
        seen.add(aid)
        if not _is_int(iid) or iid not in images:
            raise DatasetError(
                f"{source}: annotation id {aid} refers to image id {iid!r}, which is not in 'images'; "
                "add the image record or remove the annotation"
            )
        img = images[iid]
        where = image_sources.get(iid, source)
        prefix = f"{where}: annotation id {aid} on image id {iid} ('{img['file_name']}')"
        if not _is_int(ann["category_id"]) or ann["category_id"] not in category_ids:
            raise DatasetError(
                f"{prefix} has unknown category id {ann['category_id']!r} (known: {sorted(category_ids)}); "
                "add the category to 'categories' or fix the annotation"
            )
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise DatasetError(f"{prefix} has bbox {bbox!r}; expected 4 finite numbers [x, y, width, height]")
        problem = box_problem(*bbox, img["width"], img["height"])
        empty = bbox[2] <= 0 or bbox[3] <= 0
        if problem is not None and not (empty and drop_empty_boxes):
            hint = " (or pass drop_empty_boxes=True to leave such boxes out of training)" if empty else ""
            raise DatasetError(f"{prefix}: box {bbox} {problem}; fix or remove this annotation{hint}")
        if empty:
            dropped.add(aid)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(max(bbox[2], 0) * max(bbox[3], 0)))
    return dropped


def validate_coco_dict(
    data: dict[str, Any],
    source: str,
    image_sources: Mapping[int, str] | None = None,
    drop_empty_boxes: bool = False,
) -> set[int]:
    """Check a COCO-format dict in place, filling in missing ``iscrowd`` (0) and ``area`` (box area).

    ``source`` names the file in messages; ``image_sources`` optionally maps an image id to the file that
    described it (VOC: one XML per image). Raises :class:`DatasetError` on the first problem, except that
    with ``drop_empty_boxes`` zero/negative-size boxes are tolerated (COCO train2017 has two of height 0,
    annotation ids 918 and 2206849): their ids are returned so that the caller leaves them out of training.
    """
    missing = _missing(data, ("images", "annotations", "categories"))
    if missing:
        raise DatasetError(
            f"{source}: missing top-level key(s) {missing}; a COCO instances file has 'images', "
            "'annotations' and 'categories'"
        )
    image_sources = image_sources or {}
    category_ids = _check_categories(data, source)
    images = _check_images(data, source, image_sources)
    return _check_annotations(data, source, images, category_ids, image_sources, drop_empty_boxes)
