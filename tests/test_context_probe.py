"""The context probe (raynas/studies/context_probe.py) on a hand-made cache: a tag written into one level
only is read from that level and from no other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raynas.studies.context_probe import probe_accuracy, probe_set, role_of

SIZE = 64  # canvas: small glyphs are < 6.4 px here (32 px at 320), large >= 22 px (110 at 320)
LEVELS = {"0": (8, 8, 8), "1": (8, 4, 4), "2": (8, 2, 2)}
NAMES = {1: "O.a", 2: "O.b", 3: "zone.a"}


def write_cache(folder: Path, images: int, seed: int) -> None:
    """One small glyph per image at a random place; its tag is written into channel 0 of level "2" (C5)
    at its cell, every other value is noise; a zone box is there too (the probe leaves zones out)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    arrays = {name: rng.normal(size=(images, *shape)).astype(np.float16) for name, shape in LEVELS.items()}
    targets = []
    for index in range(images):
        x, y, tag = int(rng.integers(0, SIZE - 5)), int(rng.integers(0, SIZE - 5)), int(rng.integers(1, 3))
        centre = ((x + 2.5) * 2 // SIZE, (y + 2.5) * 2 // SIZE)
        arrays["2"][index, 0, int(centre[1]), int(centre[0])] = 4.0 if tag == 2 else -4.0
        boxes = torch.tensor([[x, y, x + 5, y + 5], [0, 0, 40, 40]], dtype=torch.float32)
        targets.append({"boxes": boxes, "labels": torch.tensor([tag, 3]), "image_id": index})
    for name, array in arrays.items():
        np.save(folder / f"level_{name}.npy", array)
    torch.save(targets, folder / "targets.pt")
    record = {"padded_size": [SIZE, SIZE], "levels": {k: list(v) for k, v in LEVELS.items()}}
    (folder / "record.json").write_text(json.dumps(record))


def test_a_tag_carried_by_one_level_is_read_there_only(tmp_path: Path) -> None:
    write_cache(tmp_path / "train", 300, seed=0)
    write_cache(tmp_path / "val", 100, seed=1)
    train, val = probe_set(tmp_path / "train", NAMES), probe_set(tmp_path / "val", NAMES)
    assert len(train.tag) == 300 and set(train.role) == {"small"}  # zones left out
    small = probe_accuracy(train, val)["small"]
    assert small["C5"] > 0.95
    assert small["C3"] < small["chance"] + 0.15 and small["C4"] < small["chance"] + 0.15
    assert (small["fit"], small["held_out"]) == (300, 100)


def test_roles_follow_the_generator_s_size_ranges() -> None:
    assert [role_of(side, 320) for side in (10, 31.9, 32, 109, 110, 300)] == [
        "small", "small", "medium", "medium", "large", "large"
    ]  # fmt: skip
    assert role_of(16, 160) == "medium" and role_of(15, 160) == "small"


def _script():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import proxy_context_probe

    return proxy_context_probe


def test_an_out_that_is_a_file_is_one_line_and_left_as_it_is(tmp_path: Path, capsys) -> None:
    out = tmp_path / "afile"
    out.write_text("mine")
    code = _script().main(["--smoke", "--out", str(out), "--data", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--out" in err[0] and "is a file" in err[0]
    assert out.read_text() == "mine" and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_smoke_probes_the_tiny_body_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _script().main(["--smoke", "--control", "--out", str(out), "--data", str(tmp_path / "s")]) == 0
    results = json.loads((out / "probe.json").read_text())
    assert set(results) == {"context on", "context off"}
    for by_target in results.values():
        assert set(by_target) == {"tag", "glyph"}
        for row in by_target["glyph"].values():
            assert {"chance", "C3", "C4", "C5"} <= set(row) and all(0 <= row[k] <= 1 for k in ("C3", "C5"))
    assert "| role |" in (out / "probe.md").read_text()


def test_tags_are_counted_where_the_glyph_is_found_by_its_best_detection() -> None:
    from raynas.studies.context_probe import ROLES, count_tags

    names = {1: ("O", ".", "a"), 2: ("O", ".", "b"), 3: ("I", ".", "a"), 4: ("zone", ".", "a")}
    target = {"boxes": torch.tensor([[10.0, 10, 30, 30], [100, 100, 140, 140], [0, 0, 300, 300]]),
              "labels": torch.tensor([1, 3, 4])}  # a small O.a, a medium I.a, a zone  # fmt: skip
    output = {"boxes": torch.tensor([[10.0, 10, 30, 30], [11, 11, 30, 30], [100, 100, 140, 140]]),
              "labels": torch.tensor([2, 1, 1]), "scores": torch.tensor([0.9, 0.5, 0.8])}  # fmt: skip
    counts = {role: [0, 0, 0] for role in ROLES}
    count_tags(counts, output, target, names, 320)
    # the small O: found, and its best O detection (0.9) says tag b: wrong; the medium I: only an O there
    assert counts == {"small": [1, 0, 1], "medium": [0, 0, 1], "large": [0, 0, 0]}
