"""Pascal VOC (XML) detection dataset, served through the same COCO index so evaluation is identical.

Layout: ``root/Annotations/<id>.xml``, ``root/JPEGImages/<file>``, ``root/ImageSets/Main/<image_set>.txt``.
VOC boxes are 1-based and inclusive; they become 0-based pixel-edge boxes as ``(xmin - 1, ymin - 1, xmax,
ymax)``, so a VOC box covering pixels 1..10 is 10 px wide (the usual conversion, as in detectron2).
``difficult`` objects are kept in the ground truth with ``iscrowd=1`` (COCOeval neither rewards nor
penalises detections on them, close to VOC's rule) and are left out of the training targets.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raynas.data.annotations import DatasetError, box_problem
from raynas.data.coco import DetectionDataset, Transform

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


def _read_ids(set_file: Path) -> list[str]:
    if not set_file.is_file():
        main = set_file.parent
        sets = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
        raise FileNotFoundError(
            f"VOC image set file {set_file} not found (image sets found there: {sets or 'none'}); "
            "check root and image_set"
        )
    return [line.split()[0] for line in set_file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _number(node: ET.Element, key: str, xml_file: Path, what: str) -> float:
    text = node.findtext(key)
    try:
        return float(text.strip())  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise DatasetError(
            f"{xml_file}: {what} has {'no' if text is None else 'a non-numeric'} <{key}> ({text!r}); "
            "fix the XML"
        ) from None


_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


class VOCDetection(DetectionDataset):
    """Pascal VOC XML annotations with the item format of :class:`~raynas.data.CocoDetection`.

    Category ids are ``1..len(class_names)`` in ``class_names`` order; image ids are ``1..N`` in image-set
    order (the VOC name is kept as ``voc_id`` in ``coco.imgs`` and in ``self.voc_ids``). Errors name the
    XML file and the object index: malformed XML (line, column), unknown class names, missing or
    non-numeric fields, zero-size or out-of-image boxes (1 px tolerance).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_set: str = "train",
        class_names: Sequence[str] = VOC_CLASSES,
        transforms: Transform | None = None,
        masks: bool = False,
    ) -> None:
        if masks:
            raise DatasetError(
                f"{root}: Pascal VOC detection annotations hold boxes only; instance masks (Mask R-CNN) need "
                "a COCO-format dataset whose annotations have 'segmentation'"
            )
        self.root = Path(root)
        self.class_names = tuple(class_names)
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be non-empty and unique, got {list(class_names)}")
        set_file = self.root / "ImageSets" / "Main" / f"{image_set}.txt"
        self.voc_ids = _read_ids(set_file)
        category_of = {name: index + 1 for index, name in enumerate(self.class_names)}
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        image_sources: dict[int, str] = {}
        for image_id, voc_id in enumerate(self.voc_ids, start=1):
            xml_file = self.root / "Annotations" / f"{voc_id}.xml"
            image, objects = self._parse(xml_file, voc_id, category_of)
            images.append({"id": image_id, **image})
            image_sources[image_id] = str(xml_file)
            for obj in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
        data = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": cid, "name": name} for name, cid in category_of.items()],
        }
        self._index(self.root / "JPEGImages", data, str(set_file), transforms, image_sources)

    def _parse(
        self, xml_file: Path, voc_id: str, category_of: dict[str, int]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One XML file -> (COCO image record without id, COCO annotations without ids)."""
        if not xml_file.is_file():
            raise FileNotFoundError(
                f"VOC annotation {xml_file} not found (listed in the image set); add it or remove '{voc_id}' "
                "from the image set"
            )
        try:
            root = ET.parse(xml_file).getroot()
        except ET.ParseError as err:
            line, column = err.position
            raise DatasetError(
                f"{xml_file}: malformed XML at line {line}, column {column} ({str(err).split(': line')[0]}); "
                "fix or regenerate the file"
            ) from None
        size = root.find("size")
        if size is None:
            raise DatasetError(
                f"{xml_file}: no <size> element; add <size><width>W</width><height>H</height></size>"
            )
        width = int(_number(size, "width", xml_file, "<size>"))
        height = int(_number(size, "height", xml_file, "<size>"))
        file_name = (root.findtext("filename") or f"{voc_id}.jpg").strip()
        objects = []
        for index, obj in enumerate(root.findall("object")):
            what = f"object #{index}"
            name = (obj.findtext("name") or "").strip()
            if name not in category_of:
                raise DatasetError(
                    f"{xml_file}: {what} has class name '{name}', which is not one of the "
                    f"{len(category_of)} class_names {list(category_of)}; pass class_names including it "
                    "or fix the name"
                )
            box = obj.find("bndbox")
            if box is None:
                raise DatasetError(
                    f"{xml_file}: {what} ('{name}') has no <bndbox>; add it or remove the object"
                )
            xmin, ymin, xmax, ymax = (_number(box, key, xml_file, what) for key in _BOX_KEYS)
            x, y, w, h = xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1
            problem = box_problem(x, y, w, h, width, height)
            if problem is not None:
                raise DatasetError(
                    f"{xml_file}: {what} ('{name}', VOC box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} "
                    f"ymax={ymax:g}) {problem}; fix or remove this object"
                )
            difficult = _number(obj, "difficult", xml_file, what) if obj.find("difficult") is not None else 0
            objects.append(
                {
                    "category_id": category_of[name],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 1 if difficult else 0,
                }
            )
        image = {"file_name": file_name, "width": width, "height": height, "voc_id": voc_id}
        return image, objects
