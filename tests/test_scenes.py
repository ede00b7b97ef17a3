"""The scenes proxy (raynas/data/scenes.py) and what a detector sees of it (raynas/data/level_stats.py):
deterministic generation into folders raynas made, valid COCO annotations with masks, context rules that
change labels and never pixels, per-level positives that agree with the FCOS rule computed here by hand,
and a test split of its own. Tiny image counts: the whole module runs in seconds."""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from raynas.cli import main as raynas_main
from raynas.config import ConfigError
from raynas.data import scenes
from raynas.data.annotations import validate_coco_dict
from raynas.data.config import DataConfig
from raynas.data.glyphs import HUE_FAMILIES
from raynas.data.level_stats import LEVELS, level_statistics
from raynas.data.loaders import base_dataset, build_dataset, ensure_dataset
from raynas.models.build import build_model
from raynas.models.config import ModelConfig

COUNTS = {"num_train": 6, "num_val": 3, "num_test": 3}
SIZE = scenes.REFERENCE_SIZE


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path -> sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def annotations(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def one_line(capfd: pytest.CaptureFixture, code: int, *needles: str) -> str:
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("raynas: error: ") and all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def with_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenes.generate_scenes(tmp_path_factory.mktemp("scenes") / "on", **COUNTS, progress=False)


@pytest.fixture(scope="module")
def without_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scenes") / "off"
    return scenes.generate_scenes(root, **COUNTS, context_small=False, context_large=False, progress=False)


def test_the_same_settings_give_byte_identical_files(tmp_path: Path, with_context: Path) -> None:
    again = scenes.generate_scenes(tmp_path / "again", **COUNTS, progress=False)
    assert tree(again) == tree(with_context)
    files = tree(with_context)
    assert sum(name.endswith(".jpg") for name in files) == sum(COUNTS.values())
    other_seed = scenes.generate_scenes(tmp_path / "seed1", **COUNTS, seed=1, progress=False)
    assert tree(other_seed)["train/000000.jpg"] != files["train/000000.jpg"]


def test_a_folder_of_other_settings_or_of_the_user_is_refused_and_kept(tmp_path: Path, capfd) -> None:
    root = tmp_path / "scenes"
    flags = ["--train", "2", "--val", "1", "--test", "1"]
    assert raynas_main(["data", "scenes", "--out", str(root), *flags]) == 0
    capfd.readouterr()  # the progress bars
    before = tree(root)
    for changed in (["--seed", "1"], ["--no-context"], ["--size", "256"]):
        one_line(capfd, raynas_main(["data", "scenes", "--out", str(root), *flags, *changed]),
                 "--out", "other settings", "--replace")  # fmt: skip
        assert tree(root) == before
    assert raynas_main(["data", "scenes", "--out", str(root), *flags]) == 0  # already there: kept
    assert tree(root) == before
    assert raynas_main(["data", "scenes", "--out", str(root), *flags, "--no-context", "--replace"]) == 0
    assert annotations(root, "train")["info"]["context_small"] is False
    capfd.readouterr()
    digits = tmp_path / "mine"
    (digits / "train").mkdir(parents=True)
    (digits / "train" / "photo.jpg").write_bytes(b"the user's")
    one_line(capfd, raynas_main(["data", "scenes", "--out", str(digits), *flags, "--replace"]),
             "raynas did not make")  # fmt: skip
    assert (digits / "train" / "photo.jpg").read_bytes() == b"the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "scenes"]  # no staging left behind


def test_every_annotation_is_a_valid_box_with_its_mask(with_context: Path) -> None:
    names = [f"{g}.{t}" for g in scenes.GLYPHS for t in "ab"] + ["zone.a", "zone.b"]
    for split in ("train", "val", "test"):
        data = annotations(with_context, split)
        validate_coco_dict(data, split)
        assert [c["name"] for c in data["categories"]] == names
        assert all(img["width"] == img["height"] == SIZE for img in data["images"])
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            assert min(x, y) >= 0 and max(x + w, y + h) <= SIZE and min(w, h) > 0, ann["bbox"]
            assert ann["area"] == w * h
            rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
            assert mask_utils.toBbox(rle).tolist() == [x, y, w, h]  # the mask's bbox is the box
    cfg = DataConfig(root=str(with_context), format="scenes", image_size=SIZE, **COUNTS)
    image, target = build_dataset(cfg, "train", masks=True)[0]  # the real loader reads them
    assert image.shape == (3, SIZE, SIZE) and target["masks"].shape[1:] == (SIZE, SIZE)
    assert len(target["masks"]) == len(target["boxes"]) > 0


def _hue_family(pixels: np.ndarray) -> int | None:
    """The hue family (0 a, 1 b) of the median colour of ``pixels`` [n, 3], None if it is in neither."""
    hue = colorsys.rgb_to_hsv(*(np.median(pixels, axis=0) / 255.0))[0]
    for family, (low, high) in enumerate(HUE_FAMILIES):
        if any(low - 0.04 <= h <= high + 0.04 for h in (hue, hue - 1.0)):
            return family
    return None


def test_context_rules_change_labels_as_designed_and_never_pixels(with_context, without_context) -> None:
    on, off = tree(with_context), tree(without_context)
    assert {k: v for k, v in on.items() if k.endswith(".jpg")} == {
        k: v for k, v in off.items() if k.endswith(".jpg")
    }
    anns_on, anns_off = (
        annotations(with_context, "train")["annotations"],
        annotations(without_context, "train")["annotations"],
    )
    assert [a["bbox"] for a in anns_on] == [a["bbox"] for a in anns_off]
    # the rules at work on scenes rendered here, whose cues are known: the tag comes from the zone / the
    # mark with the rules on, from the object's own colour with them off
    agree, checked = [], 0
    for index in range(12):
        pixels, objects = scenes.render_scene(np.random.default_rng([7, index]), SIZE)
        zones = [o for o in objects if o.role == "zone"]
        for obj in objects:
            rule_on, rule_off = scenes.category(obj, True, True), scenes.category(obj, False, False)
            assert rule_off == f"{obj.char or 'zone'}.{'ab'[obj.hue]}"
            if obj.role == "small":
                assert rule_on == f"{obj.char}.{'ab'[obj.zone]}"
                home = [z for z in zones if all(z.box[i] <= obj.box[i] for i in (0, 1))
                        and all(obj.box[i] <= z.box[i] for i in (2, 3))]  # fmt: skip
                assert [z.hue for z in home] == [obj.zone]  # the cue is the type of the zone it sits in
                agree.append(obj.zone == obj.hue)
            elif obj.role == "large":
                assert rule_on == f"{obj.char}.{'ab'[obj.mark]}"
                agree.append(obj.mark == obj.hue)
            else:
                assert rule_on == rule_off
            if obj.role != "zone" and obj.mask.sum() >= 40:  # the colour cue is what the pixels show
                assert _hue_family(pixels[obj.mask].astype(float)) == obj.hue
                checked += 1
    assert checked >= 12 and len(agree) >= 20
    assert 0.2 < np.mean(agree) < 0.8  # with the rules on, an object's colour does not give its tag


GRIDS = (40, 20, 10, 5, 3)  # P3..P7 map sizes of a 320 px input (strides 8, 16, 32, then two stride-2 convs)


def fcos_rule(box: list[float], anchors: tuple[float, ...]) -> list[int]:
    """Positive locations per level of one box, by the FCOS rule as torchvision states it (written out here,
    independently): a location (one per map cell, at column * stride, row * stride with stride = 320 //
    map size) is positive on level k when it lies inside the box, within 1.5 x anchor_k of its centre
    (Chebyshev), and max(l, t, r, b) lies in (4, 8) x anchor_k, from 0 on P3 and to infinity on P7."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    counts = []
    for level, (grid, anchor) in enumerate(zip(GRIDS, anchors, strict=True)):
        stride = SIZE // grid
        lower = 0.0 if level == 0 else 4 * anchor
        upper = math.inf if level == len(GRIDS) - 1 else 8 * anchor
        count = 0
        for row in range(grid):
            for col in range(grid):
                x, y = col * stride, row * stride
                ltrb = (x - x0, y - y0, x1 - x, y1 - y)
                near = max(abs(x - cx), abs(y - cy)) < 1.5 * anchor
                count += min(ltrb) > 0 and near and lower < max(ltrb) < upper
        counts.append(count)
    return counts


def test_level_statistics_agree_with_the_fcos_rule_on_hand_made_images(tmp_path: Path, capfd) -> None:
    boxes = [[100, 100, 120, 118], [40, 52, 100, 121], [20, 30, 200, 250], [8, 6, 312, 300], [0, 0, 320, 320],
             [145, 145, 150, 151], [200, 10, 300, 60], [60, 190, 150, 260]]  # fmt: skip
    images = [
        {"id": i + 1, "file_name": f"{i}.jpg", "width": SIZE, "height": SIZE} for i in range(len(boxes))
    ]
    anns = [
        {"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": [x0, y0, x1 - x0, y1 - y0],
         "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
        for i, (x0, y0, x1, y1) in enumerate(boxes)
    ]  # fmt: skip
    path = tmp_path / "hand.json"
    categories = [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    anchors = scenes.scenes_anchor_sizes(SIZE)
    expected = np.array([fcos_rule(box, anchors) for box in boxes])
    assert (expected.sum(axis=1) == 0).sum() >= 1 and (expected.sum(axis=0) > 0).sum() >= 4  # a real test
    stats = level_statistics(path, anchors, batch=3)
    assert [stats["positive_locations"][level] for level in LEVELS] == expected.sum(axis=0).tolist()
    assert stats["objects_without_positive"] == int((expected.sum(axis=1) == 0).sum())
    assert [stats["objects_with_positives_on"][level] for level in LEVELS] == (expected > 0).sum(0).tolist()
    sides = [math.sqrt((x1 - x0) * (y1 - y0)) for x0, y0, x1, y1 in boxes]
    assert stats["small_share"] == sum(s < 32 for s in sides) / len(sides)
    assert stats["classes"] == {"one": 4, "two": 4}
    out = tmp_path / "levels.json"
    flags = ["--anchor-sizes", *map(str, anchors), "--json", str(out)]
    assert raynas_main(["data", "levels", "--annotations", str(path), *flags]) == 0
    assert json.loads(out.read_text())["positive_locations"] == stats["positive_locations"]
    capfd.readouterr()
    one_line(capfd, raynas_main(["data", "levels", "--annotations", str(path), "--anchor-sizes", "4", "8"]),
             "--anchor-sizes needs 5")  # fmt: skip
    one_line(capfd, raynas_main(["data", "levels", "--data", str(tmp_path / "none")]), "does not exist")


def test_every_level_gets_positives_on_generated_scenes(with_context: Path) -> None:
    stats = level_statistics(with_context / "annotations" / "instances_train.json")  # the recipe's anchors
    assert stats["anchor_sizes"] == list(scenes.scenes_anchor_sizes(SIZE))
    assert all(stats["positive_locations"][level] > 0 for level in LEVELS), stats["positive_locations"]
    model = build_model(ModelConfig(min_size=SIZE, max_size=SIZE, anchor_sizes=list(scenes.ANCHOR_SIZES)), 23)
    assert [s[0] for s in model.anchor_generator.sizes] == list(scenes.ANCHOR_SIZES)


def test_the_test_split_is_its_own_images(with_context: Path) -> None:
    cfg = DataConfig(root=str(with_context), format="scenes", image_size=SIZE, search_fraction=0.34, **COUNTS)
    before = tree(with_context)
    assert ensure_dataset(cfg) == with_context and tree(with_context) == before  # there: not generated again
    seen: dict[str, set[str]] = {}
    for split in ("train", "search", "val", "test"):
        dataset = build_dataset(cfg, split)
        seen[split] = {
            hashlib.sha256(dataset[i][0].numpy().tobytes()).hexdigest() for i in range(len(dataset))
        }
        assert len(seen[split]) == len(dataset)
    assert len(seen["train"]) + len(seen["search"]) == COUNTS["num_train"]
    assert (
        len(seen["test"]) == COUNTS["num_test"] and base_dataset(build_dataset(cfg, "test")).num_classes == 23
    )
    others = seen["train"] | seen["search"] | seen["val"]
    assert (
        not seen["test"] & others and not seen["train"] & seen["search"] and not seen["val"] & seen["train"]
    )
    with pytest.raises(ConfigError, match="data.root .* other settings"):
        ensure_dataset(DataConfig(root=str(with_context), format="scenes", image_size=SIZE, seed=1, **COUNTS))
    with pytest.raises(ValueError, match="digits has no test split"):
        build_dataset(DataConfig(root=str(with_context), format="digits"), "test")


def test_tables_report_the_test_split_where_the_data_have_one() -> None:
    """What the evidence tables report (raynas.jobs.arms.reported_split): test on scenes and on COCO with test
    annotations; val on digits and Pascal VOC, which have no test split of their own."""
    from raynas.data.loaders import has_test_split

    assert has_test_split(DataConfig(root="d", format="scenes"))
    assert has_test_split(DataConfig(root="d", format="coco", test_annotations="t.json"))
    assert not has_test_split(DataConfig(root="d", format="coco"))
    assert not has_test_split(DataConfig(root="d", format="digits"))
    assert not has_test_split(DataConfig(root="d", format="voc"))


@pytest.mark.parametrize("layout", ["far", "pair", "outer"])
def test_layouts_keep_small_glyphs_away_from_their_zones_border(layout: str) -> None:
    """far: one zone, small glyphs >= 72 px (at 320) inside its border; pair: two zones of opposite types
    in every scene, small glyphs >= 40 px inside; outer: pair zones whose type shows on the outer side only,
    small glyphs >= 64 px from that side and >= 8 px from the others. Data made before layouts existed
    stay v1."""
    from raynas.data.scene_layout import DEFAULT_LAYOUT, LAYOUTS, NEAR_MARGIN, ZONE_BORDER

    margin = LAYOUTS[layout].zone_margin + ZONE_BORDER[0]
    for index in range(6):
        _, objects = scenes.render_scene(np.random.default_rng([11, index]), 320, layout)
        zones = [o for o in objects if o.role == "zone"]
        if layout != "far":
            assert sorted(zone.hue for zone in zones) == [0, 1]
        for glyph in (o for o in objects if o.role == "small"):
            inside = [z for z in zones if z.box[0] <= glyph.box[0] and glyph.box[2] <= z.box[2]
                      and z.box[1] <= glyph.box[1] and glyph.box[3] <= z.box[3]]  # fmt: skip
            assert len(inside) == 1 and inside[0].hue == glyph.zone
            zone = inside[0].box
            gaps = (
                glyph.box[0] - zone[0],
                glyph.box[1] - zone[1],
                zone[2] - glyph.box[2],
                zone[3] - glyph.box[3],
            )
            if inside[0].outer is None:
                assert min(gaps) >= margin
            else:  # the outer side is the one at the canvas edge
                assert gaps[inside[0].outer] >= margin
                assert min(gaps) >= NEAR_MARGIN + ZONE_BORDER[0]
    assert scenes.scenes_settings(layout=layout)["layout"] == layout
    # v1 data (made before layouts existed) record none; the default is the proxy's layout
    assert "layout" not in scenes.scenes_settings(layout="v1")
    assert scenes.scenes_settings()["layout"] == DEFAULT_LAYOUT == DataConfig().scenes_layout
    with pytest.raises(ValueError, match="layout"):
        scenes.scenes_settings(layout="nope")


@pytest.mark.parametrize(
    ("layout", "digest"),
    [
        ("v1", "7ab65b896ce25ead"),
        ("far", "0c7827c9f27bf709"),
        ("pair", "7db7c976dca5875b"),
        ("outer", "fec1c068fe99053e"),
    ],
)
def test_each_layout_draws_the_pixels_its_committed_calibration_was_measured_on(
    layout: str, digest: str
) -> None:
    """Pinned: a refactor that changes the order of random draws would silently change every layout's data
    (and make the committed calibration tries irreproducible). One Pillow / numpy build."""
    pixels, _ = scenes.render_scene(np.random.default_rng([0, 0, 0]), 320, layout)
    assert hashlib.sha256(pixels.tobytes()).hexdigest()[:16] == digest


def test_outer_layout_shows_the_zone_type_on_one_side_and_marks_large_glyphs_at_their_centre() -> None:
    """Layout ``outer``: a zone's border has the type's hue family on its outer side only (the rest is grey;
    glyphs and clutter may cover bits of either), and a large glyph's mark sits at its box's centre, inside
    its mask."""
    from matplotlib.colors import rgb_to_hsv

    from raynas.data.glyphs import HUE_FAMILIES
    from raynas.data.scene_layout import LAYOUTS, _Scene, _zones

    for index in range(6):  # the zones as painted, before clutter and glyphs may cover bits of them
        scene = _Scene(np.random.default_rng([12, index]), 320)
        zones = _zones(scene, LAYOUTS["outer"])
        hsv = rgb_to_hsv(scene.pixels.clip(0, 255) / 255.0)
        for zone in zones:
            (left, top, right, bottom), b = zone.box, zone.border  # each side without the corners
            sides = (hsv[top + b : bottom - b, left + 1], hsv[top + 1, left + b : right - b],
                     hsv[top + b : bottom - b, right - 2], hsv[bottom - 2, left + b : right - b])  # fmt: skip
            low, high = HUE_FAMILIES[zone.type]
            for side, line in enumerate(sides):
                coloured = (line[:, 1] > 0.5) & (((line[:, 0] - low) % 1.0) <= high - low)
                assert coloured.all() if side == zone.outer else not coloured.any()
    for index in range(6):
        _, objects = scenes.render_scene(np.random.default_rng([12, index]), 320, "outer")
        for glyph in (o for o in objects if o.role == "large"):
            row, col = (glyph.box[1] + glyph.box[3]) // 2, (glyph.box[0] + glyph.box[2]) // 2
            assert glyph.mask[row - 1 : row + 2, col - 1 : col + 2].any()
