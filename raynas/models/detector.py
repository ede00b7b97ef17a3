"""``build_detector``: torchvision's FCOS / RetinaNet / Faster R-CNN / Mask R-CNN (and a Cascade R-CNN built
from torchvision's parts, :mod:`raynas.models.cascade`) from a body, a neck and a head.

The pieces are composed, not re-implemented: a body from :mod:`raynas.models.backbones`, a neck (torchvision's
FPN or any factory with its signature, e.g. a searched OPANAS FPN) and torchvision's detector classes, which
take a custom head (e.g. a searched FAD head) through their own ``head=`` argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from raynas.models.backbones import BackboneWithNeck, build_backbone_body
from raynas.models.cascade import CascadeRCNN
from raynas.registry import DETECTORS, ONE_STAGE

NeckFactory = Callable[[list[int], int, ExtraFPNBlock], nn.Module]
HeadFactory = Callable[[int, int, int], nn.Module]
MaskHeadFactory = Callable[[int], nn.Module]  # in_channels -> module on the RoI features

TWO_STAGE = tuple(kind for kind in DETECTORS if kind not in ONE_STAGE)  # an RPN and RoI heads
INSTANCE_SEGMENTATION = ("mask_rcnn",)  # detectors that predict masks: trained on masks, scored by mask AP

# torchvision's defaults, tuned for images resized to ~800 px (FCOS: anchor = stride of P3..P7, one per
# location; RetinaNet: 32..512 px x 3 octave scales x 3 ratios; Faster R-CNN RPN: 32..512 px x 3 ratios).
REFERENCE_MIN_SIZE = 800
TORCHVISION_ANCHOR_SIZES: dict[str, tuple[tuple[float, ...], ...]] = {
    "fcos": ((8,), (16,), (32,), (64,), (128,)),
    "retinanet": tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in (32, 64, 128, 256, 512)),
    "faster_rcnn": ((32,), (64,), (128,), (256,), (512,)),
}
TORCHVISION_ANCHOR_SIZES["cascade_rcnn"] = TORCHVISION_ANCHOR_SIZES["faster_rcnn"]  # the same RPN
TORCHVISION_ANCHOR_SIZES["mask_rcnn"] = TORCHVISION_ANCHOR_SIZES["faster_rcnn"]
ASPECT_RATIOS: dict[str, tuple[float, ...]] = {
    "fcos": (1.0,),
    "retinanet": (0.5, 1.0, 2.0),
    "faster_rcnn": (0.5, 1.0, 2.0),
    "cascade_rcnn": (0.5, 1.0, 2.0),
    "mask_rcnn": (0.5, 1.0, 2.0),
}
MIN_ANCHOR_PX = 4.0


def iou_types(kind: str) -> tuple[str, ...]:
    """What a detector of ``kind`` is scored on: boxes, plus masks for instance segmentation."""
    return ("bbox", "segm") if kind in INSTANCE_SEGMENTATION else ("bbox",)


def default_anchor_sizes(kind: str, min_size: int) -> tuple[tuple[float, ...], ...]:
    """torchvision's anchor sizes scaled to the input size; exactly torchvision's at ``min_size >= 800``.

    The rule: every size is multiplied by one factor ``s = min(1, max(min_size / 800, 4 / smallest))``.
    Objects in a ``min_size`` image are ``min_size / 800`` times the size they would have after
    torchvision's usual resize to 800 px, so the anchors shrink by the same ratio and the levels keep their
    relative sizes (one factor for all levels). Feature strides do not shrink, so the smallest anchor is
    kept at 4 px or more: below that an anchor is much smaller than the stride-8 grid it sits on, and for
    FCOS (anchor = stride of P3 at 800 px) the centre-sampling region (1.5 x anchor) would no longer
    contain a grid point. Examples at ``min_size=128``: FCOS 4..64, RetinaNet 5.12..129.92, RPN 5.12..81.92.
    """
    if kind not in TORCHVISION_ANCHOR_SIZES:
        raise ValueError(f"unknown detector kind '{kind}'; valid kinds: {list(DETECTORS)}")
    sizes = TORCHVISION_ANCHOR_SIZES[kind]
    smallest = min(min(level) for level in sizes)
    scale = min(1.0, max(min_size / REFERENCE_MIN_SIZE, MIN_ANCHOR_PX / smallest))
    if scale == 1.0:
        return sizes
    return tuple(tuple(round(size * scale, 2) for size in level) for level in sizes)


def _anchor_generator(
    kind: str, min_size: int, anchor_sizes: Sequence[float | Sequence[float]] | None, num_levels: int
) -> AnchorGenerator:
    if anchor_sizes is None:
        sizes = default_anchor_sizes(kind, min_size)
    else:
        sizes = tuple((s,) if isinstance(s, int | float) else tuple(s) for s in anchor_sizes)
    if len(sizes) != num_levels:
        raise ValueError(
            f"anchor_sizes has {len(sizes)} levels but the {kind} feature pyramid has {num_levels}: {sizes}"
        )
    if kind == "fcos" and any(len(level) != 1 for level in sizes):
        raise ValueError(f"FCOS takes exactly one anchor size per level (the point's scale), got {sizes}")
    return AnchorGenerator(sizes, (ASPECT_RATIOS[kind],) * len(sizes))


def _build_neck(
    neck: str | NeckFactory, in_channels_list: list[int], out_channels: int, extra_blocks: ExtraFPNBlock
) -> nn.Module:
    if callable(neck):
        return neck(in_channels_list, out_channels, extra_blocks)
    if neck == "fpn":
        fpn = FeaturePyramidNetwork(in_channels_list, out_channels, extra_blocks=extra_blocks)
        fpn.out_channels = out_channels  # the neck contract; torchvision's FPN does not set it
        return fpn
    raise ValueError(
        f"unknown neck '{neck}'; pass \"fpn\" or a factory (in_channels_list, out_channels, extra_blocks) "
        "-> nn.Module (the searched necks: raynas.models.build.neck_factory)"
    )


def build_detector(
    kind: str,
    backbone: str = "resnet18",
    neck: str | NeckFactory = "fpn",
    head: HeadFactory | None = None,
    mask_head: MaskHeadFactory | None = None,
    num_classes: int = 11,
    min_size: int = 128,
    max_size: int | None = None,
    out_channels: int = 256,
    backbone_weights: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    norm: str | None = None,
    anchor_sizes: Sequence[float | Sequence[float]] | None = None,
    **detector_kwargs,
) -> nn.Module:
    """Build a torchvision detector; ``model.backbone`` is a :class:`BackboneWithNeck`.

    - ``kind``: ``"fcos"``, ``"retinanet"`` (body levels C3-C5 + P6/P7 from P5, as torchvision's
      reference builders), ``"faster_rcnn"`` (C2-C5 + max-pooled "pool" level), ``"cascade_rcnn"``
      (the same body, neck and RPN; three box stages at IoU 0.5/0.6/0.7, :class:`CascadeRCNN`) or
      ``"mask_rcnn"`` (Faster R-CNN's body, neck, RPN and box head plus torchvision's mask branch).
    - ``neck``: ``"fpn"`` or a factory ``(in_channels_list, out_channels, extra_blocks) -> nn.Module``.
    - ``head``: None (torchvision's head) or, for FCOS/RetinaNet, a factory
      ``(in_channels, num_anchors, num_classes) -> nn.Module`` honouring torchvision's head contract.
    - ``mask_head``: for Mask R-CNN, None (torchvision's four 3x3 convs) or a factory
      ``(in_channels) -> nn.Module`` mapping the 14x14 RoI features to 256 channels (what torchvision's
      ``MaskRCNNPredictor`` reads; e.g. a FAD mask head); the deconvolution and mask predictor stay.
    - ``num_classes`` includes background 0 (COCO: 91); labels are the dataset's category ids.
    - ``min_size``/``max_size``: torchvision's resize; ``max_size`` defaults to ``min_size * 1333 / 800``.
    - ``anchor_sizes``: one tuple of sizes per level (or one number per level); default
      :func:`default_anchor_sizes`.
    - ``backbone_weights``, ``trainable_backbone_layers``, ``norm``: see
      :func:`~raynas.models.backbones.build_backbone_body`.
    - ``detector_kwargs`` go to the torchvision class (``score_thresh``, ``detections_per_img``, ...).
    """
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector kind '{kind}'; valid kinds: {list(DETECTORS)}")
    if head is not None and kind in TWO_STAGE:
        raise ValueError(
            "a custom head is for one-stage detectors (kind='fcos' or 'retinanet'); Faster, Cascade and "
            "Mask R-CNN keep their RPN and box heads (Mask R-CNN takes a custom mask_head)"
        )
    if mask_head is not None and kind != "mask_rcnn":
        raise ValueError(f"mask_head is for kind='mask_rcnn', got kind={kind!r}")
    if kind == "fcos" and head is None and (out_channels % 32 or out_channels < 64):
        # GroupNorm(32, 32) on the 1x1 P7 map of a small image, batch 1, normalises single values: error.
        raise ValueError(
            f"out_channels={out_channels}: torchvision's FCOS head normalises with GroupNorm(32, channels), "
            "so out_channels must be a multiple of 32 and at least 64 (or pass a head factory)"
        )
    anchor_key = "rpn_anchor_generator" if kind in TWO_STAGE else "anchor_generator"
    if anchor_key in detector_kwargs and anchor_sizes is not None:
        raise ValueError(f"pass either anchor_sizes or {anchor_key}, not both")

    one_stage = kind not in TWO_STAGE
    body, in_channels_list = build_backbone_body(
        backbone,
        trainable_layers=trainable_backbone_layers,
        norm=norm,
        weights=backbone_weights,
        returned_layers=(2, 3, 4) if one_stage else (1, 2, 3, 4),
    )
    extra_blocks = LastLevelP6P7(out_channels, out_channels) if one_stage else LastLevelMaxPool()
    neck_module = _build_neck(neck, in_channels_list, out_channels, extra_blocks)
    model_backbone = BackboneWithNeck(body, neck_module)

    num_levels = len(in_channels_list) + (2 if one_stage else 1)
    if anchor_key not in detector_kwargs:
        detector_kwargs[anchor_key] = _anchor_generator(kind, min_size, anchor_sizes, num_levels)
    if max_size is None:
        max_size = round(min_size * 1333 / REFERENCE_MIN_SIZE)
    common = dict(num_classes=num_classes, min_size=min_size, max_size=max_size, **detector_kwargs)

    if kind == "faster_rcnn":
        return FasterRCNN(model_backbone, **common)
    if kind == "cascade_rcnn":
        return CascadeRCNN(model_backbone, **common)
    if kind == "mask_rcnn":
        if mask_head is not None:
            common["mask_head"] = mask_head(model_backbone.out_channels)
        return MaskRCNN(model_backbone, **common)
    if head is not None:
        num_anchors = detector_kwargs[anchor_key].num_anchors_per_location()[0]
        common["head"] = head(model_backbone.out_channels, num_anchors, num_classes)
    detector_cls = FCOS if kind == "fcos" else RetinaNet
    return detector_cls(model_backbone, **common)
