"""The scenes proxy: glyph scenes whose detection needs every pyramid level and fusion in both directions.

On the digits proxy 99.5 % of FCOS's positives fell on P3, so necks and level-shared heads had nothing to
do. A scene here is a 320 px canvas (COCO-format JPEGs, RLE instance masks, train / val / test) holding
about 6 objects from 6 px to nearly the canvas, about 40 % under 32 px (sqrt of the box area, as COCO's
"small"), on textured, cluttered backgrounds; with :data:`ANCHOR_SIZES` every FCOS level P3..P7 gets
10-45 % of the positive locations (docs/proxy.md, ``raynas data levels``). A scene holds:

- **zones**: large rectangles (140-310 px a side) with one interior texture shared by every zone of the image;
  a zone's type (a / b) shows only at its border, whose colour is of hue family a (red-yellow) or b
  (cyan-blue). Zones are objects themselves ("zone.a", "zone.b"); their mask is the whole rectangle.
- **glyphs**: 10 characters in confusable groups (O 0 Q, I 1 l, 5 S, 8 B) rendered from 9 DejaVu cuts,
  rotated and stretched; a glyph's class is the character and a tag a / b ("O.a", ..., 22 classes in all):
  small glyphs (10-32 px, longer side) sit inside zones, at least 24 px from the border; medium ones
  (32-96 px) outside zones; large ones (110-310 px) carry a tiny mark ("+" or "x", 6-9 px) at their
  top-right corner, inside their box and mask. Geometry: :mod:`raynas.data.scene_layout`.
- **clutter**, never labelled: glyph fragments, handwritten scribbles, decoy marks and decoy border
  segments in the families' colours, so that local appearance is not enough.

Context rules, each switchable for the control run (the images stay byte-identical; only labels change):

- ``context_small`` (top-down): a small glyph's tag is the type of the zone it sits in, seen only at the
  zone's border, which the glyph's own level (P3) does not see; its own colour is random. Off: its tag is
  its own colour's hue family, and the zone's type says nothing about it.
- ``context_large`` (bottom-up): a large glyph's tag is its mark ("+": a, "x": b), a detail only fine
  levels resolve; its colour is random. Off: its tag is its own colour's family, the mark is random.

A medium glyph's tag is always its own colour's family. The control is fair by construction: the same
pixels, the same classes and class balance; only where the deciding cue sits moves (next to the object
instead of at another scale), so a neck's gain that vanishes when the rules are off came from the rules.

Sources, all shipped inside installed dependencies (no download, the same pixels on every node): the
DejaVu fonts matplotlib ships give varied, crisp glyphs at any size with confusable pairs; scikit-learn's
two sample photos give natural textures; its handwritten digit scans give scribbles (see
:mod:`raynas.data.glyphs`). Each image has its own random generator, so the same settings give
byte-identical files whatever the number of images.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from raynas.data.digits import encode_mask
from raynas.data.provenance import claim_output, publish
from raynas.data.scene_layout import (
    DEFAULT_LAYOUT,
    GLYPHS,
    LAYOUTS,
    REFERENCE_SIZE,
    SceneObject,
    render_scene,
)
from raynas.io import atomic_write_json

__all__ = ["GLYPHS", "REFERENCE_SIZE", "SceneObject", "category", "generate_scenes", "render_scene"]

KIND = "scenes"
TAGS = ("a", "b")
CATEGORIES = tuple(f"{g}.{t}" for g in GLYPHS for t in TAGS) + tuple(f"zone.{t}" for t in TAGS)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
ENTRIES = ("train", "val", "test", "annotations")  # what generate_scenes publishes into its root
# FCOS anchor sizes P3..P7 for a REFERENCE_SIZE canvas: with torchvision's rule (level k takes
# max(l, t, r, b) in [4, 8] x anchor_k, centre radius 1.5 x anchor_k) every level gets >= 8 % of the
# positive locations of these scenes (docs/proxy.md); scenes_anchor_sizes() scales them
ANCHOR_SIZES = (4.0, 8.0, 16.0, 24.0, 44.0)
# JPEG as COCO (a quarter of PNG's size on these noisy textures), without chroma subsampling: hue is a label
# cue, and 4:2:0 would smear it on 1-2 px strokes
JPEG_QUALITY = 90


def scenes_anchor_sizes(image_size: int = REFERENCE_SIZE) -> tuple[float, ...]:
    """The recommended FCOS anchor sizes (one per level P3..P7) for scenes of ``image_size`` px."""
    return tuple(round(a * image_size / REFERENCE_SIZE, 2) for a in ANCHOR_SIZES)


def category(obj: SceneObject, context_small: bool = True, context_large: bool = True) -> str:
    """The class name of ``obj`` under the context rules (module doc): ``"<glyph>.<tag>"`` or
    ``"zone.<tag>"``; the tag is the zone's type or the mark where a rule is on, else the own colour's."""
    tag = obj.hue
    if obj.role == "small" and context_small:
        tag = obj.zone
    elif obj.role == "large" and context_large:
        tag = obj.mark
    return f"{obj.char or 'zone'}.{TAGS[tag]}"


def scenes_settings(
    num_train: int = 1000,
    num_val: int = 200,
    num_test: int = 200,
    image_size: int = REFERENCE_SIZE,
    seed: int = 0,
    context_small: bool = True,
    context_large: bool = True,
    layout: str = DEFAULT_LAYOUT,
) -> dict[str, Any]:
    """The settings a scenes dataset is generated with (what its provenance marker records), checked. The
    layout is recorded only where it is not ``v1`` (data made before layouts existed are ``v1``)."""
    for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1), ("num_test", num_test, 1),
                             ("image_size", image_size, 128), ("seed", seed, 0)):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"scenes: {name} must be an integer >= {low}, got {value!r}")
    for name, value in (("context_small", context_small), ("context_large", context_large)):
        if not isinstance(value, bool):
            raise ValueError(f"scenes: {name} must be true or false, got {value!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"scenes: layout must be one of {list(LAYOUTS)}, got {layout!r}")
    return {"num_train": num_train, "num_val": num_val, "num_test": num_test, "image_size": image_size,
            "seed": seed, "context_small": context_small, "context_large": context_large,
            **({} if layout == "v1" else {"layout": layout})}  # fmt: skip


def _write_split(out: Path, split: str, count: int, settings: dict[str, Any], progress: bool) -> None:
    size, context = settings["image_size"], (settings["context_small"], settings["context_large"])
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    (out / split).mkdir(parents=True)
    for index in tqdm(range(count), desc=f"scenes {split}", disable=not progress):
        # one generator per image: image i does not depend on how many images are generated
        rng = np.random.default_rng([settings["seed"], SPLIT_CODES[split], index])
        pixels, objects = render_scene(rng, size, settings.get("layout", "v1"))
        file_name = f"{index:06d}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        (out / split / file_name).write_bytes(buffer.getvalue())  # a staging folder: see generate_scenes
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORIES.index(category(obj, *context)) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),  # the box's: box and mask AP share one size split
                    "iscrowd": 0,
                    "segmentation": encode_mask(obj.mask),
                }
            )
    info = {
        "description": "raynas scenes: font glyphs in zones, with context rules",
        "split": split,
        **settings,
    }
    categories = [
        {
            "id": i + 1,
            "name": name,
            "supercategory": name.split(".")[0] if name.startswith("zone") else "glyph",
        }
        for i, name in enumerate(CATEGORIES)
    ]
    atomic_write_json(
        out / "annotations" / f"instances_{split}.json",
        {
            "info": info,
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        },
    )


def generate_scenes(
    out_dir: str | os.PathLike,
    num_train: int = 1000,
    num_val: int = 200,
    num_test: int = 200,
    image_size: int = REFERENCE_SIZE,
    seed: int = 0,
    context_small: bool = True,
    context_large: bool = True,
    layout: str = DEFAULT_LAYOUT,
    progress: bool = True,
    *,
    replace: bool = False,
    what: str = "scenes output",
    fix: str = "give a new or empty folder",
) -> Path:
    """Write the scenes dataset (PNG + COCO JSON with RLE instance masks) and return ``out_dir``.

    Layout: ``out_dir/{train,val,test}/NNNNNN.png``, ``out_dir/annotations/instances_{split}.json``;
    :data:`CATEGORIES` with ids 1..22 (``num_classes`` = 23). Each split has its own random streams, so
    no image repeats across splits; the same arguments give byte-identical files. ``out_dir`` must be
    missing, empty or raynas's own scenes (:func:`raynas.data.provenance.claim_output`: ``what`` names the
    flag or key, ``fix`` says what to do); scenes of other settings are replaced only with ``replace``.
    The data are written into a staging folder beside ``out_dir`` and swapped in when complete
    (:func:`raynas.data.provenance.publish`); other entries of ``out_dir`` (``pretrained/``) are kept.
    """
    settings = scenes_settings(
        num_train, num_val, num_test, image_size, seed, context_small, context_large, layout
    )
    if claim_output(out_dir, KIND, settings, replace=replace, what=what, fix=fix):
        return Path(out_dir)
    out_dir = Path(out_dir).resolve()  # the staging folder must sit on the same filesystem
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent) as staging:
        staging = Path(staging)
        for split in SPLIT_CODES:
            _write_split(staging, split, settings[f"num_{split}"], settings, progress)
        publish(staging, out_dir, ENTRIES, KIND, settings)
    return out_dir
