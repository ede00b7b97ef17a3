"""The main job: OPANAS end to end on Ray (data -> super-net -> EA vs random search -> table).

    python experiments/opanas_ea.py                  # small default budget, 2-core CPU, minutes
    python experiments/opanas_ea.py --smoke          # seconds-scale run used by CI
    python experiments/opanas_ea.py --paper          # the paper's search settings (N_S 50, T 12, k 10, p 0.1)
    python experiments/opanas_ea.py --address auto   # on a cluster started with `ray up cluster.yaml`

Steps: generate the embedded digits data if absent; train the super-net on Ray Train (K=4 strict
fair sampling, gamma with an L1 term); search it with the evolutionary searcher and with random
search under the same evaluation budget on Ray Tune, scoring every candidate inference-only on
scorer actors that share the super-net weights; print the comparison; optionally (``--retrain``)
train the best architecture and the FPN baseline standalone with the same budget.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import pandas as pd

from raynas.config import load_yaml
from raynas.search.opanas import OPANASSearchConfig, search_opanas
from raynas.training.config import (
    DataConfig,
    ModelConfig,
    OPANASConfig,
    OptimConfig,
    RunConfig,
    SupernetConfig,
    TrainConfig,
)
from raynas.training.launch import ensure_ray


def default_configs(args: argparse.Namespace) -> tuple[SupernetConfig, OPANASSearchConfig]:
    """The budget of each mode; every number can be overridden with --supernet-config/--search-config."""
    # The digits of the baseline (experiments/configs/baseline_fcos_r18.yaml), 400 of them per epoch:
    # about 5 minutes of super-net training on 2 CPU cores, enough to rank sub-nets, not to converge.
    data = DataConfig(
        root=args.data, num_train=1000, num_val=200, max_train_images=400, max_val_images=100, batch_size=4
    )
    # torchvision's FCOS head needs GroupNorm(32, c) with c >= 64; the other heads run at 32 channels
    width = 64 if args.kind == "fcos" else 32
    model = ModelConfig(kind=args.kind, backbone="resnet18", out_channels=width, min_size=128, max_size=128)
    optim = OptimConfig(epochs=5, lr=0.01, warmup_iters=50, milestones=[4])
    search = OPANASSearchConfig(population_size=10, generations=3, top_k=4, max_val_images=100)
    if args.smoke:
        data = replace(
            data,
            root=args.data,
            num_train=16,
            num_val=8,
            image_size=96,
            max_train_images=None,
            max_val_images=None,
            batch_size=2,
        )
        model = replace(model, min_size=96, max_size=96, out_channels=64 if args.kind == "fcos" else 16)
        optim = replace(optim, epochs=1, warmup_iters=2, milestones=[])
        search = replace(search, population_size=4, generations=1, top_k=2, max_val_images=None)
    if args.paper:
        search = replace(
            search, population_size=50, generations=12, top_k=10, mutation_prob=0.1, max_val_images=None
        )
    run = RunConfig(
        name="supernet",
        storage_path=args.out,
        num_workers=args.train_workers,
        use_gpu=args.gpu,
        address=args.address,
        eval_every=optim.epochs,  # the search scores sub-nets; one super-net evaluation at the end suffices
    )
    supernet = SupernetConfig(data=data, model=model, optim=optim, run=run, opanas=OPANASConfig())
    search = replace(search, num_scorers=args.scorers, use_gpu=args.gpu, storage_path=args.out, name="search")
    if args.supernet_config:
        supernet = load_yaml(SupernetConfig, args.supernet_config)
    if args.search_config:
        search = load_yaml(OPANASSearchConfig, args.search_config)
    return supernet, search


def retrain(best_arch: dict, supernet: SupernetConfig, out: str) -> pd.DataFrame:
    """The full-training phase: the best OPA-FPN and the FPN baseline, same budget, side by side."""
    from raynas.training.standalone import train

    rows = []
    for label, neck in (
        ("FPN baseline", None),
        ("OPA-FPN (best EA)", {"type": "opa_fpn", "arch": best_arch}),
    ):
        cfg = TrainConfig(
            data=supernet.data,
            model=supernet.model,
            optim=supernet.optim,
            run=replace(
                supernet.run, name=f"retrain_{'fpn' if neck is None else 'opa_fpn'}", storage_path=out
            ),
            neck=neck,
        )
        result = train(cfg)
        rows.append({"model": label, **{k: result.metrics.get(k) for k in ("AP", "AP50", "AP75")}})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="data/digits", help="dataset root (digits are generated if absent)")
    parser.add_argument("--out", default="runs/opanas_ea", help="where runs, tables and plots go")
    parser.add_argument(
        "--kind",
        default="fcos",
        choices=["fcos", "retinanet", "faster_rcnn", "cascade_rcnn"],
        help="detector (FCOS learns fastest from scratch on CPU; the paper's Table 6 also has the others)",
    )
    parser.add_argument(
        "--train-workers",
        type=int,
        default=2,
        help="Ray Train workers for the super-net (Ray gives each CPU worker one thread: 2 uses 2 cores)",
    )
    parser.add_argument("--scorers", type=int, default=2, help="scorer actors (concurrent evaluations)")
    parser.add_argument("--gpu", action="store_true", help="train and score on GPUs")
    parser.add_argument("--address", default=None, help="attach to a Ray cluster (e.g. auto)")
    parser.add_argument("--paper", action="store_true", help="the paper's EA settings (N_S 50, T 12, k 10)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget (CI)")
    parser.add_argument("--retrain", action="store_true", help="retrain best arch and FPN baseline")
    parser.add_argument("--supernet-checkpoint", default=None, help="skip training; search this checkpoint")
    parser.add_argument("--supernet-config", default=None, help="YAML SupernetConfig (overrides defaults)")
    parser.add_argument("--search-config", default=None, help="YAML OPANASSearchConfig (overrides defaults)")
    parser.add_argument("--resume", action="store_true", help="resume interrupted searches under --out")
    args = parser.parse_args(argv)

    supernet_cfg, search_cfg = default_configs(args)
    ensure_ray(args.address)
    checkpoint = args.supernet_checkpoint
    if checkpoint is None:
        from raynas.training.supernet import train_supernet

        print(f"== super-net training ({supernet_cfg.optim.epochs} epochs, K={supernet_cfg.opanas.k}) ==")
        checkpoint = str(train_supernet(supernet_cfg).checkpoint_dir)
    print(f"== search: {search_cfg.strategies}, {search_cfg.budget} evaluations each ==")
    outcome = search_opanas(checkpoint, search_cfg, resume=args.resume, verbose=0 if args.smoke else 1)
    pd.set_option("display.width", 160)
    print("\n== strategies compared (Tune result tables) ==")
    print(outcome["summary"].to_string(index=False))
    for strategy, table in outcome["tables"].items():
        columns = [
            c for c in ("evaluation", "generation", "origin", "AP", "AP50", "neck_params") if c in table
        ]
        print(f"\n-- top 5 {strategy} --")
        print(table.sort_values("AP", ascending=False)[columns].head(5).to_string(index=False))
    run_dir = outcome["run_dir"]
    print(f"\nresults: {run_dir} (results.csv, best_arch.json/png per strategy, search_curves.png)")
    if args.retrain:
        best = json.loads((run_dir / "evolution" / "best_arch.json").read_text())["arch"]
        print("\n== full training: best EA architecture vs FPN baseline ==")
        print(retrain(best, supernet_cfg, args.out).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
