"""COCO evaluation (pycocotools) and complexity measures (params, FLOPs, latency)."""

from __future__ import annotations

import contextlib
import io
import math
from collections import OrderedDict

import pytest
import torch
from pycocotools.coco import COCO
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.ops import FeaturePyramidNetwork

from raynas.evaluation import (
    METRIC_NAMES,
    coco_metrics_from_detections,
    count_flops,
    count_params,
    evaluate_coco,
    measure_latency,
    rank_agreement,
    spread_picks,
)
from raynas.models import build_detector

# Areas: 100 and 600 px^2 are "small" (< 32^2), 1600 "medium"; no "large" object, so APl is NaN.
GT = {
    "images": [{"id": i, "width": 64, "height": 64, "file_name": f"{i}.png"} for i in (1, 2)],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20, 10, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [8, 8, 20, 30], "area": 600, "iscrowd": 0},
    ],
}


def _coco() -> COCO:
    coco = COCO()
    coco.dataset = {key: list(value) for key, value in GT.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class TinyCoco(Dataset):
    """Two 64x64 images; pixel (0, 0, 0) carries the image id so a stub model can find its ground truth."""

    def __init__(self):
        self.coco = _coco()
        self.image_ids = [1, 2]

    def __len__(self):
        return len(self.image_ids)

    def __getitem__(self, index):
        image_id = self.image_ids[index]
        image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(index))
        image[0, 0, 0] = image_id / 10
        anns = self.coco.imgToAnns[image_id]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        labels = torch.tensor([a["category_id"] for a in anns])
        return image, {"boxes": boxes, "labels": labels, "image_id": image_id}


def _loader(dataset, batch_size=2):
    return DataLoader(dataset, batch_size=batch_size, collate_fn=lambda batch: tuple(map(list, zip(*batch))))


class Oracle(nn.Module):
    """Returns the ground truth (xyxy, like torchvision detectors); ``empty=True`` returns nothing."""

    def __init__(self, dataset, empty=False):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.targets = {dataset.image_ids[i]: dataset[i][1] for i in range(len(dataset))}
        self.empty = empty

    def forward(self, images):
        outputs = []
        for image in images:
            target = self.targets[round(float(image[0, 0, 0]) * 10)]
            keep = slice(0, 0) if self.empty else slice(None)
            boxes, labels = target["boxes"][keep], target["labels"][keep]
            outputs.append({"boxes": boxes, "labels": labels, "scores": torch.ones(len(labels))})
        return outputs


def _gt_as_detections():
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0}
        for a in GT["annotations"]
    ]


def test_detections_equal_to_ground_truth_score_1():
    metrics = coco_metrics_from_detections(_coco(), _gt_as_detections(), [1, 2])
    assert list(metrics) == list(METRIC_NAMES)
    for name in ("AP", "AP50", "AP75", "APs", "APm"):
        assert metrics[name] == pytest.approx(1.0)
    assert math.isnan(metrics["APl"])  # no large ground truth: undefined, not 0


def test_no_detections_score_0():
    metrics = coco_metrics_from_detections(_coco(), [], [1, 2])
    assert metrics["AP"] == metrics["AP50"] == metrics["APs"] == metrics["APm"] == 0.0
    assert math.isnan(metrics["APl"])


def test_only_the_given_image_ids_are_evaluated():
    detections = [d for d in _gt_as_detections() if d["image_id"] == 2]
    metrics = coco_metrics_from_detections(_coco(), detections, [2])
    assert metrics["AP"] == pytest.approx(1.0)
    assert math.isnan(metrics["APm"])  # the medium object is on image 1, not evaluated


def test_unknown_image_ids_raise():
    with pytest.raises(ValueError, match=r"image ids \[7\]"):
        coco_metrics_from_detections(_coco(), [], [1, 7])
    with pytest.raises(ValueError, match="no image ids"):
        coco_metrics_from_detections(_coco(), [], [])


def test_evaluate_coco_converts_xyxy_and_unwraps_subsets():
    dataset = TinyCoco()
    assert evaluate_coco(Oracle(dataset), _loader(dataset))["AP"] == pytest.approx(1.0)
    subset = Subset(Subset(dataset, [0, 1]), [1])  # image 2 only
    metrics = evaluate_coco(Oracle(dataset), _loader(subset))
    assert metrics["AP"] == pytest.approx(1.0)
    assert math.isnan(metrics["APm"])
    empty = evaluate_coco(Oracle(dataset, empty=True), _loader(dataset, batch_size=1))
    assert empty["AP"] == empty["APs"] == empty["APm"] == 0.0


def test_evaluate_coco_runs_a_real_detector_and_restores_train_mode():
    dataset = TinyCoco()
    model = build_detector("fcos", num_classes=3, min_size=64, out_channels=64, score_thresh=0.0)
    model.train()
    metrics = evaluate_coco(model, _loader(dataset), device="cpu")
    assert model.training
    assert set(metrics) == set(METRIC_NAMES)
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in metrics.values())
    assert math.isnan(metrics["APl"]) and not math.isnan(metrics["AP"])


def test_evaluate_coco_needs_a_coco_dataset():
    with pytest.raises(ValueError, match="no pycocotools COCO"):
        evaluate_coco(nn.Linear(1, 1), DataLoader([1, 2]))


def test_count_params_counts_all_or_trainable():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    assert count_params(model) == sum(p.numel() for p in model.parameters()) == 15 + 8
    assert count_params(model, trainable_only=True) == 8


def test_count_flops_of_a_conv_is_exact_and_scales_with_area():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    small = count_flops(conv, torch.rand(1, 3, 16, 16))
    assert small == 2 * 8 * 3 * 9 * 16 * 16  # one multiply-add = 2 FLOPs
    assert count_flops(conv, torch.rand(1, 3, 32, 32)) == 4 * small


def test_count_flops_of_a_detector_and_a_neck():
    model = build_detector("retinanet", min_size=64, out_channels=32)
    model.train()
    flops = count_flops(model, [torch.rand(3, 64, 64)])
    assert flops > 0 and model.training
    neck = FeaturePyramidNetwork([8, 16], 8)
    features = OrderedDict([("0", torch.rand(1, 8, 8, 8)), ("1", torch.rand(1, 16, 4, 4))])
    assert count_flops(neck, features) > 0
    assert count_flops(lambda a, b: a @ b, (torch.rand(2, 3), torch.rand(3, 4))) == 2 * 2 * 3 * 4


def test_measure_latency_reports_positive_times():
    model = nn.Conv2d(3, 4, 3)
    result = measure_latency(model, torch.rand(1, 3, 16, 16), warmup=1, repeats=3, device="cpu")
    assert set(result) == {"mean_ms", "std_ms"}
    assert result["mean_ms"] > 0 and result["std_ms"] >= 0
    assert measure_latency(model, torch.rand(1, 3, 8, 8), warmup=0, repeats=1)["std_ms"] == 0.0
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, torch.rand(1, 3, 8, 8), repeats=0)


def test_deformable_conv_flops_equal_the_plain_conv_plus_its_offset_conv():
    """torch's flop counter has no formula for torchvision::deform_conv2d; raynas adds the plain conv's."""
    from raynas.spaces.opanas.paths import Conv3x3

    x = torch.randn(1, 16, 12, 10)
    plain, deformable = Conv3x3(16, 16, deformable=False), Conv3x3(16, 16, deformable=True)
    assert count_flops(deformable, x) == count_flops(plain, x) + count_flops(deformable.offset, x)
    assert count_flops(deformable, x) > count_flops(plain, x) > 0


def test_rank_agreement_of_known_rankings():
    perfect = rank_agreement([1, 2, 3, 4, 5], [10, 20, 30, 40, 50], bootstrap=200)
    assert perfect["kendall_tau"] == pytest.approx(1.0) and perfect["spearman_rho"] == pytest.approx(1.0)
    assert perfect["kendall_tau_low"] == pytest.approx(1.0) and perfect["n"] == 5
    reversed_ = rank_agreement([1, 2, 3, 4], [4, 3, 2, 1], bootstrap=200)
    assert reversed_["kendall_tau"] == pytest.approx(-1.0)
    # one discordant pair of 6: tau = (5 - 1) / 6
    assert rank_agreement([1, 2, 3, 4], [1, 2, 4, 3])["kendall_tau"] == pytest.approx(4 / 6)
    noisy = rank_agreement(list(range(12)), [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10], bootstrap=500)
    assert noisy["kendall_tau_low"] <= noisy["kendall_tau"] <= noisy["kendall_tau_high"]
    with pytest.raises(ValueError, match="at least 3"):
        rank_agreement([1, 2], [1, 2])


def test_spread_picks_cover_the_score_range():
    scores = [0.1, 0.11, 0.12, 0.5, 0.52, 0.9, 0.3]
    picked = spread_picks(scores, 3)
    assert [scores[i] for i in picked] == [0.1, 0.5, 0.9]
    assert len(set(spread_picks(scores, 7))) == 7
    with pytest.raises(ValueError):
        spread_picks(scores, 8)
