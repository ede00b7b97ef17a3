"""Detectors for the searches: torchvision FCOS / RetinaNet / Faster R-CNN on a body + neck (no Ray here)."""

from raynas.models.backbones import BACKBONES, NORMS, BackboneWithNeck, build_backbone_body
from raynas.models.detector import DETECTORS, NECKS, build_detector, default_anchor_sizes

__all__ = [
    "BACKBONES",
    "DETECTORS",
    "NECKS",
    "NORMS",
    "BackboneWithNeck",
    "build_backbone_body",
    "build_detector",
    "default_anchor_sizes",
]
