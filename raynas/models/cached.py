"""Run a detector from its body's outputs: the one entry point below ``forward(images, targets)``.

A frozen body (``model.trainable_backbone_layers: 0``) gives the same outputs for an image in every epoch,
so NAS-FCOS-style neck/head search computes them once (:mod:`raynas.data.feature_cache`) and trains and
scores only the neck and head. The scorer caches them in memory per actor. Both go through
:func:`forward_from_body`, which replays torchvision's own forward from the body's output onwards (neck,
head, anchors, then the losses or the detections in the image's original pixels), so no part of
torchvision's detector is re-implemented.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes

from raynas.models.replay import replaying
from raynas.registry import ONE_STAGE

Size = tuple[int, int]


@dataclass
class BodyFeatures:
    """One image as its body saw it: the body's output levels (``[C, h, w]`` each) for the image after the
    detector's transform, the image's size after resizing (``image_size``), padded (``padded_size``, what
    the anchors are laid over) and as it came from the dataset (``original_size``, what detections are
    mapped back to). Stands in for an image tensor in a batch: ``.to(device)`` moves it."""

    levels: dict[str, Tensor]
    image_size: Size
    padded_size: Size
    original_size: Size

    def to(self, device: torch.device | str, non_blocking: bool = False) -> BodyFeatures:
        levels = {k: v.to(device, non_blocking=non_blocking) for k, v in self.levels.items()}
        return BodyFeatures(levels, self.image_size, self.padded_size, self.original_size)


def forward_from_body(
    detector: nn.Module,
    features: OrderedDict[str, Tensor],
    padded_size: Size,
    image_sizes: Sequence[Size],
    original_sizes: Sequence[Size],
    targets: list[dict[str, Tensor]] | None = None,
):
    """``detector(images, targets)`` for images whose body outputs are ``features`` (a batch of levels).

    The transform and the body are replayed (:func:`raynas.models.replay.replaying`); the images they
    would have read are stand-ins that hold only a shape (no pixel is allocated), since past the body the
    detector reads the images' sizes alone. ``targets`` are in original pixels, as the dataset gives them,
    and are resized as the transform would (torchvision's ``resize_boxes``); only boxes are resized, which
    is all FCOS and RetinaNet targets hold."""
    first = next(iter(features.values()))
    placeholder = first.new_zeros(())
    image_list = ImageList(
        placeholder.expand(first.shape[0], 3, *padded_size), [tuple(s) for s in image_sizes]
    )
    originals = [placeholder.expand(3, *size) for size in original_sizes]
    resized = None
    if targets is not None:
        resized = [
            {**t, "boxes": resize_boxes(t["boxes"], tuple(o), tuple(s))} if tuple(o) != tuple(s) else dict(t)
            for t, o, s in zip(targets, original_sizes, image_sizes, strict=True)
        ]
    with replaying(detector, (image_list, resized), features):
        return detector(originals, targets)


class CachedBodyDetector(nn.Module):
    """A FCOS or RetinaNet detector whose inputs are :class:`BodyFeatures` instead of images.

    ``forward(images: list[BodyFeatures], targets=None)`` keeps the detector's contract (losses in
    training, detections in original pixels in eval mode), so a task's ``train_step`` and
    :func:`~raynas.evaluation.evaluate_coco` run it unchanged. Its ``state_dict`` is the detector's own
    (same keys), so its checkpoints load into a plain detector (``load_detector``), and attributes it lacks
    (``backbone``, ``head``, ``transform``) are the detector's, so the super-net's and DARTS's accessors
    find the neck and head. The body must be frozen: its cached outputs would be stale after any step."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        if not isinstance(detector, FCOS | RetinaNet):
            raise ValueError(
                f"cached body features need a one-stage detector ({', '.join(ONE_STAGE)}), got "
                f"{type(detector).__name__}; set model.cache_features: false"
            )
        if any(p.requires_grad for p in detector.backbone.body.parameters()):
            raise ValueError(
                "cached body features need a frozen body: set model.trainable_backbone_layers: 0"
            )
        self.detector = detector

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("detector"), name)

    def forward(self, images: Sequence[BodyFeatures], targets: list[dict[str, Tensor]] | None = None):
        device, dtype = _device_dtype(self.detector)
        features = OrderedDict(
            (k, torch.stack([f.levels[k] for f in images]).to(device, dtype)) for k in images[0].levels
        )
        return forward_from_body(
            self.detector,
            features,
            images[0].padded_size,
            [f.image_size for f in images],
            [f.original_size for f in images],
            targets,
        )

    def state_dict(self, *args, **kwargs):
        return self.detector.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.detector.load_state_dict(state_dict, strict=strict, assign=assign)


def _device_dtype(detector: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the neck runs and in what precision (a fp16 cache is widened to the neck's dtype)."""
    parameter = next(detector.backbone.neck.parameters())
    return parameter.device, parameter.dtype
