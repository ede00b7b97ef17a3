"""Instance masks end to end: digits masks, masks in the dataset's targets, mask AP, Mask R-CNN from parts
(the data, evaluation and detector parts of FAD's instance-segmentation setting, fad-repshare.txt Sec. 4.2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

from raynas.data import CocoDetection, VOCDetection
from raynas.data.annotations import DatasetError
from raynas.data.digits import generate_digits
from raynas.data.transforms import detection_collate, hflip
from raynas.evaluation import evaluate_coco
from raynas.models import build_detector

SMALL = {"out_channels": 64, "min_size": 96, "max_size": 96}


def _annotations(root: Path, split: str = "val") -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def _dataset(root: Path, split: str = "val", **kwargs) -> CocoDetection:
    return CocoDetection(root / split, root / "annotations" / f"instances_{split}.json", **kwargs)


def test_digit_masks_are_deterministic_and_fill_their_boxes(tiny_digits: Path, tmp_path: Path) -> None:
    again = generate_digits(tmp_path / "again", num_train=8, num_val=4, image_size=96, seed=0, progress=False)
    for split in ("train", "val"):
        payload = _annotations(tiny_digits, split)
        assert payload == _annotations(again, split)
        for ann in payload["annotations"]:
            rle = ann["segmentation"]
            mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            x, y, w, h = ann["bbox"]
            mask_box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
            assert np.abs(np.subtract(mask_box, (x, y, x + w, y + h))).max() <= 1, ann["id"]
            # RLE round trip through pycocotools
            again_rle = mask_utils.encode(np.asfortranarray(mask))
            assert again_rle["counts"].decode("ascii") == rle["counts"]


def test_dataset_yields_masks_aligned_with_boxes_and_flips_them(tiny_digits: Path) -> None:
    plain = _dataset(tiny_digits)
    assert "masks" not in plain[0][1]  # boxes only unless asked
    dataset = _dataset(tiny_digits, masks=True)
    image, target = dataset[0]
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (len(target["boxes"]), *image.shape[1:])
    for mask, box in zip(masks, target["boxes"], strict=True):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert torch.allclose(
            torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float(), box, atol=1
        )
    flipped_image, flipped = hflip(image, target)
    assert torch.equal(flipped["masks"], masks.flip(-1))
    ys, xs = torch.nonzero(flipped["masks"][0], as_tuple=True)
    assert abs(float(xs.min()) - float(flipped["boxes"][0, 0])) <= 1


def test_masks_asked_of_data_without_them_fail_clearly(tiny_digits: Path, tmp_path: Path) -> None:
    payload = _annotations(tiny_digits)
    for ann in payload["annotations"]:
        del ann["segmentation"]
    boxes_only = tmp_path / "boxes_only.json"
    boxes_only.write_text(json.dumps(payload))
    CocoDetection(tiny_digits / "val", boxes_only)  # fine for detection
    with pytest.raises(DatasetError, match=r"annotation id 1: no 'segmentation'.*raynas data digits"):
        CocoDetection(tiny_digits / "val", boxes_only, masks=True)
    with pytest.raises(DatasetError, match="VOC.*boxes only"):
        VOCDetection(tmp_path, masks=True)


class _Oracle(nn.Module):
    """Predicts exactly the ground truth of each image (or nothing): mask AP's two fixed points."""

    def __init__(self, dataset: CocoDetection, empty: bool = False) -> None:
        super().__init__()
        self.dataset, self.empty = dataset, empty
        self.anchor = nn.Parameter(torch.zeros(1))  # evaluate_coco reads the device from a parameter

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            pixels = [self.dataset.load_image(i) for i in range(len(self.dataset))]
            index = next(i for i, seen in enumerate(pixels) if torch.equal(seen, image))
            _, target = self.dataset[index]
            n = 0 if self.empty else len(target["boxes"])
            outputs.append(
                {
                    "boxes": target["boxes"][:n],
                    "labels": target["labels"][:n],
                    "scores": torch.ones(n),
                    "masks": target["masks"][:n, None].float(),
                }
            )
        return outputs


def test_mask_ap_is_one_for_the_ground_truth_and_zero_for_nothing(tiny_digits: Path) -> None:
    dataset = _dataset(tiny_digits, masks=True)
    loader = DataLoader(dataset, batch_size=2, collate_fn=detection_collate)
    perfect = evaluate_coco(_Oracle(dataset), loader, iou_types=("bbox", "segm"))
    assert perfect["AP"] == pytest.approx(1.0) and perfect["mask_AP"] == pytest.approx(1.0)
    assert perfect["mask_AP50"] == pytest.approx(1.0)
    nothing = evaluate_coco(_Oracle(dataset, empty=True), loader, iou_types=("bbox", "segm"))
    assert nothing["AP"] == 0.0 and nothing["mask_AP"] == 0.0
    assert set(evaluate_coco(_Oracle(dataset), loader)) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    with pytest.raises(ValueError, match="iou_types"):
        evaluate_coco(_Oracle(dataset), loader, iou_types=("keypoints",))


def test_mask_rcnn_resnet50_matches_torchvision_size() -> None:
    # maskrcnn_resnet50_fpn's published size (pretrained, hence FrozenBatchNorm2d)
    model = build_detector(
        "mask_rcnn", "resnet50", num_classes=91, min_size=800, max_size=1333, norm="frozen_bn"
    )
    assert isinstance(model, MaskRCNN) and isinstance(model.roi_heads.mask_head, MaskRCNNHeads)
    assert sum(p.numel() for p in model.parameters()) == 44_401_393


def test_mask_rcnn_trains_and_segments_on_cpu_with_a_custom_mask_head(tiny_digits: Path) -> None:
    calls = []

    def mask_head(in_channels: int) -> nn.Module:
        calls.append(in_channels)
        return nn.Sequential(nn.Conv2d(in_channels, 256, 3, padding=1), nn.ReLU())

    torch.manual_seed(0)
    model = build_detector("mask_rcnn", "resnet18", num_classes=11, mask_head=mask_head, **SMALL)
    assert calls == [64]
    dataset = _dataset(tiny_digits, "train", masks=True)
    images, targets = detection_collate([dataset[0], dataset[1]])
    losses = model.train()(images, targets)
    assert "loss_mask" in losses and torch.isfinite(sum(losses.values()))
    sum(losses.values()).backward()
    assert model.roi_heads.mask_head[0].weight.grad is not None
    loader = DataLoader(_dataset(tiny_digits, masks=True), batch_size=2, collate_fn=detection_collate)
    metrics = evaluate_coco(model, loader, iou_types=("bbox", "segm"))
    assert {"AP", "mask_AP", "mask_AP50"} <= set(metrics)
    with pytest.raises(ValueError, match="mask_head is for kind='mask_rcnn'"):
        build_detector("faster_rcnn", mask_head=mask_head, **SMALL)
