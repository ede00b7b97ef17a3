"""raynas writes generated data only into what it made (raynas/data/provenance.py): a folder of the user's
files survives `raynas data digits --out` and a job whose data.root points at it, byte for byte; damaged
files raynas generated are one line naming the file and the fix. Every refusal comes before Ray starts,
so these run in process and in seconds (one case runs the installed `raynas` command)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_data import TINY_DIGITS

from raynas.cli import main as raynas_main
from raynas.data.config import DataConfig
from raynas.data.digits import digits_settings
from raynas.data.loaders import ensure_dataset
from raynas.data.provenance import MARKER, read_marker

SMALL = {"num_train": 4, "num_val": 2, "image_size": 64, "seed": 0}
SMALL_FLAGS = ["--train", "4", "--val", "2", "--size", "64"]


def tree_hash(root: Path) -> str:
    """A hash of every entry under ``root`` (names and bytes): equal before and after = nothing changed."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def refused(capfd: pytest.CaptureFixture, code: int, *needles: str) -> str:
    """Exit 2 with one stderr line naming ``needles``, no traceback."""
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("raynas: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def user_folder(parent: Path, layout: str) -> Path:
    """A folder of the user's own data in a common layout: train/ and val/ whose files raynas did not name."""
    root = parent / f"my_{layout}"
    files = {
        "imagenet": ["train/n01440764/img_a.jpg", "val/n01440764/img_b.jpg", "labels.txt"],
        "yolo": ["train/images/img_a.jpg", "train/labels/img_a.txt", "val/images/img_b.jpg", "data.yaml"],
        "coco": ["train/img_a.jpg", "val/img_b.jpg", "annotations/instances_train.json",
                 "annotations/instances_val.json"],
        "other": ["notes.txt"],
    }[layout]  # fmt: skip
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".json"):  # a COCO file of the user's: valid, but not raynas's
            path.write_text(json.dumps({"info": {"description": "my photos"}, "images": []}))
        else:
            path.write_bytes(f"the user's {name}".encode())
    return root


def beside(root: Path) -> list[str]:
    """What lies next to ``root`` apart from it (a staging folder or lock file left behind)."""
    return sorted(p.name for p in root.parent.iterdir() if p != root)


def train_config(tmp_path: Path, root: Path, **data) -> Path:
    """A tiny `raynas train` config whose data.root is ``root``, ``data.format`` left at its default."""
    cfg = {
        "data": {"root": str(root), **TINY_DIGITS, "batch_size": 2, **data},
        "model": {"kind": "retinanet", "out_channels": 16, "min_size": 64, "max_size": 64},
        "optim": {"epochs": 1, "warmup_iters": 1, "milestones": []},
        "run": {"name": "t", "storage_path": str(tmp_path / "runs"), "num_workers": 1},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("layout", ["imagenet", "yolo", "coco", "other"])
def test_a_user_folder_survives_raynas_data_digits(tmp_path, capfd, layout) -> None:
    root = user_folder(tmp_path, layout)
    before = tree_hash(root)
    for replace in ([], ["--replace"]):  # --replace replaces raynas's own digits only
        line = refused(capfd, raynas_main(["data", "digits", "--out", str(root), *SMALL_FLAGS, *replace]),
                       "--out", str(root), "raynas did not make", "data.format: coco or voc")  # fmt: skip
        assert tree_hash(root) == before
        assert beside(root) == []  # refused before anything was written: no staging folder
    if layout == "imagenet":
        assert "holds 3 entries raynas did not make: labels.txt, train/, val/" in line


def test_the_raynas_command_refuses_a_user_folder(tmp_path) -> None:
    """The installed entry point, in a subprocess: exit 2, one line, the folder byte for byte."""
    root = user_folder(tmp_path, "imagenet")
    before = tree_hash(root)
    command = [sys.executable, "-m", "raynas.cli", "data", "digits", "--out", str(root), *SMALL_FLAGS]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "raynas did not make" in lines[0], done.stderr
    assert tree_hash(root) == before and beside(root) == []


def test_a_job_on_a_user_folder_is_refused_before_ray_starts(tmp_path, capfd) -> None:
    import ray

    root = user_folder(tmp_path, "coco")
    before = tree_hash(root)
    config = train_config(tmp_path, root)
    code = raynas_main(["train", "--config", str(config)])
    refused(capfd, code, "data.root", str(root), "raynas did not make", "data.format: coco or voc")
    assert tree_hash(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_coco", "train.yaml"]  # no lock, no runs
    assert not ray.is_initialized()


def test_an_empty_and_a_missing_folder_are_generated_into(tmp_path, capfd) -> None:
    empty, missing = tmp_path / "empty", tmp_path / "a" / "b" / "digits"
    empty.mkdir()
    for root in (empty, missing):
        assert raynas_main(["data", "digits", "--out", str(root), *SMALL_FLAGS]) == 0
        assert digits_settings(root) == SMALL
        assert read_marker(root)["settings"] == SMALL and read_marker(root)["complete"] is True
        assert (root / "train" / "000003.png").is_file()
        assert beside(root) == []  # the staging folder is gone


def test_bodies_pretrained_before_the_data_do_not_block_it(tmp_path) -> None:
    """`raynas pretrain --data D` may run first and leave D/pretrained/; the data are generated beside it."""
    root = tmp_path / "digits"
    (root / "pretrained").mkdir(parents=True)
    (root / "pretrained" / "resnet18.pt").write_bytes(b"body")
    (root / "pretrained" / "resnet18.run_info.json").write_text("{}")
    ensure_dataset(DataConfig(root=str(root), **SMALL), progress=False)
    assert digits_settings(root) == SMALL
    assert (root / "pretrained" / "resnet18.pt").read_bytes() == b"body"


def test_raynas_digits_made_before_markers_are_accepted(tmp_path, capfd) -> None:
    root = tmp_path / "digits"
    assert raynas_main(["data", "digits", "--out", str(root), *SMALL_FLAGS]) == 0
    (root / MARKER).unlink()  # what an earlier raynas left: annotations saying "raynas digits", no marker
    before = tree_hash(root)
    ensure_dataset(DataConfig(root=str(root), **SMALL), progress=False)  # same settings: used as it is
    assert tree_hash(root) == before
    capfd.readouterr()
    code = raynas_main(["data", "digits", "--out", str(root), "--train", "5", "--val", "2", "--size", "64"])
    refused(capfd, code, "other settings", "'num_train': '4 there, 5 asked'", "--replace")
    assert tree_hash(root) == before
    assert raynas_main(["data", "digits", "--out", str(root), "--train", "5", "--val", "2", "--size", "64",
                        "--replace"]) == 0  # fmt: skip
    assert digits_settings(root)["num_train"] == 5 and read_marker(root)["settings"]["num_train"] == 5


def test_an_unfinished_swap_is_generated_anew(tmp_path) -> None:
    """A swap cut short leaves raynas's own unfinished data (marker not complete): generated again."""
    root = tmp_path / "digits"
    ensure_dataset(DataConfig(root=str(root), **SMALL), progress=False)
    marker = read_marker(root)
    (root / MARKER).write_text(json.dumps({**marker, "complete": False}))
    for path in (root / "val").iterdir():
        path.unlink()  # the new val/ never arrived
    ensure_dataset(DataConfig(root=str(root), **SMALL), progress=False)
    assert read_marker(root)["complete"] is True and (root / "val" / "000001.png").is_file()


def test_a_truncated_annotation_file_is_one_line_naming_it(tmp_path, capfd) -> None:
    import ray

    root = tmp_path / "digits"
    ensure_dataset(DataConfig(root=str(root), **TINY_DIGITS), progress=False)
    annotation = root / "annotations" / "instances_val.json"
    annotation.write_bytes(annotation.read_bytes()[:200])
    before = tree_hash(root)
    code = raynas_main(["train", "--config", str(train_config(tmp_path, root))])
    refused(capfd, code, str(annotation), "is damaged", "not valid JSON", "delete that folder and run again")
    assert tree_hash(root) == before and not ray.is_initialized()
    # made by an earlier raynas (no marker): raynas cannot tell whose it is, and says so
    (root / MARKER).unlink()
    code = raynas_main(["data", "digits", "--out", str(root), *SMALL_FLAGS])
    refused(capfd, code, str(annotation), "not valid JSON", "cannot tell whether it made --out")


def test_an_edited_annotation_file_or_marker_is_one_line_naming_it(tmp_path, capfd) -> None:
    root = tmp_path / "digits"
    ensure_dataset(DataConfig(root=str(root), **SMALL), progress=False)
    annotation = root / "annotations" / "instances_train.json"
    payload = json.loads(annotation.read_text())
    annotation.write_text(json.dumps({**payload, "images": 4}))
    (root / MARKER).unlink()  # read back through digits_settings (an earlier raynas's folder)
    code = raynas_main(["data", "digits", "--out", str(root), *SMALL_FLAGS])
    refused(capfd, code, str(annotation), "is damaged", "raynas data digits --out")
    (root / MARKER).write_text('{"generator": "digits", "settings": [1]}')
    code = raynas_main(["data", "digits", "--out", str(root), *SMALL_FLAGS])
    refused(capfd, code, str(root / MARKER), "is damaged", "delete that folder and run again")
    (root / MARKER).write_text('{"generator": "digi')
    code = raynas_main(["data", "digits", "--out", str(root), *SMALL_FLAGS])
    refused(capfd, code, MARKER, "not valid JSON")


def test_old_digits_without_masks_are_generated_again_for_a_mask_job(tmp_path) -> None:
    """An earlier raynas's digits (no marker, no 'segmentation'): its own, so a mask job regenerates them."""
    root = tmp_path / "digits"
    ensure_dataset(DataConfig(root=str(root), **SMALL), progress=False)
    (root / MARKER).unlink()
    for split in ("train", "val"):
        annotation = root / "annotations" / f"instances_{split}.json"
        payload = json.loads(annotation.read_text())
        annotation.write_text(json.dumps({**payload, "annotations": [
            {k: v for k, v in ann.items() if k != "segmentation"} for ann in payload["annotations"]
        ]}))  # fmt: skip
    ensure_dataset(DataConfig(root=str(root), **SMALL), progress=False, masks=True)
    assert all("segmentation" in ann for ann in json.loads(annotation.read_text())["annotations"])
    assert read_marker(root)["settings"] == SMALL
