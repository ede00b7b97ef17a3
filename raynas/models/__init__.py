"""Detectors for the searches: torchvision FCOS / RetinaNet / Faster R-CNN, and a Cascade R-CNN built from
torchvision's parts, on a body + neck (no Ray here). The model config is :mod:`.config`; the detector a
config and its neck/head specs describe is built by :mod:`.build`."""

from raynas.models.backbones import BACKBONES, NORMS, BackboneWithNeck, build_backbone_body
from raynas.models.cascade import CascadeRCNN, CascadeRoIHeads
from raynas.models.detector import DETECTORS, build_detector, default_anchor_sizes

__all__ = [
    "BACKBONES",
    "DETECTORS",
    "NORMS",
    "BackboneWithNeck",
    "CascadeRCNN",
    "CascadeRoIHeads",
    "build_backbone_body",
    "build_detector",
    "default_anchor_sizes",
]
