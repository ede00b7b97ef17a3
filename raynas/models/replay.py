"""Run a torchvision detector on body features computed earlier.

Both OPANAS phases evaluate many necks on one backbone output: the search scores every candidate on
the same validation images (features cached once per actor), and a super-net step trains K sub-nets
on the same batch (body run once per step). torchvision's detectors have no entry point below
``forward(images, targets)``, so the transform and the body are swapped for stand-ins that return
their earlier outputs; everything after them (neck, head, losses, post-processing) runs unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn


class _Replay(nn.Module):
    """Stands in for ``original`` and returns ``value`` (its earlier output); other attributes
    (e.g. the transform's ``postprocess``) still come from ``original``."""

    def __init__(self, original: nn.Module, value: Any):
        super().__init__()
        self.value = value
        self.original = original

    def forward(self, *args, **kwargs):
        return self.value

    def postprocess(self, *args, **kwargs):
        return self.original.postprocess(*args, **kwargs)


@contextlib.contextmanager
def replaying(model: nn.Module, transformed: tuple[Any, Any], features: Any) -> Iterator[nn.Module]:
    """Within the block ``model(images[, targets])`` takes ``transform(images[, targets])`` to be
    ``transformed`` (an ``(ImageList, targets)`` pair) and ``backbone.body(...)`` to be ``features``."""
    transform, body = model.transform, model.backbone.body
    model.transform = _Replay(transform, transformed)
    model.backbone.body = _Replay(body, features)
    try:
        yield model
    finally:
        model.transform, model.backbone.body = transform, body
