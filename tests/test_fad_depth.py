"""The derived FAD head's retraining depth (issue 28 item 6): cells repeated per group, Table 3's sizes.

Sec. 3.1 searches one cell per group and repeats the cells for the final model; two per group give Table 3's
parameters (benchmarks/fad_table3_params.py). Param counts build on the meta device (shapes only, no init
time); the forward runs on a 64 px image."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead

from raynas.evaluation import count_params
from raynas.jobs.fad import fad_head_spec, fad_settings
from raynas.models.build import build_model, head_factory
from raynas.models.config import ModelConfig
from raynas.spaces.fad import derived_space
from raynas.spaces.fad.head import RETRAIN_CELLS_PER_GROUP

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
# a derived genotype of the full space (the committed proxy search's; the paper's Fig. 3 is not in its text)
GENOTYPE = {
    "g1_e0_1": "std_3x3_dil2", "g1_e0_2": "std_3x3x3", "g1_e0_3": "std_3x3_dil2", "g1_e1_2": "std_3x3",
    "g1_e1_3": "sep_3x3x2_dil2", "g1_e2_3": "none",
    "g2_e0_1": "std_3x3", "g2_e0_2": "sep_3x3x3", "g2_e0_3": "std_3x3x2", "g2_e1_2": "std_3x3x2",
    "g2_e1_3": "none", "g2_e2_3": "sep_3x3",
}  # fmt: skip
COCO_CLASSES = 81  # 80 + background, as torchvision counts
PAPER_SUBNET_RATIO = 4.1 / 4.9  # Table 3 "Subnet only", 256 -> 96


def fad_spec(**options) -> dict:
    return {"type": "fad", "genotype": GENOTYPE, **options}


@pytest.mark.parametrize(("kind", "default_head"), [("fcos", FCOSHead), ("retinanet", RetinaNetHead)])
def test_at_the_retraining_depth_the_fad_head_is_table3s_fraction_of_torchvisions(kind, default_head):
    anchors = 1 if kind == "fcos" else 9
    spec = fad_spec(c_prime=96, cells_per_group=RETRAIN_CELLS_PER_GROUP)
    with torch.device("meta"):
        default = count_params(default_head(256, anchors, COCO_CLASSES))
        fad = count_params(head_factory(spec, kind)(256, anchors, COCO_CLASSES))
        one_cell = count_params(head_factory(fad_spec(c_prime=96), kind)(256, anchors, COCO_CLASSES))
    assert fad < default  # Table 3: fewer parameters than torchvision's head at c' = 96
    if kind == "fcos":  # the sub-net row: 4.9 M -> 4.1 M, within +/- 10 % of the paper's ratio
        assert abs(fad / default - PAPER_SUBNET_RATIO) <= 0.1 * PAPER_SUBNET_RATIO, fad / default
        assert one_cell < 0.5 * default  # one cell per group is not the paper's head (0.43x here)


def test_repeated_cells_share_the_genotype_not_the_weights_and_run():
    # GroupNorm sees more than one value per group on the 1x1 P7 map: 64 channels (32 groups), c' = 12 (4)
    cfg = ModelConfig(kind="fcos", out_channels=64, min_size=64, max_size=64)
    model = build_model(cfg, num_classes=3, head=fad_spec(c_prime=12, cells_per_group=2)).eval()
    groups = model.head.module.groups
    assert [len(cells) for cells in groups] == [2, 2]
    genotype = derived_space().from_config(GENOTYPE)
    for cells, ops in zip(groups, genotype.groups):
        assert all(cell.genotype_cell == ops for cell in cells)
        first, second = (set(p.data_ptr() for p in cell.parameters()) for cell in cells)
        assert not first & second  # own weights per cell
    x = torch.rand(1, 64, 8, 8)
    reg, cls = model.head.module(x)  # group 1 -> box regression; group 2 reads group 1 + the shortcut
    torch.testing.assert_close(reg, groups[0][1](groups[0][0](x)))
    torch.testing.assert_close(cls, groups[1][1](groups[1][0](reg + x)))
    with torch.inference_mode():  # the head's contract on two pyramid levels (8x8 + 1x1 locations)
        out = model.head([x, torch.rand(1, 64, 1, 1)])
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "cls_logits": (1, 65, 3),
        "bbox_regression": (1, 65, 4),
        "bbox_ctrness": (1, 65, 1),
    }


def test_a_spec_without_the_key_builds_one_cell_per_group_and_loads_its_old_weights():
    old = head_factory(fad_spec(c_prime=8), "fcos")(32, 1, 3)  # a spec / checkpoint from before the key
    assert [len(cells) for cells in old.module.groups] == [1, 1]
    head_factory(fad_spec(c_prime=8), "fcos")(32, 1, 3).load_state_dict(old.state_dict())  # strict
    mask = head_factory(
        {"type": "fad", "genotype": {k: v for k, v in GENOTYPE.items() if k[1] == "1"}}, "mask_rcnn"
    )
    assert len(mask(32).cells) == 1


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, True])
def test_a_cells_per_group_that_is_not_a_count_is_refused(bad):
    with pytest.raises(ValueError, match='"cells_per_group" must be a whole number >= 1'):
        head_factory(fad_spec(cells_per_group=bad), "fcos")


@pytest.mark.parametrize("script", ["fad_evidence", "mask_fad"])  # both on raynas.jobs.fad
def test_the_experiments_retrain_at_the_depth_and_refuse_a_table_of_one_cell(script, tmp_path, capfd):
    sys.path.insert(0, str(EXPERIMENTS))
    module = __import__(script)
    parse = module.build_parser().parse_args
    for flags in ([], ["--paper"], ["--smoke"]):
        assert module.with_presets(parse(flags)).cells_per_group == RETRAIN_CELLS_PER_GROUP
    settings = fad_settings(module.with_presets(parse([])))
    assert fad_head_spec(GENOTYPE, settings)["cells_per_group"] == RETRAIN_CELLS_PER_GROUP
    # a table written before the flag holds one-cell heads: extending it at another depth is refused
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{script}.json").write_text('{"settings": {"c_prime": 24}, "wall_time_s": 1}')
    (out / f"{script}.csv").write_text(",".join(["arm", "seed", *module.METRICS, "head"]) + "\n")
    files = {path.name: path.read_bytes() for path in out.iterdir()}
    assert module.main(["--out", str(out)]) == 2
    assert {path.name: path.read_bytes() for path in out.iterdir()} == files  # refused before writing
    err = capfd.readouterr().err
    assert err.startswith(f"{script}: error: ") and "--cells-per-group 1" in err and err.count("\n") == 1
    assert module.main(["--out", str(out), "--cells-per-group", "0"]) == 2
    assert "--cells-per-group" in capfd.readouterr().err
