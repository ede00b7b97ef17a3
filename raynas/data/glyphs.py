"""What the scenes generator paints with: font glyphs, tiny marks, hue families and background textures.

Every source ships inside an installed dependency, so nothing is downloaded and every node of a cluster
makes the same pixels: glyphs are rendered with Pillow from the DejaVu TrueType fonts matplotlib ships
(sans, serif, mono; regular, bold, oblique), backgrounds are crops of the two photos scikit-learn ships
(``load_sample_images``) and procedural textures, and scikit-learn's handwritten digit scans
(``load_digits``) become unlabelled scribbles. Pure numpy / Pillow; :mod:`raynas.data.scenes` composes them.
"""

from __future__ import annotations

import colorsys
import functools
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# regular, bold and slanted cuts of three families: the same letter looks different, and "l", "1", "I" or
# "O", "0" differ between fonts as much as between letters
FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
)  # fmt: skip
RENDER_PX = (48, 192)  # font sizes glyphs are rendered at once (the smallest >= the object's side, if any)
INK_THRESHOLD = 0.35  # alpha above which a pixel is the object's ink (its mask; the box is the mask's bbox)
MARKS = ("+", "x")  # the two tiny marks; they differ only in detail no coarse feature map resolves
SCRIBBLE_DIGITS = (2, 3, 4, 6, 7, 9)  # handwritten clutter never looks like a labelled glyph (0 1 5 8)
# hue ranges (fractions of the colour wheel) of the two colour families that carry the context bits
HUE_FAMILIES = ((-0.05, 0.12), (0.50, 0.70))  # a: red-orange-yellow, b: cyan-blue
MAX_BACKGROUND_SATURATION = 0.25  # backgrounds stay greyish, so a family's hue is never the background's


@functools.cache
def _font(name: str, px: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    return ImageFont.truetype(str(path), px)


@functools.cache
def _glyph_image(char: str, font: str, px: int) -> Image.Image:
    """``char`` in ``font`` at ``px``, an "L" image cropped to its ink."""
    canvas = Image.new("L", (px * 2, px * 2), 0)
    ImageDraw.Draw(canvas).text((px // 2, px // 4), char, fill=255, font=_font(font, px))
    return canvas.crop(canvas.getbbox())


def glyph_alpha(rng: np.random.Generator, char: str, side: int, max_rotation: float) -> np.ndarray:
    """A float32 alpha map of ``char`` in a random font, rotated by up to ``max_rotation`` degrees, its
    aspect jittered by 0.8-1.25, its longer side ``side`` px."""
    px = next((px for px in RENDER_PX if px >= side), RENDER_PX[-1])
    base = _glyph_image(char, FONTS[int(rng.integers(len(FONTS)))], px)
    turned = base.rotate(
        float(rng.uniform(-max_rotation, max_rotation)), Image.Resampling.BILINEAR, expand=True
    )
    turned = turned.crop(turned.getbbox())
    width, height = turned.size
    width *= float(rng.uniform(0.8, 1.25))
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(turned.resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


@functools.cache
def mark_alpha(kind: str, side: int) -> np.ndarray:
    """The tiny mark ``kind`` ("+" or "x") as a ``side`` x ``side`` float32 alpha map."""
    big = side * 8
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(8, big // 4)
    if kind == "+":
        draw.line([(big // 2, 0), (big // 2, big)], fill=255, width=width)
        draw.line([(0, big // 2), (big, big // 2)], fill=255, width=width)
    else:
        draw.line([(0, 0), (big, big)], fill=255, width=width)
        draw.line([(0, big), (big, 0)], fill=255, width=width)
    small = canvas.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def family_colour(
    rng: np.random.Generator, family: int, behind: np.ndarray, min_contrast: float
) -> np.ndarray:
    """An RGB colour (float, 0-255) of hue family ``family`` that differs from ``behind`` (RGB) by at
    least ``min_contrast`` where a brightness can give it."""
    low, high = HUE_FAMILIES[family]
    hue = float(rng.uniform(low, high)) % 1.0
    saturation = float(rng.uniform(0.7, 1.0))
    best, best_gap = None, -1.0
    for value in rng.uniform(0.35, 1.0, 6):
        colour = np.array(colorsys.hsv_to_rgb(hue, saturation, float(value))) * 255.0
        gap = float(np.linalg.norm(colour - behind))
        if gap >= min_contrast:
            return colour
        if gap > best_gap:
            best, best_gap = colour, gap
    return best


def any_colour(rng: np.random.Generator, behind: np.ndarray, min_contrast: float) -> np.ndarray:
    """A random RGB colour (float, 0-255) at least ``min_contrast`` from ``behind`` where possible."""
    for _ in range(8):
        colour = rng.uniform(0.0, 255.0, 3)
        if np.linalg.norm(colour - behind) >= min_contrast:
            return colour
    return np.where(behind > 127.5, 0.0, 255.0)


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images  # two photos bundled with scikit-learn

    return tuple(np.asarray(image, dtype=np.uint8) for image in load_sample_images().images)


@functools.cache
def scribble_scans() -> np.ndarray:
    """scikit-learn's 8x8 handwritten scans of the digits in :data:`SCRIBBLE_DIGITS` (0-1 float32)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    keep = np.isin(digits.target, SCRIBBLE_DIGITS)
    return (digits.images[keep].astype(np.float32) / 16.0).clip(0.0, 1.0)


def _photo_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    photo = _photos()[int(rng.integers(len(_photos())))]
    side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2]) + 1))
    top, left = int(rng.integers(photo.shape[0] - side + 1)), int(rng.integers(photo.shape[1] - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size))
    return np.asarray(crop, dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    cells = int(rng.integers(3, 24))
    low = (rng.uniform(0, 255, (cells, cells, 3))).astype(np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    angle, period = rng.uniform(0, math.pi), rng.uniform(5.0, 40.0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
    two = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    return two[0] + (two[1] - two[0]) * (0.5 + 0.5 * wave[..., None])


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``size`` x ``size`` float32 RGB texture: a photo crop, smooth noise or stripes, turned greyish
    (saturation <= :data:`MAX_BACKGROUND_SATURATION`) and of reduced contrast."""
    kind = int(rng.integers(3))
    texture = (_photo_crop, _smooth_noise, _stripes)[kind](rng, size)
    grey = texture.mean(axis=2, keepdims=True)
    texture = grey + (texture - grey) * MAX_BACKGROUND_SATURATION * float(rng.uniform(0.0, 1.0))
    level = float(rng.uniform(40.0, 215.0))
    return level + (texture - texture.mean()) * float(rng.uniform(0.25, 0.6))


def greyish(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour (float, 0-255) of saturation <= :data:`MAX_BACKGROUND_SATURATION`."""
    hue, saturation = float(rng.uniform()), float(rng.uniform(0.0, MAX_BACKGROUND_SATURATION))
    return np.array(colorsys.hsv_to_rgb(hue, saturation, float(rng.uniform(0.15, 0.9)))) * 255.0


def hatch(size: int, period: int, base: np.ndarray) -> np.ndarray:
    """The zones' shared interior, over the whole canvas (zones cut their regions out of it): ``base``
    colour with a diagonal hatch of ``period`` px, float32 [size, size, 3]."""
    y, x = np.mgrid[0:size, 0:size]
    lines = ((x + y) % period) < 2
    return np.where(lines[..., None], base * 0.8, base).astype(np.float32)
