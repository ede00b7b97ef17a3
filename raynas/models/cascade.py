"""Cascade R-CNN (Cai & Vasconcelos, CVPR 2018) from torchvision's Faster R-CNN parts.

torchvision has no Cascade R-CNN, and OPANAS plugs its neck into one (opanas.txt Sec. 4.1.3 / Table 3), so
we compose it: torchvision's ``FasterRCNN`` (transform, backbone, RPN) with its ``roi_heads`` replaced by
:class:`CascadeRoIHeads`, a sequence of box stages trained at rising IoU thresholds, each refining the
boxes of the one before. The settings are the Cascade R-CNN paper's (and the common reference
implementations'): three stages at IoU 0.5 / 0.6 / 0.7, box-delta weights (10, 10, 5, 5) / (20, 20, 10,
10) / (30, 30, 15, 15), stage loss weights 1 / 0.5 / 0.25, class-agnostic regression, and at inference
the class scores of all stages averaged, the boxes of the last stage.

Everything else is torchvision's own: ``Matcher``, ``BalancedPositiveNegativeSampler``, ``BoxCoder``,
``MultiScaleRoIAlign``, ``TwoMLPHead`` and the per-class NMS of ``RoIHeads.postprocess_detections``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import boxes as box_ops

STAGE_IOUS = (0.5, 0.6, 0.7)
STAGE_BOX_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)

# FasterRCNN arguments that Cascade R-CNN sets per stage instead
_PER_STAGE_KWARGS = (
    "box_head",
    "box_predictor",
    "box_fg_iou_thresh",
    "box_bg_iou_thresh",
    "bbox_reg_weights",
)


class CascadeStage(nn.Module):
    """One box stage: a 2-fc head, class logits and class-agnostic box deltas, its own IoU and coder."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        iou_thresh: float,
        box_weights: Sequence[float],
        representation_size: int = 1024,
    ) -> None:
        super().__init__()
        self.box_head = TwoMLPHead(in_features, representation_size)
        self.cls_score = nn.Linear(representation_size, num_classes)
        self.bbox_pred = nn.Linear(representation_size, 4)
        self.iou_thresh = iou_thresh
        self.matcher = det_utils.Matcher(iou_thresh, iou_thresh, allow_low_quality_matches=False)
        self.box_coder = det_utils.BoxCoder(tuple(box_weights))

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """``pooled`` [R, C, S, S] RoI features -> (class logits [R, K], box deltas [R, 4])."""
        x = self.box_head(pooled)
        return self.cls_score(x), self.bbox_pred(x)


class CascadeRoIHeads(nn.Module):
    """Drop-in for torchvision's ``RoIHeads`` (same call and outputs) running a cascade of box stages.

    Training: each stage adds the ground truth to its input boxes, labels them with its own IoU threshold,
    samples ``batch_size_per_image`` of them, and hands its refined (detached, clipped) boxes, ground truth
    removed, to the next stage; losses are ``loss_classifier_s{t}`` / ``loss_box_reg_s{t}`` per stage,
    weighted by ``stage_loss_weights``. Inference: every stage scores the boxes it receives and refines
    them; the final class scores are the stages' mean softmax, the final boxes the last stage's output.
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        stages: Sequence[CascadeStage],
        stage_loss_weights: Sequence[float] = STAGE_LOSS_WEIGHTS,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        if len(stages) != len(stage_loss_weights):
            raise ValueError(
                f"{len(stages)} cascade stages but {len(stage_loss_weights)} stage loss weights; "
                "give one each"
            )
        self.box_roi_pool = box_roi_pool
        self.stages = nn.ModuleList(stages)
        self.stage_loss_weights = tuple(stage_loss_weights)
        self.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(
            batch_size_per_image, positive_fraction
        )
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    def _sample(
        self, stage: CascadeStage, proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], Tensor, Tensor, list[Tensor]]:
        """Sampled boxes per image, their labels and regression targets, and which ones are ground truth."""
        boxes, labels, regression_targets, is_gt = [], [], [], []
        for proposals_i, target in zip(proposals, targets):
            gt_boxes = target["boxes"].to(proposals_i.dtype)
            candidates = torch.cat([proposals_i, gt_boxes])
            gt_flags = torch.arange(len(candidates), device=candidates.device) >= len(proposals_i)
            if gt_boxes.numel() == 0:  # a background image: every box is a negative
                matched = torch.zeros(len(candidates), dtype=torch.int64, device=candidates.device)
                labels_i = torch.zeros_like(matched)
                gt_boxes = torch.zeros((1, 4), dtype=candidates.dtype, device=candidates.device)
            else:
                matches = stage.matcher(box_ops.box_iou(gt_boxes, candidates))
                matched = matches.clamp(min=0)
                labels_i = target["labels"][matched].to(torch.int64)
                labels_i[matches == det_utils.Matcher.BELOW_LOW_THRESHOLD] = 0
                labels_i[matches == det_utils.Matcher.BETWEEN_THRESHOLDS] = -1
            (positive,), (negative,) = self.fg_bg_sampler([labels_i])
            keep = torch.where(positive | negative)[0]
            boxes.append(candidates[keep])
            labels.append(labels_i[keep])
            regression_targets.append(
                stage.box_coder.encode_single(gt_boxes[matched[keep]], candidates[keep])
            )
            is_gt.append(gt_flags[keep])
        return boxes, torch.cat(labels), torch.cat(regression_targets), is_gt

    def _refine(
        self, stage: CascadeStage, deltas: Tensor, boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> list[Tensor]:
        """Apply a stage's deltas to its input boxes, clipped to each image (the next stage's input)."""
        decoded = stage.box_coder.decode_single(deltas, torch.cat(boxes))
        return [
            box_ops.clip_boxes_to_image(b, shape)
            for b, shape in zip(decoded.split([len(b) for b in boxes]), image_shapes)
        ]

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("CascadeRoIHeads needs targets in training mode")
        boxes, losses, stage_scores = proposals, {}, []
        for t, (stage, weight) in enumerate(zip(self.stages, self.stage_loss_weights), start=1):
            if self.training:
                boxes, labels, regression_targets, is_gt = self._sample(stage, boxes, targets)
            logits, deltas = stage(self.box_roi_pool(features, boxes, image_shapes))
            if self.training:
                positive = labels > 0
                box_loss = F.smooth_l1_loss(
                    deltas[positive], regression_targets[positive], beta=1 / 9, reduction="sum"
                ) / max(1, labels.numel())
                losses[f"loss_classifier_s{t}"] = weight * F.cross_entropy(logits, labels)
                losses[f"loss_box_reg_s{t}"] = weight * box_loss
                if t < len(self.stages):
                    refined = self._refine(stage, deltas.detach(), boxes, image_shapes)
                    boxes = [b[~gt] for b, gt in zip(refined, is_gt)]
            else:
                stage_scores.append(F.softmax(logits, -1))
                boxes = self._refine(stage, deltas, boxes, image_shapes)
        if self.training:
            return [], losses
        return self._postprocess(torch.stack(stage_scores).mean(0), boxes), {}

    def _postprocess(self, scores: Tensor, boxes: list[Tensor]) -> list[dict[str, Tensor]]:
        """Per-class thresholding and NMS, as torchvision's ``RoIHeads.postprocess_detections``."""
        results = []
        num_classes = scores.shape[-1]
        for scores_i, boxes_i in zip(scores.split([len(b) for b in boxes]), boxes):
            labels = torch.arange(1, num_classes, device=scores.device).expand(len(boxes_i), -1).reshape(-1)
            scores_i = scores_i[:, 1:].reshape(-1)
            boxes_i = boxes_i[:, None, :].expand(-1, num_classes - 1, -1).reshape(-1, 4)
            keep = torch.where(scores_i > self.score_thresh)[0]
            boxes_i, scores_i, labels = boxes_i[keep], scores_i[keep], labels[keep]
            keep = box_ops.remove_small_boxes(boxes_i, min_size=1e-2)
            boxes_i, scores_i, labels = boxes_i[keep], scores_i[keep], labels[keep]
            keep = box_ops.batched_nms(boxes_i, scores_i, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": boxes_i[keep], "labels": labels[keep], "scores": scores_i[keep]})
        return results


class CascadeRCNN(FasterRCNN):
    """torchvision's ``FasterRCNN`` (same arguments) with :class:`CascadeRoIHeads` as its box head.

    ``stage_ious`` / ``stage_box_weights`` / ``stage_loss_weights`` define the cascade (one entry per
    stage); the per-image sampling, score threshold, NMS and detection count come from the usual
    ``box_*`` arguments of ``FasterRCNN``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        stage_ious: Sequence[float] = STAGE_IOUS,
        stage_box_weights: Sequence[Sequence[float]] = STAGE_BOX_WEIGHTS,
        stage_loss_weights: Sequence[float] = STAGE_LOSS_WEIGHTS,
        representation_size: int = 1024,
        **kwargs,
    ) -> None:
        given = sorted(k for k in _PER_STAGE_KWARGS if kwargs.get(k) is not None)
        if given:
            raise ValueError(
                f"Cascade R-CNN sets {given} per stage; pass stage_ious / stage_box_weights instead"
            )
        if len(stage_ious) != len(stage_box_weights):
            raise ValueError(
                f"{len(stage_ious)} stage IoUs but {len(stage_box_weights)} stage box weights; give one each"
            )
        # placeholders keep torchvision from building a single-stage box head that would be replaced
        super().__init__(
            backbone, num_classes=None, box_head=nn.Identity(), box_predictor=nn.Identity(), **kwargs
        )
        single = self.roi_heads  # torchvision's RoIHeads: its pool and sampling / inference settings
        pool = single.box_roi_pool
        in_features = backbone.out_channels * pool.output_size[0] * pool.output_size[1]
        stages = [
            CascadeStage(in_features, num_classes, iou, weights, representation_size)
            for iou, weights in zip(stage_ious, stage_box_weights)
        ]
        self.roi_heads = CascadeRoIHeads(
            pool,
            stages,
            stage_loss_weights,
            batch_size_per_image=single.fg_bg_sampler.batch_size_per_image,
            positive_fraction=single.fg_bg_sampler.positive_fraction,
            score_thresh=single.score_thresh,
            nms_thresh=single.nms_thresh,
            detections_per_img=single.detections_per_img,
        )
