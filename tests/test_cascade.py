"""Cascade R-CNN from torchvision's parts: stage sampling, score averaging, gradients, necks, sizes."""

from __future__ import annotations

import math
import random
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign

from raynas.models import build_detector
from raynas.models.cascade import STAGE_IOUS, CascadeRCNN, CascadeRoIHeads, CascadeStage
from raynas.spaces.opanas import OPANASSpace, OPANASSupernet
from raynas.spaces.opanas.fpn import opa_fpn_factory

SMALL = dict(min_size=64, out_channels=32)
GT = torch.tensor([[10.0, 10.0, 50.0, 50.0]])


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _heads(num_classes: int = 3, **kwargs) -> CascadeRoIHeads:
    pool = MultiScaleRoIAlign(["0"], output_size=2, sampling_ratio=1)
    stages = [CascadeStage(4 * 4, num_classes, iou, (10.0, 10.0, 5.0, 5.0), 8) for iou in STAGE_IOUS]
    return CascadeRoIHeads(pool, stages, **kwargs)


def _shifted(iou: float) -> torch.Tensor:
    """A 40x40 box shifted right so that its IoU with ``GT`` is ``iou``."""
    # IoU of two 40x40 boxes offset by d along x: (40 - d) / (40 + d)
    d = 40 * (1 - iou) / (1 + iou)
    return GT + torch.tensor([[d, 0.0, d, 0.0]])


def test_each_stage_labels_with_its_own_iou_threshold():
    heads = _heads(batch_size_per_image=64, positive_fraction=1.0)
    proposals = [torch.cat([_shifted(0.55), _shifted(0.65), _shifted(0.75), _shifted(0.2)])]
    targets = [{"boxes": GT, "labels": torch.tensor([2])}]
    positives = []
    for stage in heads.stages:
        boxes, labels, _, is_gt = heads._sample(stage, proposals, targets)
        assert len(boxes[0]) == 5 and is_gt[0].sum() == 1  # the ground truth joins every stage's boxes
        positives.append(int((labels == 2).sum()))
        assert set(labels.tolist()) <= {0, 2}
    # IoU 0.5: 0.55, 0.65, 0.75 + the ground truth; 0.6: 0.65, 0.75 + gt; 0.7: 0.75 + gt
    assert positives == [4, 3, 2]


def test_inference_averages_the_stage_scores_and_keeps_the_last_boxes():
    heads = _heads(num_classes=3, score_thresh=0.0).eval()
    biases = [[0.0, math.log(8.0), 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    with torch.no_grad():
        for stage, bias in zip(heads.stages, biases):
            stage.cls_score.weight.zero_()
            stage.cls_score.bias.copy_(torch.tensor(bias))
            stage.bbox_pred.weight.zero_()
            stage.bbox_pred.bias.zero_()  # deltas 0: every stage keeps its input boxes
    features = OrderedDict({"0": torch.rand(1, 4, 16, 16)})
    with torch.no_grad():
        detections, losses = heads(features, [GT.clone()], [(64, 64)])
    assert losses == {}
    by_label = {
        int(label): float(score) for label, score in zip(detections[0]["labels"], detections[0]["scores"])
    }
    # stage softmaxes: [0.1, 0.8, 0.1], [1/3] * 3, [1/3] * 3 -> mean for class 1: (0.8 + 2/3) / 3
    assert by_label[1] == pytest.approx((0.8 + 2 / 3) / 3, abs=1e-5)
    assert by_label[2] == pytest.approx((0.1 + 2 / 3) / 3, abs=1e-5)
    assert torch.allclose(detections[0]["boxes"], GT.expand(2, 4), atol=1e-4)


def test_training_gives_weighted_losses_per_stage_and_gradients_to_every_stage():
    torch.manual_seed(0)
    model = build_detector("cascade_rcnn", num_classes=4, **SMALL)
    assert isinstance(model, CascadeRCNN) and isinstance(model.roi_heads, CascadeRoIHeads)
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [
        {"boxes": GT.clone(), "labels": torch.tensor([1])},
        {"boxes": GT + 4, "labels": torch.tensor([3])},
    ]
    losses = model(images, targets)
    stage_keys = {f"loss_{kind}_s{t}" for kind in ("classifier", "box_reg") for t in (1, 2, 3)}
    assert stage_keys | {"loss_objectness", "loss_rpn_box_reg"} == set(losses)
    sum(losses.values()).backward()
    for t, stage in enumerate(model.roi_heads.stages, start=1):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stage.parameters()), t


def test_a_background_only_image_trains():
    model = build_detector("cascade_rcnn", num_classes=4, **SMALL)
    targets = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}]
    losses = model([torch.rand(3, 64, 64)], targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_resnet50_size_is_faster_rcnn_with_three_class_agnostic_stages():
    kwargs = dict(num_classes=91, min_size=800, max_size=1333, norm="frozen_bn")
    faster = build_detector("faster_rcnn", "resnet50", **kwargs)
    cascade = build_detector("cascade_rcnn", "resnet50", **kwargs)
    box_head = _params(faster.roi_heads.box_head)
    stage = box_head + 1024 * 91 + 91 + 1024 * 4 + 4  # 2 fc + class logits + one box (class-agnostic)
    expected = _params(faster) - box_head - _params(faster.roi_heads.box_predictor) + 3 * stage
    assert _params(cascade) == expected == 69_372_396


def test_opanas_necks_plug_into_cascade_rcnn():
    arch = OPANASSpace().sample(random.Random(0))
    model = build_detector("cascade_rcnn", neck=opa_fpn_factory(arch), num_classes=4, **SMALL)
    targets = [{"boxes": GT.clone(), "labels": torch.tensor([2])}]
    assert torch.isfinite(sum(model([torch.rand(3, 64, 64)], targets).values()))
    supernet_model = build_detector("cascade_rcnn", neck=OPANASSupernet, num_classes=4, **SMALL)
    neck = supernet_model.backbone.neck
    supernet_model.eval()
    with neck.using(arch), torch.inference_mode():
        assert list(supernet_model.backbone(torch.rand(1, 3, 64, 64))) == ["0", "1", "2", "3", "pool"]
        assert len(supernet_model([torch.rand(3, 64, 64)])) == 1


def test_per_stage_settings_are_not_taken_from_faster_rcnn_arguments():
    with pytest.raises(ValueError, match="per stage"):
        build_detector("cascade_rcnn", box_fg_iou_thresh=0.6, **SMALL)
    with pytest.raises(ValueError, match="3 stage IoUs but 2 stage box weights"):
        CascadeRCNN(build_detector("faster_rcnn", **SMALL).backbone, 3, stage_box_weights=[(1, 1, 1, 1)] * 2)
