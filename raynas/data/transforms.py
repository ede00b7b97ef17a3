"""Joint (image, target) transforms and the detection collate function.

Detection augmentations must move the boxes with the pixels, so every transform here takes and returns
the pair ``(image FloatTensor[3,H,W], target dict)``. Resizing and normalisation are left to torchvision's
``GeneralizedRCNNTransform`` inside the detectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Mirror the image left-right; an xyxy box ``(x1, y1, x2, y2)`` becomes ``(W - x2, y1, W - x1, y2)``,
    instance masks (``target["masks"]``, [n, H, W]) are mirrored with the pixels."""
    width = image.shape[-1]
    boxes = target["boxes"]
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    target = {**target, "boxes": flipped}
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


class RandomHorizontalFlip:
    """Flip (image, boxes) with probability ``p``, drawn from torch's global RNG (seeded per worker)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if torch.rand(()).item() < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply joint transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def detection_collate(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[list[torch.Tensor], list[Target]]:
    """Keep images of different sizes apart: torchvision detectors take a list of images and targets."""
    return [image for image, _ in batch], [target for _, target in batch]
