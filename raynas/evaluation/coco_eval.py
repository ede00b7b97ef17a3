"""COCO box and mask mAP of a torchvision-style detector with pycocotools ``COCOeval``.

Box metrics are named ``AP``, ``AP50``, ..., mask metrics (``iou_types=("bbox", "segm")``, Mask R-CNN)
``mask_AP``, ``mask_AP50``, ...; predicted masks are thresholded at 0.5 and RLE-encoded
(``pycocotools.mask.encode``), as torchvision's reference evaluation does.

Metric convention: values in [0, 1]; ``float("nan")`` where COCOeval reports -1, i.e. the evaluated images
hold no ground-truth object at all (AP, AP50, AP75) or none of that size (APs < 32^2 <= APm < 96^2 <= APl
pixels of area). An absent size is "undefined", not "missed": averaging it as 0 would punish a model for
objects that are not there. A model with no detections on images that do hold objects scores 0.0.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("bbox", "segm")
MASK_PREFIX = "mask_"  # segm metrics: mask_AP, mask_AP50, ...
MASK_THRESHOLD = 0.5


def _results_coco(coco_gt: COCO, detections: list[dict[str, Any]]) -> COCO:
    """Detections as a COCO object; an empty one by hand, since ``COCO.loadRes([])`` raises IndexError."""
    if detections:
        return coco_gt.loadRes([dict(det) for det in detections])  # loadRes edits the dicts it gets
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def coco_metrics_from_detections(
    coco_gt: COCO,
    detections: list[dict[str, Any]],
    image_ids: Iterable[int],
    max_detections: int = 100,
    iou_type: str = "bbox",
) -> dict[str, float]:
    """COCO metrics of ``detections`` on the images ``image_ids`` of ``coco_gt``.

    ``detections``: COCO result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, or
    with ``"segmentation"`` (RLE) instead of ``"bbox"`` for ``iou_type="segm"``.
    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` (NaN convention: see the module docstring).
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    image_ids = sorted({int(i) for i in image_ids})
    if not image_ids:
        raise ValueError("no image ids to evaluate: the loader yielded no images")
    unknown = sorted(set(image_ids) - set(coco_gt.getImgIds()))
    unknown_det = sorted({int(d["image_id"]) for d in detections} - set(coco_gt.getImgIds()))
    if unknown or unknown_det:
        raise ValueError(
            f"image ids {(unknown or unknown_det)[:10]} are not in the ground-truth COCO annotations; "
            "evaluate with the dataset the loader reads from"
        )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = _results_coco(coco_gt, detections)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.params.imgIds = image_ids
        evaluator.params.maxDets = [1, 10, max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {
        name: float("nan") if value < 0 else float(value)
        for name, value in zip(METRIC_NAMES, evaluator.stats[:6], strict=True)
    }


def _base_coco_dataset(dataset: Dataset) -> Dataset:
    """Unwrap (nested) ``Subset``s down to the dataset that holds the ground truth ``coco``."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if not isinstance(getattr(dataset, "coco", None), COCO):
        raise ValueError(
            f"{type(dataset).__name__} has no pycocotools COCO ground truth in .coco; evaluate_coco needs a "
            "COCO-format dataset (raynas.data.CocoDetection) or a Subset of one"
        )
    return dataset


def _to_detections(
    output: dict[str, torch.Tensor], image_id: int, max_detections: int
) -> list[dict[str, Any]]:
    """One image's torchvision output (xyxy boxes in original pixels) as COCO results (xywh)."""
    scores = output["scores"].detach().float().cpu()
    order = scores.argsort(descending=True)[:max_detections]
    boxes = output["boxes"].detach().float().cpu()[order]
    boxes[:, 2:] -= boxes[:, :2]
    labels = output["labels"].cpu()[order]
    return [
        {"image_id": image_id, "category_id": int(label), "bbox": [float(v) for v in box], "score": float(s)}
        for box, label, s in zip(boxes.tolist(), labels.tolist(), scores[order].tolist(), strict=True)
    ]


def _to_mask_detections(
    output: dict[str, torch.Tensor], image_id: int, max_detections: int
) -> list[dict[str, Any]]:
    """One image's predicted masks ([n, 1, H, W] probabilities) as COCO segm results (compressed RLE)."""
    if "masks" not in output:
        raise ValueError(
            "iou_types includes 'segm' but the model's outputs have no 'masks'; mask AP needs an "
            "instance-segmentation model (kind='mask_rcnn')"
        )
    scores = output["scores"].detach().float().cpu()
    order = scores.argsort(descending=True)[:max_detections]
    masks = (output["masks"].detach().cpu()[order, 0] > MASK_THRESHOLD).numpy().astype(np.uint8)
    labels = output["labels"].cpu()[order].tolist()
    detections = []
    for mask, label, score in zip(masks, labels, scores[order].tolist(), strict=True):
        rle = mask_utils.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode("ascii")
        detections.append(
            {"image_id": image_id, "category_id": int(label), "segmentation": rle, "score": float(score)}
        )
    return detections


def _check_gt_masks(coco_gt: COCO, image_ids: list[int]) -> None:
    for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids)):
        if not ann.get("segmentation"):
            raise ValueError(
                f"annotation id {ann['id']} (image id {ann['image_id']}) has no 'segmentation': mask AP "
                "needs ground-truth masks on every annotation (digits: generate them with "
                "`raynas data digits --out DIR`)"
            )


def evaluate_coco(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str | None = None,
    max_detections: int = 100,
    iou_types: Sequence[str] = ("bbox",),
) -> dict[str, float]:
    """COCO metrics of ``model`` on every image ``loader`` yields, against ``loader.dataset.coco``.

    The loader yields ``(list[image tensor], list[target dict with "image_id"])``; only the image ids it
    yields are evaluated (so a ``Subset`` or a partial loader is scored on its own images). Images are
    moved to ``device`` (default: the model's; the model itself is not moved). The model runs in eval
    mode and gets its training flag back afterwards. ``iou_types``: ``"bbox"`` gives ``AP``, ``AP50``, ...;
    ``"segm"`` gives ``mask_AP``, ``mask_AP50``, ... (the model must output ``masks``).
    """
    unknown = sorted(set(iou_types) - set(IOU_TYPES))
    if unknown or not iou_types:
        raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {tuple(iou_types)}")
    coco_gt = _base_coco_dataset(loader.dataset).coco
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    detections: dict[str, list[dict[str, Any]]] = {iou_type: [] for iou_type in iou_types}
    image_ids: list[int] = []
    try:
        with torch.inference_mode():
            for images, targets in loader:
                outputs = model([image.to(device) for image in images])
                for output, target in zip(outputs, targets, strict=True):
                    image_id = int(target["image_id"])
                    image_ids.append(image_id)
                    if "bbox" in detections:
                        detections["bbox"].extend(_to_detections(output, image_id, max_detections))
                    if "segm" in detections:
                        detections["segm"].extend(_to_mask_detections(output, image_id, max_detections))
    finally:
        model.train(was_training)
    metrics: dict[str, float] = {}
    if "bbox" in detections:
        metrics.update(coco_metrics_from_detections(coco_gt, detections["bbox"], image_ids, max_detections))
    if "segm" in detections:
        _check_gt_masks(coco_gt, image_ids)
        segm = coco_metrics_from_detections(coco_gt, detections["segm"], image_ids, max_detections, "segm")
        metrics.update({MASK_PREFIX + name: value for name, value in segm.items()})
    return metrics
