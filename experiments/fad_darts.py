"""FAD end to end: DARTS head search on Ray Train -> derived head -> retrain vs the default head.

    python experiments/fad_darts.py            # small CPU budget
    python experiments/fad_darts.py --smoke    # seconds-scale run
    python experiments/fad_darts.py --random   # the paper's 'random' genotype baseline instead of DARTS

Prints COCO metrics, parameters and FLOPs of FCOS with the derived FAD head next to FCOS with
torchvision's head trained with the same budget (Table 3 reports "Dim 256 -> 96").
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import replace

import pandas as pd
import torch

from raynas.config import apply_yaml, check_writable_folder
from raynas.data.config import DataConfig
from raynas.errors import run_main
from raynas.evaluation import count_flops, count_params
from raynas.models.build import build_model
from raynas.models.config import ModelConfig
from raynas.spaces.fad import FADSpace
from raynas.studies.flags import check_counts
from raynas.studies.recipes import SMOKE_BUDGET
from raynas.training.config import DartsConfig, FADConfig, OptimConfig, RunConfig, TrainConfig
from raynas.training.launch import ensure_ray


def configs(args: argparse.Namespace) -> DartsConfig:
    data = DataConfig(root=args.data, max_train_images=400, max_val_images=100)
    model = ModelConfig(kind=args.kind, out_channels=64, min_size=128, max_size=128)
    optim = OptimConfig(epochs=4, lr=0.01, warmup_iters=50, milestones=[3])
    fad = FADConfig(c_prime=24)
    if args.smoke:
        # c' = 12: GroupNorm groups of 3 channels. With c' = 8 (groups of 1) the 1x1 p7 map of a single 96 px
        # image has one value per group and GroupNorm raises (complexity() runs one image).
        fad = replace(fad, c_prime=12)
    run = RunConfig(
        name="fad_darts",
        storage_path=args.out,
        num_workers=args.workers,
        use_gpu=args.gpu,
        address=args.address,
    )
    config = DartsConfig(data=data, model=model, optim=optim, run=run, fad=fad)
    return apply_yaml(config, SMOKE_BUDGET) if args.smoke else config


def complexity(cfg: TrainConfig, num_classes: int) -> dict[str, float]:
    model = build_model(cfg.model, num_classes, cfg.neck, cfg.head).eval()
    size = cfg.model.min_size
    flops = count_flops(model, [torch.zeros(3, size, size)])
    return {"params_M": count_params(model) / 1e6, "GFLOPs": flops / 1e9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=None, help="dataset root (default data/digits; data/digits_smoke)")
    parser.add_argument("--out", default="runs/fad_darts")
    parser.add_argument("--kind", default="fcos", choices=["fcos", "retinanet"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--address", default=None)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--random", action="store_true", help="random genotype baseline (no search)")
    args = parser.parse_args(argv)
    args.data = args.data or ("data/digits_smoke" if args.smoke else "data/digits")
    return run_main("fad_darts", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    check_counts(args, {"workers": 1}, {"workers": "run.num_workers"})
    check_writable_folder(args.out, "--out")
    cfg = configs(args)  # every flag checked before Ray starts
    ensure_ray(args.address)
    space = FADSpace()
    if args.random:
        genotype = space.sample(random.Random(cfg.run.seed))
        print("random genotype:", space.to_config(genotype))
    else:
        from raynas.training.darts import search_fad

        result = search_fad(cfg)
        genotype = result.genotype
        print(f"derived genotype: {result.genotype_path}")
    from raynas.training.standalone import train

    rows = []
    heads = (
        ("FCOS default head", None),
        (
            "FAD derived head",
            {"type": "fad", "genotype": space.to_config(genotype), "c_prime": cfg.fad.c_prime},
        ),
    )
    for label, head in heads:
        standalone = TrainConfig(
            data=cfg.data,
            model=cfg.model,
            optim=cfg.optim,
            head=head,
            run=replace(cfg.run, name="retrain_" + ("default" if head is None else "fad")),
        )
        result = train(standalone)
        rows.append(
            {
                "head": label,
                **{k: result.metrics.get(k) for k in ("AP", "AP50")},
                **complexity(standalone, result.load_state()["num_classes"]),
            }
        )
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
