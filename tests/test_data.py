"""raynas.data: the digits generator, COCO / VOC datasets, their error messages, transforms, collate."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader

from raynas.data import (
    CocoDetection,
    Compose,
    DatasetError,
    RandomHorizontalFlip,
    VOCDetection,
    detection_collate,
    generate_digits,
)
from raynas.data.digits import _digit_pools


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


# ---------------------------------------------------------------- digits generator


def test_digits_deterministic_for_a_seed(tmp_path: Path) -> None:
    def make(name: str, seed: int) -> Path:
        return generate_digits(
            tmp_path / name, num_train=4, num_val=2, image_size=64, seed=seed, progress=False
        )

    a, b, c = make("a", 0), make("b", 0), make("c", 1)
    for split in ("train", "val"):
        ann = f"annotations/instances_{split}.json"
        assert (a / ann).read_bytes() == (b / ann).read_bytes()
        assert (a / ann).read_bytes() != (c / ann).read_bytes()
    assert (a / "train/000000.png").read_bytes() == (b / "train/000000.png").read_bytes()
    assert (a / "train/000000.png").read_bytes() != (c / "train/000000.png").read_bytes()


def test_digits_statistics(tmp_path: Path) -> None:
    root = generate_digits(tmp_path, num_train=24, num_val=2, image_size=128, seed=0, progress=False)
    coco = _quiet_coco(root / "annotations" / "instances_train.json")
    assert sorted(coco.cats) == list(range(1, 11))
    assert [coco.cats[i]["name"] for i in range(1, 11)] == [str(d) for d in range(10)]
    assert len(coco.imgs) == 24
    sides = []
    for image_id, image in coco.imgs.items():
        assert (image["width"], image["height"]) == (128, 128)
        assert (root / "train" / image["file_name"]).is_file()
        anns = coco.imgToAnns[image_id]
        assert 1 <= len(anns) <= 6
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 128 and y + h <= 128
            assert ann["iscrowd"] == 0 and ann["area"] == w * h
            sides += [w, h]
    assert min(sides) < 16 and max(sides) > 40


def test_digits_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate_digits(tmp_path, num_train=2, num_val=1, image_size=32, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "digits train: 100%" in err and "2/2" in err and "digits val: 100%" in err  # tqdm bars


def test_digits_val_scans_are_unseen() -> None:
    pools = _digit_pools()
    (train, train_labels), (val, val_labels) = pools["train"], pools["val"]
    assert len(train) + len(val) == 1797
    assert set(train_labels.tolist()) == set(val_labels.tolist()) == set(range(10))
    assert 0.15 < len(val) / 1797 < 0.25


def test_digits_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        generate_digits(tmp_path, image_size=8, progress=False)


# ---------------------------------------------------------------- COCO dataset


def test_coco_items_follow_the_contract(tiny_digits: Path) -> None:
    ds = CocoDetection(tiny_digits / "train", tiny_digits / "annotations" / "instances_train.json")
    assert len(ds) == 8 and ds.num_classes == 11 and ds.category_names[1] == "0"
    assert ds.image_ids == sorted(ds.coco.imgs)
    assert ds.check_files() == 8
    for index in range(len(ds)):
        image, target = ds[index]
        assert image.dtype == torch.float32 and image.shape == (3, 96, 96)
        assert image.min() >= 0.0 and image.max() <= 1.0
        boxes, labels = target["boxes"], target["labels"]
        assert boxes.dtype == torch.float32 and boxes.shape[1] == 4 and boxes.shape[0] >= 1
        assert labels.dtype == torch.int64 and labels.shape == (boxes.shape[0],)
        assert ((labels >= 1) & (labels <= 10)).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all() and (boxes <= 96).all()
        assert isinstance(target["image_id"], int) and target["image_id"] == ds.image_ids[index]


def _write_coco(
    tmp_path: Path,
    images: list[dict[str, Any]] | None = None,
    annotations: list[dict[str, Any]] | None = None,
    modes: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """A one-image (64x64) COCO dataset with annotation id 7 on image id 1, unless told otherwise."""
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}]
    if annotations is None:
        annotations = [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 30], "iscrowd": 0}]
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    for record in images:
        mode = (modes or {}).get(record["file_name"], "RGB")
        Image.new(mode, (record["width"], record["height"])).save(image_dir / record["file_name"])
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(data))
    return image_dir, ann_file


def test_grey_rgba_palette_and_16_bit_images_become_rgb(tmp_path: Path) -> None:
    modes = {"l.png": "L", "rgba.png": "RGBA", "p.png": "P", "i16.png": "I;16"}
    images = [{"id": i + 1, "file_name": name, "width": 20, "height": 12} for i, name in enumerate(modes)]
    image_dir, ann_file = _write_coco(tmp_path, images=images, annotations=[], modes=modes)
    Image.fromarray(np.full((12, 20), 200, dtype=np.uint8)).save(image_dir / "l.png")
    ds = CocoDetection(image_dir, ann_file)
    for index in range(len(ds)):
        image, target = ds[index]
        assert image.shape == (3, 12, 20) and image.dtype == torch.float32
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    grey, _ = ds[0]
    assert torch.allclose(grey, torch.full_like(grey, 200 / 255))


def test_crowd_annotations_stay_in_coco_but_not_in_targets(tmp_path: Path) -> None:
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 30, 10, 10], "iscrowd": 1},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, -0.5, 64.5, 10]},  # within 1 px tolerance
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [64, 3, 0.5, 10]},  # empty once clipped
    ]
    ds = CocoDetection(*_write_coco(tmp_path, annotations=annotations))
    _, target = ds[0]
    assert target["boxes"].tolist() == [[1, 2, 11, 12], [0, 0, 64, 9.5]]
    assert len(ds.coco.anns) == 4 and ds.coco.anns[3]["area"] == 645.0 and ds.coco.anns[3]["iscrowd"] == 0


def test_drop_empty_boxes_keeps_them_for_evaluation_only(tmp_path: Path) -> None:
    annotations = [
        {"id": 918, "image_id": 1, "category_id": 1, "bbox": [5, 5, 3, 0]},  # like COCO train2017's two
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]},
    ]
    image_dir, ann_file = _write_coco(tmp_path, annotations=annotations)
    with pytest.raises(DatasetError, match="annotation id 918 .* pass drop_empty_boxes=True"):
        CocoDetection(image_dir, ann_file)
    with pytest.warns(UserWarning, match=r"1 zero-size boxes \(annotation ids \[918\]\)"):
        ds = CocoDetection(image_dir, ann_file, drop_empty_boxes=True)
    assert ds[0][1]["boxes"].tolist() == [[1, 1, 5, 5]] and ds.coco.anns[918]["area"] == 0.0


def _ann(**changes: Any) -> list[dict[str, Any]]:
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 30], "iscrowd": 0, **changes}
    return [{k: v for k, v in ann.items() if v is not None}]


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (_ann(bbox=[10, 10, 0, 5]), "zero or negative size"),
        (_ann(bbox=[10, 10, 20, -3]), "zero or negative size"),
        (_ann(bbox=[50, 10, 20, 5]), "outside the 64x64 image"),
        (_ann(bbox=[-3, 10, 20, 5]), "at most 1 px"),
        (_ann(category_id=99), "unknown category id 99"),
        (_ann(bbox=[1, 2, "x", 4]), "expected 4 finite numbers"),
        (_ann(bbox=None), "missing key(s) ['bbox']"),
    ],
)
def test_invalid_annotations_name_file_image_and_annotation(
    tmp_path: Path, annotations: list[dict[str, Any]], expected: str
) -> None:
    image_dir, ann_file = _write_coco(tmp_path, annotations=annotations)
    with pytest.raises(DatasetError) as info:
        CocoDetection(image_dir, ann_file)
    message = str(info.value)
    assert expected in message and str(ann_file) in message
    assert "image id 1" in message and ("annotation id 7" in message or "(id 7," in message)


def test_malformed_json_reports_line_and_column(tmp_path: Path) -> None:
    ann_file = tmp_path / "bad.json"
    ann_file.write_text('{\n  "images": [],\n  "annotations": [,]\n}')
    with pytest.raises(DatasetError, match=r"bad\.json: malformed JSON at line 3, column 19"):
        CocoDetection(tmp_path, ann_file)


_CATS = [{"id": 1, "name": "a"}]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"images": [], "annotations": [], "categories": _CATS}, "empty (no images)"),
        ({"images": [], "annotations": []}, "missing top-level key(s) ['categories']"),
        (
            {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": _CATS},
            "image record #0 (id 1, file 'a.png') is missing key(s) ['width', 'height']",
        ),
        ({"images": [], "annotations": [], "categories": [{"id": 0, "name": "a"}]}, "renumber"),
    ],
)
def test_invalid_dataset_structure(tmp_path: Path, data: dict[str, Any], expected: str) -> None:
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        CocoDetection(tmp_path, ann_file)
    assert expected in str(info.value) and str(ann_file) in str(info.value)


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        CocoDetection(tmp_path, tmp_path / "nope.json")


def test_missing_image_file(tmp_path: Path) -> None:
    image_dir, ann_file = _write_coco(tmp_path)
    (image_dir / "a.png").unlink()
    ds = CocoDetection(image_dir, ann_file)  # image files are checked lazily
    with pytest.raises(FileNotFoundError) as info:
        ds[0]
    assert str(ann_file) in str(info.value) and "image id 1 ('a.png')" in str(info.value)
    with pytest.raises(FileNotFoundError, match="1 of 1 images .* have problems"):
        ds.check_files()


def test_unreadable_image_file(tmp_path: Path) -> None:
    image_dir, ann_file = _write_coco(tmp_path)
    (image_dir / "a.png").write_bytes(b"\x00garbage, not a png" * 10)
    ds = CocoDetection(image_dir, ann_file)
    with pytest.raises(DatasetError, match=r"image id 1 \('a.png'\): cannot read .*a\.png as an image"):
        ds[0]
    with pytest.raises(DatasetError, match="cannot read"):
        ds.check_files()


def test_image_size_disagreeing_with_json(tmp_path: Path) -> None:
    image_dir, ann_file = _write_coco(tmp_path)
    Image.new("RGB", (32, 48)).save(image_dir / "a.png")
    with pytest.raises(DatasetError, match="is 32x48 pixels but the annotations say 64x64"):
        CocoDetection(image_dir, ann_file)[0]


# ---------------------------------------------------------------- Pascal VOC

_VOC_XML = """<annotation>
  <filename>{file}</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
_VOC_OBJECT = """<object><name>{name}</name><difficult>{difficult}</difficult>
  <bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox>
</object>"""


def _write_voc(root: Path, images: dict[str, tuple[str, int, int, list[tuple[str, int, tuple]]]]) -> Path:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for voc_id, (file, w, h, objects) in images.items():
        Image.new("RGB", (w, h), (90, 120, 30)).save(root / "JPEGImages" / file)
        xml_objects = "".join(_VOC_OBJECT.format(name=n, difficult=d, box=b) for n, d, b in objects)
        (root / "Annotations" / f"{voc_id}.xml").write_text(
            _VOC_XML.format(file=file, w=w, h=h, objects=xml_objects)
        )
    (root / "ImageSets/Main/train.txt").write_text("\n".join(images) + "\n")
    return root


def test_voc_dataset(tmp_path: Path) -> None:
    first = [("dog", 0, (11, 21, 50, 60)), ("person", 1, (1, 1, 5, 5))]
    second = [("cat", 0, (1, 1, 50, 40))]
    images = {
        "2007_000001": ("2007_000001.jpg", 100, 80, first),
        "2007_000002": ("2007_000002.png", 50, 40, second),
    }
    root = _write_voc(tmp_path, images)
    ds = VOCDetection(root, "train")
    assert len(ds) == 2 and ds.num_classes == 21 and ds.voc_ids == ["2007_000001", "2007_000002"]
    assert sorted(ds.coco.cats) == list(range(1, 21)) and ds.category_names[12] == "dog"
    image, target = ds[0]
    assert image.shape == (3, 80, 100) and image.dtype == torch.float32
    assert target["boxes"].tolist() == [[10, 20, 50, 60]]  # 1-based inclusive -> 0-based edges
    assert target["labels"].tolist() == [12]  # "dog" is class 12; the difficult person is not a target
    assert [a["iscrowd"] for a in ds.coco.imgToAnns[1]] == [0, 1]
    image, target = ds[1]
    assert image.shape == (3, 40, 50) and target["boxes"].tolist() == [[0, 0, 50, 40]]

    # perfect detections of the non-difficult objects score AP = 1: the difficult one is ignored
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in ds.coco.anns.values()
        if not a["iscrowd"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(ds.coco, ds.coco.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_voc_custom_classes_and_errors(tmp_path: Path) -> None:
    objects = [("unicorn", 0, (2, 2, 9, 9))]
    root = _write_voc(tmp_path, {"img1": ("img1.png", 20, 20, objects)})
    with pytest.raises(DatasetError) as info:
        VOCDetection(root)
    message = str(info.value)
    assert "img1.xml" in message and "object #0" in message and "'unicorn'" in message
    ds = VOCDetection(root, class_names=["horse", "unicorn"])
    assert ds.num_classes == 3 and ds[0][1]["labels"].tolist() == [2]

    (root / "Annotations/img1.xml").write_text("<annotation>\n  <size><width>3</width></size\n</annotation>")
    with pytest.raises(DatasetError, match=r"img1\.xml: malformed XML at line 3, column 0"):
        VOCDetection(root, class_names=["unicorn"])

    _write_voc(tmp_path, {"img1": ("img1.png", 20, 20, [("unicorn", 0, (2, 2, 30, 9))])})
    with pytest.raises(DatasetError, match=r"img1\.xml: object #0 .*xmax=30.* outside the 20x20 image"):
        VOCDetection(root, class_names=["unicorn"])

    with pytest.raises(
        FileNotFoundError, match=r"val\.txt not found \(image sets found there: \['train'\]\)"
    ):
        VOCDetection(root, image_set="val")


# ---------------------------------------------------------------- transforms and collate


def test_horizontal_flip_moves_boxes() -> None:
    image = torch.zeros(3, 4, 10)
    image[:, 2:6, 1:4] = 1.0  # the box [1, 2, 4, 6] in xyxy pixel edges
    target = {"boxes": torch.tensor([[1.0, 2.0, 4.0, 6.0]]), "labels": torch.tensor([3]), "image_id": 5}
    flip = RandomHorizontalFlip(p=1.0)
    flipped, flipped_target = flip(image, target)
    assert flipped_target["boxes"].tolist() == [[6.0, 2.0, 9.0, 6.0]]
    assert flipped[:, 2:6, 6:9].eq(1).all() and flipped.sum() == image.sum()
    assert target["boxes"].tolist() == [[1.0, 2.0, 4.0, 6.0]]  # the input is not modified
    back, back_target = flip(flipped, flipped_target)
    assert torch.equal(back, image) and torch.equal(back_target["boxes"], target["boxes"])
    same, same_target = RandomHorizontalFlip(p=0.0)(image, target)
    assert same is image and same_target is target
    with pytest.raises(ValueError, match="p must be in"):
        RandomHorizontalFlip(p=2)


def test_compose_applies_in_order() -> None:
    calls: list[str] = []

    def tag(name: str):
        def transform(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
            calls.append(name)
            return image + 1, target

        return transform

    image, _ = Compose([tag("a"), tag("b")])(torch.zeros(1), {})
    assert calls == ["a", "b"] and image.item() == 2


def test_collate_with_a_dataloader(tiny_digits: Path) -> None:
    ds = CocoDetection(
        tiny_digits / "val",
        tiny_digits / "annotations" / "instances_val.json",
        transforms=RandomHorizontalFlip(),
    )
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=detection_collate)))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 3
    assert [t["image_id"] for t in targets] == ds.image_ids[:3]
    uneven = [(torch.zeros(3, 5, 7), {"image_id": 1}), (torch.zeros(3, 9, 4), {"image_id": 2})]
    images, targets = detection_collate(uneven)
    assert [i.shape[1:] for i in images] == [(5, 7), (9, 4)] and [t["image_id"] for t in targets] == [1, 2]
