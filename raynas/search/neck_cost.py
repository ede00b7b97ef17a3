"""The one definition of an OPANAS neck's cost: parameters and FLOPs of the discrete OPA-FPN of an
architecture, on one reference input.

Both the search constraint (:class:`~raynas.search.opanas.NeckCost`, on the driver) and the result table
(:meth:`~raynas.search.scorer.SupernetScorer.costs`, in the scorer actors) call :func:`neck_cost` with
:func:`reference_features`, so a candidate's cost in the table is the cost the constraint judged. The
reference input is a black square image of the detector's ``min_size``, through the detector's own
transform and body: a fixed input, so FLOPs compare architectures and not the validation images (the
first validation image of a non-square set used to set the table's FLOPs while the constraint used a
square).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import nn

from raynas.evaluation import count_flops, count_params
from raynas.models.config import ModelConfig
from raynas.spaces.opanas import OPANASArch
from raynas.spaces.opanas.supernet import OPANASSupernet


def reference_features(detector: nn.Module, min_size: int) -> OrderedDict[str, torch.Tensor]:
    """The body's feature maps of a black ``min_size`` x ``min_size`` image after the detector's transform."""
    device = next(detector.parameters()).device
    image = torch.zeros(3, min_size, min_size, device=device)
    with torch.inference_mode():
        image_list, _ = detector.transform([image])
        return detector.backbone.body(image_list.tensors)


def neck_cost(
    supernet: OPANASSupernet, arch: OPANASArch, features: OrderedDict[str, torch.Tensor]
) -> tuple[int, int]:
    """``(params, flops)`` of the discrete neck of ``arch`` (built as the super-net builds its sub-nets)."""
    neck = supernet.discrete(arch).to(supernet.gamma.device).eval()
    return count_params(neck), count_flops(neck, features)


class DetectorCost(NamedTuple):
    neck_params: int
    neck_flops: int  # on :func:`reference_features`, as the search's constraint counts a candidate
    head_params: int  # the head; a two-stage detector's RPN and RoI heads


def detector_cost(
    model: ModelConfig, neck: dict | None, head: dict | None, num_classes: int = 2
) -> DetectorCost:
    """The neck's and head's cost of the detector a config builds (``neck`` None: torchvision's FPN), on the
    reference input, so a standalone arm's cost in a table and a search's FLOPs limit are counted alike.
    The neck does not depend on the classes nor on the body's weights: none are loaded."""
    from raynas.models.build import build_model

    detector = build_model(replace(model, backbone_weights=None), num_classes, neck, head).eval()
    heads = [detector.head] if hasattr(detector, "head") else [detector.rpn, detector.roi_heads]
    built_neck = detector.backbone.neck
    return DetectorCost(
        count_params(built_neck),
        count_flops(built_neck, reference_features(detector, model.min_size)),
        sum(count_params(part) for part in heads),
    )
