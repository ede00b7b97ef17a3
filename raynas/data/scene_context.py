"""Context material for pretraining the scenes proxy's body: fresh scenes and their zone maps.

A small glyph's tag on the scenes proxy is the type of the zone it sits in, shown only by the colour of
the zone's border, up to ~150 px away (:mod:`raynas.data.scene_layout`). A top-down neck path can bring
that cue to P3 only if a coarse body level (C4, C5) carries it at the glyph (the context probe,
:mod:`raynas.studies.context_probe`, measured that a body pretrained on 32 px glyph crops alone does not).
ImageNet gives a real body such scene-level features; here the body gets them from a dense task on freshly
rendered scenes: at every C4 / C5 cell, is its centre outside every zone, in a zone of type a, or of type
b? The scenes are drawn from their own seed stream (never a split's images) and the labels are the zones'
geometry, which no detection annotation of a glyph names.
"""

from __future__ import annotations

import numpy as np

from raynas.data.scene_layout import render_scene

NO_ZONE = 0  # zone-map value outside every zone; a zone of type t is t + 1


def zone_map(objects: list, size: int) -> np.ndarray:
    """uint8 ``[size, size]``: :data:`NO_ZONE` outside every zone, ``type + 1`` inside a zone's box (its
    border included; zones never overlap)."""
    labels = np.full((size, size), NO_ZONE, dtype=np.uint8)
    for obj in objects:
        if obj.role == "zone":
            x0, y0, x1, y1 = obj.box
            labels[y0:y1, x0:x1] = obj.hue + 1
    return labels


def context_scenes(
    rng: np.random.Generator, count: int, size: int, layout: str = "v1"
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` fresh scenes of ``layout``: uint8 images ``[count, size, size, 3]`` and their zone maps
    ``[count, size, size]``."""
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    maps = np.empty((count, size, size), dtype=np.uint8)
    for index in range(count):
        images[index], objects = render_scene(rng, size, layout)
        maps[index] = zone_map(objects, size)
    return images, maps


def context_crops(
    rng: np.random.Generator, images: np.ndarray, maps: np.ndarray, count: int, crop: int,
    strides: tuple[int, ...],
) -> tuple[np.ndarray, dict[int, np.ndarray]]:  # fmt: skip
    """``count`` random ``crop`` px crops of random scenes, each flipped and turned by a random multiple
    of 90 degrees (a zone's type is its border's colour, whatever the orientation), and per stride the
    zone-map value at each cell's centre: ``{stride: int64 [count, crop // stride, crop // stride]}``."""
    size = images.shape[1]
    if crop > size or any(crop % stride for stride in strides):
        raise ValueError(f"context crops: need crop <= {size} and a multiple of {strides}, got {crop}")
    out = np.empty((count, crop, crop, 3), dtype=np.uint8)
    labels = {stride: np.empty((count, crop // stride, crop // stride), dtype=np.int64) for stride in strides}
    for index in range(count):
        scene = int(rng.integers(len(images)))
        top, left = (int(v) for v in rng.integers(size - crop + 1, size=2))
        image = images[scene, top : top + crop, left : left + crop]
        labelled = maps[scene, top : top + crop, left : left + crop]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        image, labelled = np.rot90(image, turns), np.rot90(labelled, turns)
        if flip:
            image, labelled = image[:, ::-1], labelled[:, ::-1]
        out[index] = image
        for stride, grid in labels.items():
            centres = np.arange(stride // 2, crop, stride)
            grid[index] = labelled[np.ix_(centres, centres)]
    return out, labels
