"""FAD's Table 3 parameter counts rebuilt: which retraining depth (cells per group) gives the paper's sizes.

Sec. 3.1 searches one cell per group and says the cells "can be repeated" for the final model, without a
number; Table 3 gives the sizes at c' = 96 (sub-net 4.9 M -> 4.1 M, FCOS-R50 32.2 M -> 31.5 M,
RetinaNet-R50 33.8 M -> 33.0 M). This counts the parameters (``raynas.evaluation.count_params``: every
parameter, norm affines included) of the detectors ``raynas.models.build_detector`` makes (torchvision's
FCOS / RetinaNet / Mask R-CNN, FPN width 256, P6/P7 from P5, no weights), with torchvision's head and with
the derived FAD head at 1..``--max-cells`` cells per group, and picks the depth whose FCOS sub-net is nearest
the paper's 4.1 M. Then every row of Table 3 at that depth, the spread over random derived genotypes (the
paper's Fig. 3 genotype is a figure, not text: the default genotype is the committed proxy search's), and
the Mask R-CNN mask head (Table 5: Mask FAD +0.1 M over Mask R-CNN). Models are built on the meta device:
shapes only, seconds on a CPU.

    python benchmarks/fad_table3_params.py
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import torch

from raynas.errors import OneLineParser, run_main
from raynas.evaluation import count_params
from raynas.io import atomic_write_json
from raynas.models import build_detector
from raynas.spaces.fad import FADGenotype, FADSpace, derived_space, fad_head_factory, fad_mask_head_factory

M = 1e6
#: Table 3 (fad-repshare.txt Sec. 4.1): (detector, backbone, c') -> (params M, default -> FAD)
TABLE3 = {
    ("fcos", "mobilenet_v2", 96): (9.8, 9.0),
    ("fcos", "resnet50", 96): (32.2, 31.5),
    ("fcos", "resnet101", 96): (51.2, 50.4),
    ("fcos", "resnext101_64x4d", 96): (90.0, 89.2),
    ("fcos", "resnext101_64x4d", 128): (90.0, 91.2),
    ("retinanet", "resnet50", 96): (33.8, 33.0),
    ("retinanet", "resnet101", 96): (52.7, 52.0),
    ("retinanet", "resnext101_64x4d", 128): (91.5, 92.7),
}
PAPER_SUBNET = (4.9, 4.1)  # Table 3 "Subnet only", 256 -> 96
PAPER_MASK_RCNN_R50 = (44.3, 44.4)  # Table 5, Mask R-CNN -> Mask FAD, ResNet-50


def genotype_file(path: str, groups: int) -> FADGenotype:
    payload = json.loads(Path(path).read_text())
    space = derived_space(num_groups=groups)
    genotype = space.from_config(payload["arch"])
    space.validate(genotype)
    return genotype


def detector_params(kind: str, backbone: str, num_classes: int, head=None, mask_head=None) -> dict:
    """Whole-detector and head parameters, built on the meta device (no memory, no init time)."""
    with torch.device("meta"):
        model = build_detector(
            kind, backbone, head=head, mask_head=mask_head, num_classes=num_classes, out_channels=256
        )
    part = model.roi_heads.mask_head if kind == "mask_rcnn" else model.head
    return {"whole": count_params(model), "head": count_params(part)}


def fad_head(kind: str, genotype: FADGenotype, c_prime: int, cells: int):
    return fad_head_factory(kind=kind, c_prime=c_prime, genotype=genotype, cells_per_group=cells)


def depth_sweep(genotype: FADGenotype, args: argparse.Namespace) -> list[dict]:
    """FCOS- and RetinaNet-R50 with the FAD head at each depth, against Table 3's R50 rows."""
    rows = []
    for cells in range(1, args.max_cells + 1):
        row = {"cells_per_group": cells}
        for kind in ("fcos", "retinanet"):
            counts = detector_params(kind, "resnet50", args.num_classes, fad_head(kind, genotype, 96, cells))
            row[f"{kind}_head"], row[f"{kind}_whole"] = counts["head"], counts["whole"]
        rows.append(row)
    return rows


def pick_depth(rows: list[dict]) -> tuple[int, int]:
    """The depth nearest the paper's FCOS sub-net (4.1 M), and the one nearest both R50 detectors."""
    by_subnet = min(rows, key=lambda r: abs(r["fcos_head"] - PAPER_SUBNET[1] * M))
    fcos_r50, retina_r50 = TABLE3[("fcos", "resnet50", 96)][1], TABLE3[("retinanet", "resnet50", 96)][1]
    by_whole = min(
        rows, key=lambda r: abs(r["fcos_whole"] - fcos_r50 * M) + abs(r["retinanet_whole"] - retina_r50 * M)
    )
    return by_subnet["cells_per_group"], by_whole["cells_per_group"]


def table3_rows(genotype: FADGenotype, cells: int, num_classes: int) -> list[dict]:
    rows = []
    for (kind, backbone, c_prime), paper in TABLE3.items():
        default = detector_params(kind, backbone, num_classes)
        fad = detector_params(kind, backbone, num_classes, fad_head(kind, genotype, c_prime, cells))
        rows.append({"detector": kind, "backbone": backbone, "c_prime": c_prime,
                     "default_whole": default["whole"], "fad_whole": fad["whole"],
                     "default_head": default["head"], "fad_head": fad["head"],
                     "paper_default_M": paper[0], "paper_fad_M": paper[1]})  # fmt: skip
    return rows


def genotype_spread(count: int, cells: int, num_classes: int) -> dict:
    """FCOS sub-net params of random derived genotypes (the paper's 'random' baseline, Table 2) at
    ``cells``, and which depth each would pick: how much the choice depends on the genotype."""
    space = FADSpace()
    heads, picks = [], []
    for seed in range(count):
        genotype = space.sample(random.Random(seed))
        with torch.device("meta"):
            sizes = {
                c: count_params(fad_head("fcos", genotype, 96, c)(256, 1, num_classes)) for c in range(1, 5)
            }
        heads.append(sizes[cells])
        picks.append(min(sizes, key=lambda c: abs(sizes[c] - PAPER_SUBNET[1] * M)))
    return {
        "genotypes": count,
        "fcos_head_min": min(heads),
        "fcos_head_median": statistics.median(heads),
        "fcos_head_max": max(heads),
        "depth_picked": {str(c): picks.count(c) for c in sorted(set(picks))},
    }


def mask_rows(genotype: FADGenotype, args: argparse.Namespace) -> dict:
    default = detector_params("mask_rcnn", "resnet50", args.num_classes)
    rows = []
    for cells in range(1, 5):
        head = fad_mask_head_factory(c_prime=96, genotype=genotype, cells=cells)
        counts = detector_params("mask_rcnn", "resnet50", args.num_classes, mask_head=head)
        rows.append({"cells": cells, "mask_head": counts["head"], "whole": counts["whole"]})
    return {"default_mask_head": default["head"], "default_whole": default["whole"], "fad": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--genotype",
        default="experiments/results/fad_evidence/genotypes/fad_full.json",
        help="a detection head's genotype.json (default: the committed proxy search's)",
    )
    parser.add_argument("--mask-genotype", default="experiments/results/mask_fad/genotype.json")
    parser.add_argument(
        "--num-classes", type=int, default=81, help="80 COCO classes + background, as torchvision counts"
    )
    parser.add_argument("--max-cells", type=int, default=6)
    parser.add_argument("--random-genotypes", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/fad_table3_params.json")
    args = parser.parse_args(argv)
    genotype = genotype_file(args.genotype, groups=2)
    mask_genotype = genotype_file(args.mask_genotype, groups=1)

    sweep = depth_sweep(genotype, args)
    tv_fcos = detector_params("fcos", "resnet50", args.num_classes)
    tv_retina = detector_params("retinanet", "resnet50", args.num_classes)
    depth, depth_whole = pick_depth(sweep)
    print(f"genotype {args.genotype}, c' = 96, {args.num_classes} classes; params in M (paper in brackets)")
    print(
        f"torchvision heads: FCOS {tv_fcos['head'] / M:.2f} [{PAPER_SUBNET[0]}], FCOS-R50 "
        f"{tv_fcos['whole'] / M:.2f} [32.2], RetinaNet-R50 {tv_retina['whole'] / M:.2f} [33.8]"
    )
    print(f"{'cells/group':>11} {'FCOS head':>10} {'FCOS-R50':>9} {'Retina head':>12} {'Retina-R50':>11}")
    for r in sweep:
        print(f"{r['cells_per_group']:>11} {r['fcos_head'] / M:>10.2f} {r['fcos_whole'] / M:>9.2f} "
              f"{r['retinanet_head'] / M:>12.2f} {r['retinanet_whole'] / M:>11.2f}")  # fmt: skip
    print(f"paper:      {PAPER_SUBNET[1]:>10.2f} {31.5:>9.2f} {'':>12} {33.0:>11.2f}")
    print(f"depth nearest the paper's sub-net: {depth}; nearest both R50 detectors: {depth_whole}")

    rows = table3_rows(genotype, depth, args.num_classes)
    print(f"\nTable 3 at {depth} cells per group: default -> FAD, measured [paper]")
    for r in rows:
        print(f"{r['detector']:<10}{r['backbone']:<18}256 -> {r['c_prime']:<4}"
              f"{r['default_whole'] / M:6.1f} -> {r['fad_whole'] / M:5.1f}   "
              f"[{r['paper_default_M']} -> {r['paper_fad_M']}]")  # fmt: skip
    spread = genotype_spread(args.random_genotypes, depth, args.num_classes)
    print(
        f"\n{spread['genotypes']} random genotypes at {depth} cells: FCOS head "
        f"{spread['fcos_head_min'] / M:.2f} / {spread['fcos_head_median'] / M:.2f} / "
        f"{spread['fcos_head_max'] / M:.2f} M (min / median / max); depth each picks: "
        f"{spread['depth_picked']}"
    )
    mask = mask_rows(mask_genotype, args)
    paper_mask = PAPER_MASK_RCNN_R50[1] - PAPER_MASK_RCNN_R50[0]
    print(
        f"\nMask R-CNN-R50 mask head (Table 5: Mask FAD {paper_mask:+.1f} M): torchvision "
        f"{mask['default_mask_head'] / M:.2f} M, whole {mask['default_whole'] / M:.1f} M "
        f"[{PAPER_MASK_RCNN_R50[0]}]"
    )
    for r in mask["fad"]:
        print(
            f"  FAD mask head, {r['cells']} cells: {r['mask_head'] / M:.2f} M, whole {r['whole'] / M:.1f} M "
            f"({(r['whole'] - mask['default_whole']) / M:+.2f} M)"
        )

    result = {
        "config": {**vars(args), "c_prime": 96, "out_channels": 256, "torch": torch.__version__},
        "torchvision_r50": {"fcos": tv_fcos, "retinanet": tv_retina},
        "depth_sweep_r50": sweep,
        "depth_nearest_paper_subnet": depth,
        "depth_nearest_paper_r50_detectors": depth_whole,
        "table3": rows,
        "random_genotypes": spread,
        "mask_rcnn_r50": mask,
    }
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(run_main("fad_table3_params", lambda: main() and 0))  # a user's mistake: one line, exit 2
