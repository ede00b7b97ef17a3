"""FAD mask-head search on Ray Train (fad-repshare.txt Sec. 3.1 "FAD for Instance Segmentation", Sec. 4.2):
the one DARTS trainer finds the searchable mask head in Mask R-CNN, both ranks derive the same one-group
genotype, the genotype.json retrains through a head spec, and experiments/mask_fad.py runs end to end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_data import TINY_DIGITS, failure_text

from raynas.data.config import DataConfig
from raynas.models.build import build_model
from raynas.models.config import ModelConfig
from raynas.spaces.base import arch_from_json
from raynas.spaces.fad import FADMaskHead, FADSpace
from raynas.training.config import DartsConfig, FADConfig, OptimConfig, RunConfig, TrainConfig
from raynas.training.darts import search_fad

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 11


def mask_model() -> ModelConfig:
    return ModelConfig(kind="mask_rcnn", backbone="resnet18", out_channels=32, min_size=64, max_size=64)


@pytest.fixture(scope="module")
def mask_search(ray_session, tiny_digits: Path, tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    cfg = DartsConfig(
        data=DataConfig(root=str(tiny_digits), **TINY_DIGITS, batch_size=2, hflip=0.0),
        model=mask_model(),
        optim=OptimConfig(epochs=1, lr=0.01, warmup_iters=1, milestones=[]),
        run=RunConfig(name="mask_search", storage_path=str(tmp_path_factory.mktemp("mask")), num_workers=2),
        fad=FADConfig(c_prime=8),
    )
    return cfg, search_fad(cfg)


def test_two_worker_mask_head_search_agrees_and_derives_one_group(mask_search):
    cfg, result = mask_search
    assert result.metrics["ranks_same_genotype"] is True
    assert {"AP", "mask_AP", "mask_AP50"} <= set(result.metrics)  # evaluated on boxes and masks
    state = result.load_state()
    assert state["alphas"].shape == (1, 6, 13)
    space = FADSpace(candidates=state["candidates"], num_groups=1)
    genotype = arch_from_json(space, result.genotype_path.read_text())
    assert genotype == result.genotype and genotype.group2 is None
    assert set(json.loads(result.metrics["genotype"])) == {k for k in space.to_config(genotype)}
    assert (result.run_dir / "genotype.png").read_bytes()[:4] == b"\x89PNG"


def test_the_searched_genotype_file_retrains_as_a_mask_head(mask_search):
    _, result = mask_search
    model = build_model(
        mask_model(), NUM_CLASSES, None, {"type": "fad", "genotype": str(result.genotype_path)}
    )
    head = model.roi_heads.mask_head
    assert isinstance(head, FADMaskHead) and not head.searchable
    assert head.derive() == result.genotype
    # the file of the other space is refused with a clear message, both ways
    with pytest.raises(ValueError, match="g2_e0_1"):
        build_model(
            ModelConfig(kind="fcos", out_channels=32),
            NUM_CLASSES,
            None,
            {"type": "fad", "genotype": str(result.genotype_path)},
        )


def test_mask_rcnn_is_refused_on_voc_data() -> None:
    with pytest.raises(ValueError, match="VOC.*boxes only"):
        TrainConfig(data=DataConfig(root="voc", format="voc"), model=mask_model())


@pytest.mark.slow
@pytest.mark.smoke
def test_mask_fad_experiment_smoke(tmp_path: Path) -> None:
    out = tmp_path / "mask_fad"
    command = [sys.executable, str(ROOT / "experiments" / "mask_fad.py"), "--smoke", "--out", str(out),
               "--data", str(tmp_path / "digits_smoke")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, failure_text(done)
    rows = pd.read_csv(out / "mask_fad.csv")
    assert list(rows["arm"]) == ["Mask R-CNN mask head", "FAD mask head"]
    assert rows[["AP", "mask_AP"]].notna().all().all() and (rows["mask_head_params"] > 0).all()
    assert "| FAD mask head |" in (out / "mask_fad.md").read_text()
    assert json.loads((out / "mask_fad.json").read_text())["runs_started"] == 2
    again = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert again.returncode == 0, failure_text(again)
    assert json.loads((out / "mask_fad.json").read_text())["runs_started"] == 0  # finished runs skipped
    # the searched genotype retrains without a search (its runs are finished here, so nothing runs again)
    reuse = subprocess.run(
        [*command, "--genotype", str(out / "genotype.json")], capture_output=True, text=True, cwd=tmp_path,
        timeout=900,
    )  # fmt: skip
    assert reuse.returncode == 0, failure_text(reuse)
    assert "== search: FAD mask head (from " in reuse.stdout
    record = json.loads((out / "mask_fad.json").read_text())
    assert record["runs_started"] == 0 and record["genotype_from"] == str(out / "genotype.json")

    # the table alone (a committed copy, no run folders) is extended, not redone
    shutil.rmtree(out / "runs")
    from_table = subprocess.run(
        [*command, "--genotype", str(out / "genotype.json")], capture_output=True, text=True, cwd=tmp_path,
        timeout=900,
    )  # fmt: skip
    assert from_table.returncode == 0, failure_text(from_table)
    assert (
        json.loads((out / "mask_fad.json").read_text())["runs_started"] == 0 and not (out / "runs").exists()
    )
    pd.testing.assert_frame_equal(pd.read_csv(out / "mask_fad.csv"), rows)

    # rows of another recipe are never mixed into the table
    other = subprocess.run(
        [*command, "--train-images", "300"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert other.returncode == 2 and "holds a table made with train_images=600" in other.stderr, failure_text(
        other
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "is not a file"), ('{"space": "opanas", "arch": {}}', "not a FAD genotype")],
)
def test_a_bad_genotype_to_retrain_is_one_line_and_exit_2(
    tmp_path: Path, content: str | None, message: str
) -> None:
    genotype = tmp_path / "genotype.json"
    if content is not None:
        genotype.write_text(content)
    command = [sys.executable, str(ROOT / "experiments" / "mask_fad.py"), "--smoke", "--out",
               str(tmp_path / "out"), "--genotype", str(genotype)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, failure_text(done)
    assert "--genotype" in done.stderr and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
