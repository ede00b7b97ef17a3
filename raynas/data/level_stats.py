"""What an FCOS detector will see of a COCO-format split: positives per pyramid level, sizes, classes.

A neck or a level-shared head can only matter where the positives are spread over the pyramid: on the
digits proxy 99.5 % of them fell on P3 (docs/proxy.md). The shares here come from torchvision's own FCOS
matcher on the anchors a real detector generates: a detector is built with
:func:`raynas.models.build_detector` and the given anchor sizes, its ``transform`` sizes the input (and
torchvision's ``resize_boxes`` the boxes) as in training, its ``anchor_generator`` lays out the locations
on the feature maps its body produces, and ``FCOS.compute_loss`` (torchvision's code, not a copy) matches
them; only the head's loss is left out.
Ray-free: it reads annotation files, never images.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torchvision.models.detection import FCOS
from torchvision.models.detection.transform import resize_boxes

from raynas.data.annotations import load_coco_json, validate_coco_dict

LEVELS = ("P3", "P4", "P5", "P6", "P7")
SIZE_BANDS = (("small (< 32 px)", 0, 32), ("medium (32-96 px)", 32, 96), ("large (>= 96 px)", 96, math.inf))
FINE_EDGES = (0, 8, 16, 32, 64, 96, 128, 192, 256, math.inf)  # px of sqrt(box area), as COCO's areas


class _Matches:
    """Stands in for the FCOS head: torchvision's ``FCOS.compute_loss`` hands it the matches it made."""

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs) -> list[torch.Tensor]:
        return matched_idxs


def feature_shapes(model: FCOS, padded: tuple[int, int]) -> list[tuple[int, int]]:
    """The (h, w) of every level the model's body + neck make of a batch padded to ``padded`` (h, w)."""
    with torch.no_grad():
        return [tuple(f.shape[-2:]) for f in model.backbone(torch.zeros(1, 3, *padded)).values()]


def fcos_matches(
    model: FCOS,
    image_size: tuple[int, int],
    boxes: list[torch.Tensor],
    shapes: dict[tuple[int, int], list[tuple[int, int]]] | None = None,
) -> tuple[list[torch.Tensor], list[int]]:
    """torchvision's FCOS matching for images of ``image_size`` (h, w) holding ``boxes`` (xyxy, image px).

    Returns one ``matched_idxs`` per image (a box index per location, -1 where none; locations ordered
    P3..P7 as in torchvision) and the number of locations per level. Images of one size share their
    resize and their locations, so the model's transform and anchor generator run once, on a blank image,
    and torchvision's ``resize_boxes`` scales the boxes as the transform would. ``shapes``: a cache of
    :func:`feature_shapes` by padded size (only the shapes of the body's maps matter to the anchors)."""
    shapes = {} if shapes is None else shapes
    with torch.no_grad():
        image_list, _ = model.transform([torch.zeros(3, *image_size)])
        padded = tuple(image_list.tensors.shape[-2:])
        if padded not in shapes:
            shapes[padded] = feature_shapes(model, padded)
        anchors = model.anchor_generator(image_list, [torch.zeros(1, 1, *shape) for shape in shapes[padded]])[
            0
        ]
    resized = image_list.image_sizes[0]
    targets = [{"boxes": resize_boxes(b.reshape(-1, 4).float(), image_size, resized)} for b in boxes]
    per_level = [h * w for h, w in shapes[padded]]
    detector = SimpleNamespace(center_sampling_radius=model.center_sampling_radius, head=_Matches())
    return FCOS.compute_loss(detector, targets, {}, [anchors] * len(boxes), per_level), per_level


def _xyxy(anns: list[dict[str, Any]]) -> torch.Tensor:
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)


def _band(side: float) -> str:
    return next(name for name, low, high in SIZE_BANDS if low <= side < high)


def _histogram(values: list[float], edges: Sequence[float]) -> dict[str, int]:
    counts = {}
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        name = f">= {low:g} px" if math.isinf(high) else f"{low:g}-{high:g} px"
        counts[name] = sum(low <= v < high for v in values)
    return counts


def default_anchors(annotations: str | os.PathLike, min_size: int) -> tuple[float, ...]:
    """The FCOS anchor sizes a job would use on ``annotations`` at ``min_size``: the scenes recipe for
    scenes raynas generated (:func:`raynas.data.scenes.scenes_anchor_sizes`), else torchvision's scaled
    to the input size (:func:`raynas.models.default_anchor_sizes`)."""
    from raynas.data.provenance import read_marker
    from raynas.data.scenes import KIND, scenes_anchor_sizes
    from raynas.models import default_anchor_sizes

    marker = read_marker(Path(annotations).absolute().parent.parent)
    if marker is not None and marker["generator"] == KIND:
        return scenes_anchor_sizes(min_size)
    return tuple(level[0] for level in default_anchor_sizes("fcos", min_size))


class _Tally:
    """Positives per level, objects per level, objects without a positive, object sizes."""

    def __init__(self) -> None:
        self.positives = [0] * len(LEVELS)
        self.objects_on = [0] * len(LEVELS)
        self.unmatched: Counter[str] = Counter()
        self.sides: list[float] = []

    def add(self, anns: list[dict[str, Any]], matched: torch.Tensor, per_level: list[int]) -> None:
        start = 0
        for level, count in enumerate(per_level):
            on_level = matched[start : start + count]
            self.positives[level] += int((on_level >= 0).sum())
            self.objects_on[level] += len(set(on_level[on_level >= 0].tolist()))
            start += count
        hit = set(matched[matched >= 0].tolist())
        for index, ann in enumerate(anns):
            side = math.sqrt(ann["bbox"][2] * ann["bbox"][3])
            self.sides.append(side)
            if index not in hit:
                self.unmatched[_band(side)] += 1


def level_statistics(
    annotations: str | os.PathLike,
    anchor_sizes: Sequence[float] | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    batch: int = 32,
) -> dict[str, Any]:
    """The statistics of one COCO instances file (see the module doc), JSON-ready.

    ``anchor_sizes``: one FCOS anchor size per level P3..P7 (default :func:`default_anchors`);
    ``min_size``/``max_size``: the detector's resize (default: the images' own size, i.e. no resize)."""
    from raynas.models import build_detector

    path = Path(annotations)
    data = load_coco_json(path)
    dropped = validate_coco_dict(data, str(path), drop_empty_boxes=True)
    sizes = {(img["height"], img["width"]) for img in data["images"]}
    min_size = min_size or min(min(s) for s in sizes)
    max_size = max_size or max(max(max(s) for s in sizes), min_size)
    anchor_sizes = default_anchors(path, min_size) if anchor_sizes is None else anchor_sizes
    model = build_detector(
        "fcos", num_classes=2, min_size=min_size, max_size=max_size, out_channels=64,
        anchor_sizes=list(anchor_sizes),
    ).eval()  # fmt: skip
    by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        if ann["id"] not in dropped and not ann.get("iscrowd", 0):
            by_image[ann["image_id"]].append(ann)
    tally, shapes = _Tally(), {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors of a few thousand values: threads only cost (8x the CPU time here)
    try:
        for shape in sorted(sizes):
            group = [by_image[img["id"]] for img in data["images"] if (img["height"], img["width"]) == shape]
            for start in range(0, len(group), batch):
                anns = group[start : start + batch]
                matches, per_level = fcos_matches(model, shape, [_xyxy(image) for image in anns], shapes)
                for image, matched in zip(anns, matches, strict=True):
                    tally.add(image, matched, per_level)
    finally:
        torch.set_num_threads(threads)
    total, num_objects = max(1, sum(tally.positives)), len(tally.sides)
    names = {c["id"]: c["name"] for c in data["categories"]}
    return {
        "annotations": str(path),
        "images": len(data["images"]),
        "objects": num_objects,
        "anchor_sizes": [float(a) for a in anchor_sizes],
        "min_size": min_size,
        "max_size": max_size,
        "positive_locations": dict(zip(LEVELS, tally.positives, strict=True)),
        "positive_share": {lv: p / total for lv, p in zip(LEVELS, tally.positives, strict=True)},
        "objects_with_positives_on": dict(zip(LEVELS, tally.objects_on, strict=True)),
        "objects_without_positive": sum(tally.unmatched.values()),
        "objects_without_positive_share": sum(tally.unmatched.values()) / max(1, num_objects),
        "objects_without_positive_by_size": {name: tally.unmatched[name] for name, _, _ in SIZE_BANDS},
        "size_bands": {name: sum(lo <= s < hi for s in tally.sides) for name, lo, hi in SIZE_BANDS},
        "size_histogram": _histogram(tally.sides, FINE_EDGES),
        "small_share": sum(s < 32 for s in tally.sides) / max(1, num_objects),
        "classes": {
            names[c]: n for c, n in sorted(Counter(a["category_id"] for a in data["annotations"]).items())
        },
    }


def format_statistics(stats: dict[str, Any]) -> str:
    """A short human-readable table of :func:`level_statistics`."""
    lines = [
        f"{stats['annotations']}: {stats['images']} images, {stats['objects']} objects; FCOS anchor sizes "
        f"{stats['anchor_sizes']} at min_size {stats['min_size']}",
        "positive locations per level (torchvision's FCOS matcher):",
    ]
    for level in LEVELS:
        share, count = stats["positive_share"][level], stats["positive_locations"][level]
        objects = stats["objects_with_positives_on"][level]
        lines.append(f"  {level}: {share:6.1%}  ({count} locations, {objects} objects)")
    lines.append(
        f"objects without a positive location: {stats['objects_without_positive_share']:.1%} "
        f"{stats['objects_without_positive_by_size']}"
    )
    lines.append(
        f"object sizes (sqrt box area): {stats['size_bands']} ({stats['small_share']:.1%} under 32 px)"
    )
    lines.append(f"  finer: {stats['size_histogram']}")
    lines.append(f"classes ({len(stats['classes'])}): {stats['classes']}")
    return "\n".join(lines)
