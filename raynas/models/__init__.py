"""Detectors for the searches: torchvision FCOS / RetinaNet / Faster R-CNN, and a Cascade R-CNN built from
torchvision's parts, on a body + neck (no Ray here)."""

from raynas.models.backbones import BACKBONES, NORMS, BackboneWithNeck, build_backbone_body
from raynas.models.cascade import CascadeRCNN, CascadeRoIHeads
from raynas.models.detector import DETECTORS, NECKS, build_detector, default_anchor_sizes

__all__ = [
    "BACKBONES",
    "DETECTORS",
    "NECKS",
    "NORMS",
    "BackboneWithNeck",
    "CascadeRCNN",
    "CascadeRoIHeads",
    "build_backbone_body",
    "build_detector",
    "default_anchor_sizes",
]
