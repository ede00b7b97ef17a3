"""COCO-format detection dataset on pycocotools, with eager annotation checks and lazy image checks.

Annotations are validated once at construction (cheap, and a bad box should fail before training starts);
image files are only opened when an item is loaded, because touching 118k COCO images up front is slow.
:meth:`DetectionDataset.check_files` verifies every image file on demand.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from raynas.data.annotations import DatasetError, load_coco_json, validate_coco_dict
from raynas.data.provenance import generated_root, read_json

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


def _to_rgb_tensor(image: Image.Image) -> torch.Tensor:
    """Any PIL mode -> FloatTensor[3, H, W] in [0, 1]. Alpha is dropped; 16-bit grey keeps its range."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return torch.from_numpy(np.clip(grey, 0.0, 1.0)).expand(3, -1, -1).contiguous()
    if image.mode == "P":
        image = image.convert("RGBA")  # palette transparency goes through RGBA, as Pillow asks
    if image.mode != "RGB":
        image = image.convert("RGB")
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    return pixels.permute(2, 0, 1).contiguous().to(torch.float32).div_(255.0)


class DetectionDataset(Dataset):
    """A detection dataset backed by a pycocotools ``COCO`` index (shared by COCO JSON and VOC XML).

    Item: ``(image FloatTensor[3,H,W] in [0,1], {"boxes": float32[n,4] xyxy, "labels": int64[n],
    "image_id": int})``, plus ``"masks": uint8[n,H,W]`` (instance masks, for Mask R-CNN) when built with
    ``masks=True``; ``labels`` are the category ids. ``iscrowd=1`` annotations stay in ``coco`` (so
    COCOeval ignores detections on them) but are left out of the training targets. Boxes are clipped to
    the image (annotations may overhang by ``BOX_TOLERANCE_PX``); a box left empty by clipping is dropped.

    Attributes: ``coco``, ``image_ids`` (item order), ``num_classes`` (max category id + 1, 0 being the
    background), ``category_names`` (``{category id: name}``), ``image_dir``, ``source``.
    """

    def _index(
        self,
        image_dir: str | os.PathLike,
        data: dict[str, Any],
        source: str,
        transforms: Transform | None,
        image_sources: Mapping[int, str] | None = None,
        drop_empty_boxes: bool = False,
        masks: bool = False,
    ) -> None:
        dropped = validate_coco_dict(data, source, image_sources, drop_empty_boxes)
        if dropped:
            warnings.warn(
                f"{source}: {len(dropped)} zero-size boxes (annotation ids {sorted(dropped)[:10]}) are left "
                "out of the training targets; they stay in the evaluation ground truth",
                stacklevel=3,
            )
        self.image_dir = Path(image_dir)
        self.source = source
        self.transforms = transforms
        self._image_sources = dict(image_sources or {})
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            self.coco.createIndex()
        self.category_names: dict[int, str] = {c["id"]: str(c["name"]) for c in data["categories"]}
        self.num_classes = max(self.category_names) + 1
        self.image_ids: list[int] = [img["id"] for img in data["images"]]
        self.masks = masks
        self._boxes: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._anns: list[list[dict[str, Any]]] = []  # the annotations behind each item's boxes, in order
        for iid in self.image_ids:
            img = self.coco.imgs[iid]
            anns = [a for a in self.coco.imgToAnns.get(iid, []) if not (a["iscrowd"] or a["id"] in dropped)]
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, img["width"])
            xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, img["height"])
            keep = (xyxy[:, 2] > xyxy[:, 0]) & (
                xyxy[:, 3] > xyxy[:, 1]
            )  # a sliver beyond the border is empty
            self._boxes.append(xyxy[keep].astype(np.float32))
            self._labels.append(np.array([a["category_id"] for a in anns], dtype=np.int64).reshape(-1)[keep])
            self._anns.append([a for a, k in zip(anns, keep, strict=True) if k])
        if masks:
            self._check_segmentations()

    def _check_segmentations(self) -> None:
        """Every training annotation needs a ``segmentation`` (polygons or RLE) when masks are asked for."""
        for iid, anns in zip(self.image_ids, self._anns, strict=True):
            for ann in anns:
                if not ann.get("segmentation"):
                    raise DatasetError(
                        f"{self._where(iid)}: image id {iid}, annotation id {ann['id']}: no 'segmentation'; "
                        "instance masks (Mask R-CNN) need polygons or RLE on every annotation (for the "
                        "digits data, generate it again with `raynas data digits --out DIR`)"
                    )

    def load_masks(self, index: int) -> torch.Tensor:
        """Instance masks of item ``index``, uint8 [n, H, W] in the order of its boxes."""
        image_id = self.image_ids[index]
        record = self.coco.imgs[image_id]
        masks = np.zeros((len(self._anns[index]), record["height"], record["width"]), dtype=np.uint8)
        for k, ann in enumerate(self._anns[index]):
            try:
                masks[k] = self.coco.annToMask(ann)
            except (ValueError, TypeError, KeyError, IndexError) as err:
                raise DatasetError(
                    f"{self._where(image_id)}: image id {image_id}, annotation id {ann['id']}: cannot decode "
                    f"its segmentation ({type(err).__name__}: {err}); give polygons [[x1, y1, ...]] or "
                    "RLE {'size': [H, W], 'counts': ...} of the image's size"
                ) from None
        return torch.from_numpy(masks)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _where(self, image_id: int) -> str:
        return self._image_sources.get(image_id, self.source)

    def _open(self, image_id: int) -> Image.Image:
        """Open (header only) and size-check one image; errors name the file, the image id and the fix."""
        record = self.coco.imgs[image_id]
        path = self.image_dir / record["file_name"]
        where = f"{self._where(image_id)}: image id {image_id} ('{record['file_name']}')"
        if not path.is_file():
            raise FileNotFoundError(
                f"{where}: image file {path} not found; check image_dir ({self.image_dir}) or remove the "
                "image from the annotations (check_files() lists every missing image)"
            )
        try:
            image = Image.open(path)
        except (UnidentifiedImageError, OSError) as err:
            raise DatasetError(
                f"{where}: cannot read {path} as an image ({err}); replace the file or remove the image"
            ) from None
        expected = (record["width"], record["height"])
        if image.size != expected:
            image.close()
            raise DatasetError(
                f"{where}: {path} is {image.size[0]}x{image.size[1]} pixels but the annotations say "
                f"{expected[0]}x{expected[1]}; fix width/height in the annotations or export the image again"
            )
        return image

    def load_image(self, index: int) -> torch.Tensor:
        """The decoded image of item ``index`` as FloatTensor[3, H, W] in [0, 1]."""
        image_id = self.image_ids[index]
        with self._open(image_id) as image:
            try:
                image.load()
            except OSError as err:  # truncated or corrupt pixel data behind a valid header
                raise DatasetError(
                    f"{self._where(image_id)}: image id {image_id}: cannot decode {image.filename} ({err}); "
                    "replace the file or remove the image"
                ) from None
            return _to_rgb_tensor(image)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image = self.load_image(index)
        target: Target = {
            "boxes": torch.from_numpy(self._boxes[index].copy()),
            "labels": torch.from_numpy(self._labels[index].copy()),
            "image_id": int(self.image_ids[index]),
        }
        if self.masks:
            target["masks"] = self.load_masks(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def check_files(self) -> int:
        """Verify that every image exists, is readable and has the annotated size; return the count.

        All problems are collected and reported together (first 10 listed): ``FileNotFoundError`` when any
        file is missing, else :class:`DatasetError`. Reads only image headers.
        """
        missing: list[str] = []
        broken: list[str] = []
        for image_id in self.image_ids:
            try:
                self._open(image_id).close()
            except FileNotFoundError as err:
                missing.append(str(err))
            except DatasetError as err:
                broken.append(str(err))
        problems = missing + broken
        if problems:
            listing = "\n  ".join(problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            message = (
                f"{self.source}: {len(problems)} of {len(self.image_ids)} images under {self.image_dir} "
                f"have problems ({len(missing)} missing):\n  {listing}{more}"
            )
            raise (FileNotFoundError if missing else DatasetError)(message)
        return len(self.image_ids)


class CocoDetection(DetectionDataset):
    """A COCO-format dataset: ``image_dir`` holds the files named by ``annotation_file``'s ``file_name``s.

    Annotations are validated at construction (see :mod:`raynas.data.annotations`): malformed JSON,
    missing keys, zero/negative or out-of-image boxes (1 px tolerance), unknown category ids and an empty
    image list raise :class:`DatasetError`. Missing/unreadable image files and a size that disagrees with
    the JSON are reported when the image is loaded, or all at once by :meth:`check_files`.
    ``drop_empty_boxes=True`` tolerates zero-size boxes instead (needed for COCO train2017, which has two):
    they stay in ``coco`` for evaluation, as in the official protocol, and are left out of the targets.
    ``masks=True`` adds instance masks to the targets; every annotation then needs a ``segmentation``.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        annotation_file: str | os.PathLike,
        transforms: Transform | None = None,
        *,
        drop_empty_boxes: bool = False,
        masks: bool = False,
    ) -> None:
        self.annotation_file = Path(annotation_file)
        generated = generated_root(self.annotation_file)
        if generated is None:
            data = load_coco_json(self.annotation_file)
        else:  # raynas wrote this file: damage is fixed by generating it again, not by editing it
            fix = f"raynas generated it in {str(generated)!r}: delete that folder and run again"
            data = read_json(self.annotation_file, fix)
        self._index(
            image_dir, data, str(self.annotation_file), transforms, drop_empty_boxes=drop_empty_boxes,
            masks=masks,
        )  # fmt: skip
