"""Which level of a frozen body can read an object's label cue? A linear probe on the cached body outputs.

The scenes proxy's context rules make a label depend on a cue away from the object (a small glyph's tag is
the type of the zone it sits in, seen at the zone's border; a large glyph's tag is a small mark at its
corner; docs/proxy.md). A neck path can only bring a cue to a level if some body level carries it at the
object: top-down paths bring the coarse levels' (C4, C5) features to P3, bottom-up paths the fine levels'
to P5-P7. So this probe fits, per body level, a logistic regression from the feature vector at each
object's centre to its tag (training images) and scores it on other images: if no level predicts a small
glyph's zone type better than chance, no top-down path can help, whatever the neck.

Objects are grouped by size as the scenes generator places them (``raynas.data.scene_layout``): small
glyphs (longer side < 32 px at 320 px: tag = zone type with the rule on), medium ones (tag = own colour),
large ones (>= 110 px: tag = corner mark); zones themselves are left out. Ray-free: it reads the caches that
``model.cache_features`` wrote (``raynas.data.feature_cache``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raynas.data.scene_layout import LARGE_SIDE, MEDIUM_SIDE, REFERENCE_SIZE

ROLES = ("small", "medium", "large")


@dataclass(frozen=True)
class ProbeSet:
    """Per level, the feature vectors at object centres; and each object's role, tag and glyph."""

    features: dict[str, np.ndarray]  # level -> [objects, channels]
    role: np.ndarray
    tag: np.ndarray
    glyph: np.ndarray


def role_of(longer_side: float, image_size: int) -> str:
    """The placement role of a glyph from its box (the generator's size ranges, scaled to the canvas)."""
    scale = image_size / REFERENCE_SIZE
    if longer_side < MEDIUM_SIDE[0] * scale:
        return "small"
    return "large" if longer_side >= LARGE_SIDE[0] * scale else "medium"


def category_names(annotations: Path) -> dict[int, str]:
    """Contiguous label -> category name (``"<glyph>.<tag>"``), as the COCO dataset maps them."""
    categories = sorted(json.loads(annotations.read_text())["categories"], key=lambda c: c["id"])
    return {index + 1: c["name"] for index, c in enumerate(categories)}


def probe_set(cache: Path, names: dict[int, str]) -> ProbeSet:
    """The feature vector of every glyph at its box centre, per cached body level (nearest cell)."""
    record = json.loads((cache / "record.json").read_text())
    size = record["padded_size"][0]
    levels = {name: np.load(cache / f"level_{name}.npy", mmap_mode="r") for name in record["levels"]}
    targets = torch.load(cache / "targets.pt", weights_only=False)
    rows: dict[str, list[np.ndarray]] = {name: [] for name in levels}
    role, tag, glyph = [], [], []
    for index, target in enumerate(targets):
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            char, _, mark = names[int(label)].partition(".")
            if char == "zone":
                continue
            x0, y0, x1, y1 = box
            for name, array in levels.items():
                height, width = array.shape[-2:]
                row = min(int((y0 + y1) / 2 * height / size), height - 1)
                col = min(int((x0 + x1) / 2 * width / size), width - 1)
                rows[name].append(np.asarray(array[index, :, row, col], dtype=np.float32))
            role.append(role_of(max(x1 - x0, y1 - y0), size))
            tag.append(mark)
            glyph.append(char)
    return ProbeSet(
        {name: np.stack(vectors) for name, vectors in rows.items()},
        np.array(role),
        np.array(tag),
        np.array(glyph),
    )


def probe_accuracy(train: ProbeSet, held_out: ProbeSet, target: str = "tag") -> dict[str, dict[str, float]]:
    """Held-out accuracy of a logistic regression from each level's features to ``target`` ("tag" or
    "glyph"), per role; with the majority class's share as the chance level and the counts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    result: dict[str, dict[str, float]] = {}
    for role in ROLES:
        fit_rows, test_rows = train.role == role, held_out.role == role
        y_fit, y_test = getattr(train, target)[fit_rows], getattr(held_out, target)[test_rows]
        if len(set(y_fit)) < 2 or not len(y_test):
            continue
        values, counts = np.unique(y_fit, return_counts=True)
        majority = values[counts.argmax()]
        row: dict[str, float] = {"chance": float(np.mean(y_test == majority)), "fit": int(fit_rows.sum()),
                                 "held_out": int(test_rows.sum())}  # fmt: skip
        for level in train.features:
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
            model.fit(train.features[level][fit_rows], y_fit)
            row[f"C{3 + int(level)}"] = float(model.score(held_out.features[level][test_rows], y_test))
        result[role] = row
    return result


def count_tags(
    counts: dict[str, list[int]],
    output: dict,
    target: dict,
    names: dict[int, tuple[str, str, str]],
    size: int,
) -> None:
    """Add one image to ``counts`` (role -> [found with the right glyph, tag right too, objects]): a glyph
    is found by its best-scoring detection of the same character at IoU >= 0.5; zones are left out.
    ``names``: label -> ``"<glyph>.<tag>".partition(".")``."""
    from torchvision.ops import box_iou

    iou = box_iou(target["boxes"], output["boxes"])
    found = [names[int(label)] for label in output["labels"]]
    for k, (box, label) in enumerate(zip(target["boxes"].tolist(), target["labels"].tolist())):
        glyph, _, tag = names[int(label)]
        if glyph == "zone":
            continue
        row = counts[role_of(max(box[2] - box[0], box[3] - box[1]), size)]
        row[2] += 1
        hits = [j for j in range(len(found)) if iou[k, j] >= 0.5 and found[j][0] == glyph]
        if hits:
            best = max(hits, key=lambda j: float(output["scores"][j]))
            row[0] += 1
            row[1] += found[best][2] == tag


def tag_accuracy(checkpoint_dir: str | Path, split: str = "test") -> dict[str, dict[str, float]]:
    """Where a trained detector gets a glyph right, is its tag right? Per role: of the glyphs found with
    the right character (:func:`count_tags`), the share whose tag is right too, with ``found`` /
    ``objects`` counts.

    The rule's test: a small glyph's tag needs the zone's type, so a neck whose P3 cannot reach the zone's
    border (lateral-only) should sit near chance (50 %), and a neck that brings the type top-down should not;
    a tag right everywhere means the rule does not need fusion (docs/proxy.md)."""
    import torch

    from raynas.checkpoints import load_detector
    from raynas.data.loaders import base_dataset, build_dataset, make_loader

    model, cfg, _ = load_detector(checkpoint_dir)
    dataset = build_dataset(cfg.data, split, train_transforms=False)
    categories = sorted(base_dataset(dataset).coco.dataset["categories"], key=lambda c: c["id"])
    names = {index + 1: c["name"].partition(".") for index, c in enumerate(categories)}
    counts = {role: [0, 0, 0] for role in ROLES}
    model.eval()
    with torch.inference_mode():
        for images, targets in make_loader(dataset, 8, shuffle=False):
            for output, target in zip(model(images), targets, strict=True):
                count_tags(counts, output, target, names, cfg.model.min_size)
    return {
        role: {"found": found, "objects": total, "tag_right": right / found if found else float("nan")}
        for role, (found, right, total) in counts.items()
    }
