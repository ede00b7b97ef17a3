"""How one scene of the scenes proxy is composed (:mod:`raynas.data.scenes` says why): a textured
background, clutter, 1-2 zones, and glyphs of three roles placed by rejection sampling, each recorded with
every cue its label may come from (:class:`SceneObject`). Geometry is given in px of a
:data:`REFERENCE_SIZE` canvas and scales with the canvas. Pure numpy / Pillow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from raynas.data import glyphs as gl

GLYPHS = ("O", "0", "Q", "I", "1", "l", "5", "S", "8", "B")  # confusable groups: O 0 Q, I 1 l, 5 S, 8 B
REFERENCE_SIZE = 320  # the canvas the geometry below (px) is given for; other sizes scale it
ZONE_SIDE = (140, 310)
ZONE_BORDER = (3, 6)
ZONE_GAP = 8  # between two zones
ZONE_MARGIN = 24  # from a zone's border to the boxes of the small glyphs inside it
TWO_ZONES = 0.8  # chance of trying a second zone
SMALL_SIDE = (10, 32)  # longer side of a glyph's box, log-uniform in each range
SMALL_PER_PX = 1 / 12000  # small glyphs per px of a zone's usable interior ...
SMALL_PER_ZONE = (1, 6)  # ... at least and at most
MEDIUM_SIDE = (32, 96)
MEDIUM_COUNT = (1, 4)
LARGE_SIDE = (110, 310)
LARGE_CHANCE = 0.9
MARK_SIDE = (6, 9)
CENTRE_MARK_SIDE = (9, 13)  # a mark at a large glyph's centre (layout ``outer``)
NEAR_MARGIN = 8  # layout ``outer``: from a zone's neutral sides to the small glyphs inside it
MARK_GAP = 2
MAX_ROTATION = 15.0  # degrees
MAX_IOU, MAX_COVER = 0.3, 0.5  # glyph overlap limits (IoU; share of the smaller box covered)
TRIES = 30
MIN_CONTRAST = 100.0  # RGB distance of an object's colour from what is behind it


@dataclass(frozen=True)
class Layout:
    """What a scenes layout changes: zone sizes, how far small glyphs keep from a zone's border, and their
    density (px of the reference canvas)."""

    zone_side: tuple[int, int] = ZONE_SIDE
    zone_margin: int = ZONE_MARGIN
    small_per_px: float = SMALL_PER_PX
    pair: bool = False  # two zones of opposite types side by side in every scene
    outer_only: bool = False  # pair zones show their type only on their outer side (the others neutral grey)
    medium_anywhere: bool = False  # medium glyphs in zones too (their tag is their own colour either way)
    mark_at_centre: bool = False  # a large glyph's mark at its box's centre, where its positives are
    #: the context body's pretraining crops (px, and crops a step): whole scenes where the type shows only
    #: at the canvas edge, which a crop would cut off (measured: 192 px crops taught C4 / C5 nothing, 48 %)
    context_crop: tuple[int, int] = (192, 8)


#: ``v1``: the first layout. Measured (docs/proxy.md): the second zone rarely fits, so 99.6 % of scenes hold
#: one zone and its type is a property of the whole image, which any global statistic (GroupNorm's) carries
#: to every level; a lateral-only neck gets 98.6 % of small glyphs' tags right. ``far``: one zone of
#: 210-310 px, small glyphs >= 72 px from its border (three times as dense); the type is still global.
#: ``pair``: two zones of opposite types side by side in every scene, small glyphs >= 40 px from the
#: border: which type a glyph's zone has is only known from where the glyph is, at a coarse enough level.
#: ``outer`` (try 5): ``pair`` whose zones show their type only on their outer side (at the canvas edge),
#: small glyphs >= 64 px from it (lateral-only still read 84 % of pair's tags: the head's own 3x3 tower
#: reaches a border 40 px away); medium glyphs anywhere (P4 had 5 % of the positives in ``pair``); a
#: large glyph's 9-13 px mark at its centre, where its coarse positives are, so a bottom-up path has a fine
#: detail to bring there (no neck read a corner mark: 45-53 %).
LAYOUTS = {
    "v1": Layout(),
    "far": Layout(zone_side=(210, 310), zone_margin=72, small_per_px=3 * SMALL_PER_PX),
    "pair": Layout(zone_side=(200, 320), zone_margin=40, small_per_px=2 * SMALL_PER_PX, pair=True),
    "outer": Layout(
        zone_side=(200, 320),
        zone_margin=64,
        small_per_px=2 * SMALL_PER_PX,
        pair=True,
        outer_only=True,
        medium_anywhere=True,
        mark_at_centre=True,
        context_crop=(320, 4),
    ),
}
#: the layout of the scenes proxy (try 5, the one whose calibration holds: docs/proxy.md); the others are
#: the earlier tries, kept selectable so that their results can be reproduced
DEFAULT_LAYOUT = "outer"


@dataclass
class SceneObject:
    """A labelled object as painted, with every cue its tag may be read from (the context rules pick one:
    :func:`category`)."""

    box: tuple[int, int, int, int]  # xyxy, pixel edges
    mask: np.ndarray  # bool [size, size]; its bounding box is ``box``
    role: str  # "zone", "small" (in a zone), "medium" (outside zones) or "large" (with a mark)
    char: str | None  # the glyph; None for zones
    hue: int  # family of the object's colour (a zone's: of its border), 0 (a) or 1 (b)
    zone: int | None = None  # small glyphs: the type of the zone they sit in
    mark: int | None = None  # large glyphs: their mark, 0 ("+") or 1 ("x")
    outer: int | None = (
        None  # zones of layout ``outer``: the side showing the type (0 left, 1 top, 2 right, 3 bottom)
    )


class _Scene:
    """One canvas being painted: float32 RGB pixels and the objects placed so far."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng, self.size, self.scale = rng, size, size / REFERENCE_SIZE
        self.pixels = gl.background(rng, size)
        self.objects: list[SceneObject] = []

    def px(self, value: float) -> int:
        return max(1, round(value * self.scale))

    def log_side(self, bounds: tuple[int, int]) -> int:
        low, high = math.log(self.px(bounds[0])), math.log(self.px(bounds[1]))
        return round(math.exp(self.rng.uniform(low, high)))

    def paint(self, alpha: np.ndarray, left: int, top: int, colour: np.ndarray) -> None:
        """Blend ``colour`` through ``alpha`` at (left, top), clipped to the canvas."""
        h, w = alpha.shape
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + w, self.size), min(top + h, self.size)
        if x0 >= x1 or y0 >= y1:
            return
        region = self.pixels[y0:y1, x0:x1]
        region += (colour - region) * alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]

    def behind(self, left: int, top: int, w: int, h: int) -> np.ndarray:
        y0, x0 = max(top, 0), max(left, 0)
        return self.pixels[y0 : max(y0 + 1, top + h), x0 : max(x0 + 1, left + w)].reshape(-1, 3).mean(0)


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    area = (box[2] - box[0]) * (box[3] - box[1])
    for other in others:
        iw, ih = min(box[2], other[2]) - max(box[0], other[0]), min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0:
            inter, other_area = iw * ih, (other[2] - other[0]) * (other[3] - other[1])
            if inter / (area + other_area - inter) > MAX_IOU or inter / min(area, other_area) > MAX_COVER:
                return True
    return False


def _clutter(scene: _Scene, count: int) -> None:
    """Unlabelled distractors: glyph fragments, handwritten scribbles, decoy marks, decoy border bits."""
    rng, size = scene.rng, scene.size
    for _ in range(count):
        kind = int(rng.integers(4))
        if kind == 0:  # a fragment: part of a glyph, never a whole one
            alpha = gl.glyph_alpha(
                rng, GLYPHS[int(rng.integers(len(GLYPHS)))], scene.log_side((10, 120)), 180
            )
            h, w = alpha.shape
            keep_h, keep_w = (
                max(1, round(h * rng.uniform(0.3, 0.6))),
                max(1, round(w * rng.uniform(0.3, 0.6))),
            )
            top, left = int(rng.integers(h - keep_h + 1)), int(rng.integers(w - keep_w + 1))
            alpha = alpha[top : top + keep_h, left : left + keep_w]
        elif kind == 1:  # a handwritten scan, upscaled
            scans = gl.scribble_scans()
            side = scene.log_side((12, 60))
            scan = Image.fromarray(scans[int(rng.integers(len(scans)))]).resize((side, side), Image.BILINEAR)
            alpha = (np.asarray(scan, dtype=np.float32) * 1.5).clip(0.0, 1.0)
        elif kind == 2:  # a mark like the large glyphs' ones, on nothing
            alpha = gl.mark_alpha(
                gl.MARKS[int(rng.integers(2))], scene.px(rng.integers(MARK_SIDE[0], MARK_SIDE[1] + 1))
            )
        else:  # a bit of border in a family colour, not closing a zone
            thick = scene.px(rng.integers(ZONE_BORDER[0], ZONE_BORDER[1] + 1))
            length = scene.px(rng.uniform(20, 80))
            alpha = np.ones((thick, length) if rng.random() < 0.5 else (length, thick), dtype=np.float32)
        h, w = alpha.shape
        left, top = int(rng.integers(-w // 2, size - w // 2)), int(rng.integers(-h // 2, size - h // 2))
        behind = scene.behind(left, top, w, h)
        if kind == 3:
            colour = gl.family_colour(rng, int(rng.integers(2)), behind, MIN_CONTRAST)
        else:
            colour = gl.any_colour(rng, behind, MIN_CONTRAST)
        scene.paint(alpha * float(rng.uniform(0.5, 1.0)), left, top, colour)


class Zone(NamedTuple):
    """A painted zone: its box, type, border width (px) and, for layout ``outer``, the side showing the type
    (:attr:`SceneObject.outer`)."""

    box: tuple[int, int, int, int]
    type: int
    border: int
    outer: int | None

    def inner(self, scene: _Scene, layout: Layout) -> tuple[int, int, int, int]:
        """Where its small glyphs go: ``zone_margin`` inside the border, on layout ``outer`` only from the
        side showing the type (:data:`NEAR_MARGIN` from the neutral ones)."""
        insets = [self.border + scene.px(layout.zone_margin)] * 4
        if self.outer is not None:
            insets = [
                insets[0] if side == self.outer else self.border + scene.px(NEAR_MARGIN) for side in range(4)
            ]
        return (
            self.box[0] + insets[0],
            self.box[1] + insets[1],
            self.box[2] - insets[2],
            self.box[3] - insets[3],
        )


def _zones(scene: _Scene, layout: Layout) -> list[Zone]:
    """Paint the zones; all share one hatched interior. A ``pair`` layout has two zones of opposite types
    side by side; the others 1-2 zones of random types (drawn in the order the v1 data were generated with,
    so v1 scenes stay byte-identical)."""
    rng, size = scene.rng, scene.size
    interior = gl.hatch(size, int(rng.integers(6, 11)), gl.greyish(rng))
    placed: list[Zone] = []

    def paint(box: tuple[int, int, int, int], zone_type: int, outer: int | None = None) -> None:
        left, top, right, bottom = box
        border = scene.px(rng.integers(ZONE_BORDER[0], ZONE_BORDER[1] + 1))
        colour = gl.family_colour(rng, zone_type, interior[top, left], MIN_CONTRAST)
        region = scene.pixels[top:bottom, left:right]
        if outer is None:
            region[:] = colour
        else:  # neutral grey all round, the type's colour on the outer side only
            region[:] = 40.0 if interior[top, left].mean() > 127.5 else 215.0
            strip = (np.s_[:, :border], np.s_[:border, :], np.s_[:, -border:], np.s_[-border:, :])[outer]
            region[strip] = colour
        region[border:-border, border:-border] = interior[
            top + border : bottom - border, left + border : right - border
        ]
        placed.append(Zone(box, zone_type, border, outer))

    if layout.pair:
        boxes, across_y = _pair_boxes(scene, layout)
        first = int(rng.integers(2))
        rng.integers(2)  # a draw the pair data of try 4 were generated with: kept, so they regenerate alike
        for index, box in enumerate(boxes):
            outer = (2 * index + across_y) if layout.outer_only else None  # the side at the canvas edge
            paint(box, (first + index) % 2, outer)
        return placed
    gap = scene.px(ZONE_GAP)
    for attempt in range(2):
        if attempt == 1 and rng.random() >= TWO_ZONES:
            break
        for _ in range(TRIES):
            w, h = (scene.px(rng.uniform(*layout.zone_side)) for _ in range(2))
            left, top = int(rng.integers(size - w + 1)), int(rng.integers(size - h + 1))
            box = (left, top, left + w, top + h)
            if all(
                box[0] >= o[2] + gap or o[0] >= box[2] + gap or box[1] >= o[3] + gap or o[1] >= box[3] + gap
                for o, *_ in placed
            ):
                paint(box, int(rng.integers(2)))
                break
    return placed


def _pair_boxes(scene: _Scene, layout: Layout) -> tuple[list[tuple[int, int, int, int]], bool]:
    """Two zone boxes side by side (split across x or y at 40-60 % of the canvas, a gap between): each
    spans its side of the split and ``zone_side`` along the other axis; and whether the split is across y."""
    rng, size = scene.rng, scene.size
    split, gap = round(size * rng.uniform(0.4, 0.6)), scene.px(rng.uniform(ZONE_GAP, 3 * ZONE_GAP))
    boxes = []
    for low, high in ((0, split - gap // 2), (split + (gap + 1) // 2, size)):
        inset = scene.px(rng.uniform(0, ZONE_GAP))
        across = (low + inset, high - scene.px(rng.uniform(0, ZONE_GAP))) if low == 0 else (low, high - inset)
        length = min(size, scene.px(rng.uniform(*layout.zone_side)))
        start = int(rng.integers(size - length + 1))
        boxes.append((across[0], start, across[1], start + length))
    across_y = bool(rng.random() < 0.5)
    if across_y:  # split across y instead: the same boxes transposed
        boxes = [(top, left, bottom, right) for left, top, right, bottom in boxes]
    return boxes, across_y


def _glyph(
    scene: _Scene, side: int, region: tuple[int, int, int, int], avoid: list[tuple[int, int, int, int]],
    mark: int | None = None, keep_out: tuple[tuple[int, int, int, int], ...] = (),
    mark_at_centre: bool = False,
) -> tuple[str, int, tuple[int, int, int, int], np.ndarray] | None:  # fmt: skip
    """Place and paint one glyph (with ``mark`` at its top-right corner, or in black or white at its centre)
    whose box lies inside ``region``, overlaps the boxes in ``avoid`` little and ``keep_out`` not at all:
    ``(char, hue family, box, mask)``, or None where it does not fit."""
    rng = scene.rng
    char, family = GLYPHS[int(rng.integers(len(GLYPHS)))], int(rng.integers(2))
    alpha = gl.glyph_alpha(rng, char, side, MAX_ROTATION)
    ink = alpha > gl.INK_THRESHOLD
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    alpha = alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if mark is not None and not mark_at_centre:
        m, gap = scene.px(rng.integers(MARK_SIDE[0], MARK_SIDE[1] + 1)), scene.px(MARK_GAP)
        h, w = alpha.shape
        whole = np.zeros((h + m + gap, w + m + gap), dtype=np.float32)
        whole[m + gap :, :w] = alpha
        whole[:m, w + gap :] = gl.mark_alpha(gl.MARKS[mark], m)
        alpha = whole
    h, w = alpha.shape
    x0, y0, x1, y1 = region
    if x1 - x0 < w or y1 - y0 < h:
        return None
    for _ in range(TRIES):
        left, top = int(rng.integers(x0, x1 - w + 1)), int(rng.integers(y0, y1 - h + 1))
        box = (left, top, left + w, top + h)
        if not _overlaps(box, avoid) and _outside(box, keep_out):
            break
    else:
        return None
    scene.paint(alpha, left, top, gl.family_colour(rng, family, scene.behind(left, top, w, h), MIN_CONTRAST))
    mask = np.zeros((scene.size, scene.size), dtype=bool)
    mask[top : top + h, left : left + w] = alpha > gl.INK_THRESHOLD
    if mark is not None and mark_at_centre:
        m = min(w, h, scene.px(rng.integers(CENTRE_MARK_SIDE[0], CENTRE_MARK_SIDE[1] + 1)))
        mark_left, mark_top, mark = left + (w - m) // 2, top + (h - m) // 2, gl.mark_alpha(gl.MARKS[mark], m)
        grey = 0.0 if scene.behind(mark_left, mark_top, m, m).mean() > 127.5 else 255.0
        scene.paint(mark, mark_left, mark_top, np.full(3, grey, dtype=np.float32))
        mask[mark_top : mark_top + m, mark_left : mark_left + m] |= mark > gl.INK_THRESHOLD
    return char, family, box, mask


def _outside(box: tuple[int, int, int, int], zones: list[tuple[int, int, int, int]]) -> bool:
    return all(box[2] <= z[0] or z[2] <= box[0] or box[3] <= z[1] or z[3] <= box[1] for z in zones)


def render_scene(
    rng: np.random.Generator, size: int, layout: str = "v1"
) -> tuple[np.ndarray, list[SceneObject]]:
    """One scene: uint8 [size, size, 3] pixels and its objects with their cues (module doc), composed by
    :data:`LAYOUTS` ``[layout]``. The context rules only pick which cue names an object (:func:`category`),
    so they never change a pixel."""
    geometry = LAYOUTS[layout]
    scene = _Scene(rng, size)
    _clutter(scene, int(rng.integers(4, 10)))
    zones = _zones(scene, geometry)
    for zone in zones:
        mask = np.zeros((size, size), dtype=bool)
        mask[zone.box[1] : zone.box[3], zone.box[0] : zone.box[2]] = True
        scene.objects.append(SceneObject(zone.box, mask, "zone", None, zone.type, outer=zone.outer))
    _clutter(scene, int(rng.integers(3, 8)))
    glyph_boxes: list[tuple[int, int, int, int]] = []
    whole = (0, 0, size, size)

    def add(placed, role: str, **cue: int) -> None:
        if placed is not None:
            char, family, box, mask = placed
            glyph_boxes.append(box)
            scene.objects.append(SceneObject(box, mask, role, char, family, **cue))

    if rng.random() < LARGE_CHANCE:
        mark = int(rng.integers(2))
        large = _glyph(
            scene, scene.log_side(LARGE_SIDE), whole, glyph_boxes, mark, (), geometry.mark_at_centre
        )
        add(large, "large", mark=mark)
    zone_boxes = () if geometry.medium_anywhere else tuple(zone.box for zone in zones)
    for _ in range(int(rng.integers(MEDIUM_COUNT[0], MEDIUM_COUNT[1] + 1))):  # outside zones, or anywhere
        add(_glyph(scene, scene.log_side(MEDIUM_SIDE), whole, glyph_boxes, keep_out=zone_boxes), "medium")
    for zone in zones:
        inner = zone.inner(scene, geometry)
        usable = max(0, inner[2] - inner[0]) * max(0, inner[3] - inner[1]) / scene.scale**2
        for _ in range(int(np.clip(round(usable * geometry.small_per_px), *SMALL_PER_ZONE))):
            add(_glyph(scene, scene.log_side(SMALL_SIDE), inner, glyph_boxes), "small", zone=zone.type)
    pixels = scene.pixels + rng.normal(0.0, rng.uniform(2.0, 8.0), scene.pixels.shape)
    return pixels.round().clip(0, 255).astype(np.uint8), scene.objects
