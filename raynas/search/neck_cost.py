"""The one definition of an OPANAS neck's cost: parameters and FLOPs of the discrete OPA-FPN of an
architecture, on one reference input.

Both the search constraint (:class:`NeckCost`, on the driver) and the result table
(:meth:`~raynas.search.scorer.SupernetScorer.costs`, in the scorer actors) call :func:`neck_cost` with
:func:`reference_features`, so a candidate's cost in the table is the cost the constraint judged. The
reference input is a black square image of the detector's ``min_size``, through the detector's own
transform and body: a fixed input, so FLOPs compare architectures and not the validation images (the
first validation image of a non-square set used to set the table's FLOPs while the constraint used a
square).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch
from torch import nn

from raynas.checkpoints import config_from_state, load_state
from raynas.evaluation import count_flops, count_params
from raynas.models.build import build_model
from raynas.models.config import ModelConfig
from raynas.search.constraints import CostLimit
from raynas.spaces.opanas import PARAMETERISED_PATHS, OPANASArch, active_edges
from raynas.spaces.opanas.supernet import OPANASSupernet

if TYPE_CHECKING:
    from raynas.search.opanas_config import OPANASSearchConfig


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


class NeckCost:
    """Params or FLOPs of the discrete OPA-FPN of an architecture (runs on the driver), as the result table
    counts them (:mod:`raynas.search.neck_cost`).

    Counted by parts, so that a tight limit (the FPN's FLOPs refuse ~99 % of random candidates) costs the
    driver microseconds per candidate, not a network built and run: a discrete neck is a fixed part
    (laterals, extra blocks) plus one module per live edge with a parameterised path, whose parameters and
    FLOPs are the same on every edge (every node holds a pyramid of the input's shapes). The fixed part and
    each path are counted once, with :func:`neck_cost` on one-edge networks."""

    def __init__(
        self, checkpoint_dir: str | Path, what: Literal["params", "flops"], state: dict | None = None
    ):
        state = state if state is not None else load_state(checkpoint_dir)  # a search loads it once
        cfg = config_from_state(state)
        model = build_model(cfg.model, state["num_classes"], cfg.neck, cfg.head).eval()
        self.supernet = model.backbone.neck
        self.features = reference_features(model, cfg.model.min_size)
        self.what = what
        self._parts: tuple[int, dict[str, int]] | None = None  # counted on the first call

    def __call__(self, arch) -> int:
        fixed, per_path = self._counted_parts()
        return fixed + sum(per_path[name] for _, _, _, name in active_edges(arch) if name in per_path)

    def _counted_parts(self) -> tuple[int, dict[str, int]]:
        if self._parts is None:
            space, index = self.supernet.space, 0 if self.what == "params" else 1

            def one_edge(path: str) -> int:
                return neck_cost(self.supernet, space.from_edges({(0, 1): path}), self.features)[index]

            fixed = one_edge("skip")
            self._parts = fixed, {path: one_edge(path) - fixed for path in PARAMETERISED_PATHS}
        return self._parts


def neck_constraint(checkpoint_dir: str | Path, cfg: OPANASSearchConfig, state: dict | None = None):
    """The search's cost limits (``max_neck_params``, ``max_neck_flops``) as one constraint, or None."""
    limits = []
    if cfg.max_neck_params is not None:
        limits.append(CostLimit(NeckCost(checkpoint_dir, "params", state), cfg.max_neck_params))
    if cfg.max_neck_flops is not None:
        limits.append(CostLimit(NeckCost(checkpoint_dir, "flops", state), cfg.max_neck_flops))
    if not limits:
        return None
    return limits[0] if len(limits) == 1 else _AllOf(tuple(limits))


@dataclass(frozen=True)
class _AllOf:
    limits: tuple

    def __call__(self, arch) -> bool:
        return all(limit(arch) for limit in self.limits)
