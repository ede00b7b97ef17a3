"""The main job: OPANAS end to end on Ray (data -> body -> super-net -> EA vs random search -> table).

    python experiments/opanas_ea.py                  # default budget: a 2-core CPU, about 15 minutes
    python experiments/opanas_ea.py --smoke          # seconds-scale run used by CI
    python experiments/opanas_ea.py --paper          # the paper's search settings (N_S 50, T 12, k 10, p 0.1)
    python experiments/opanas_ea.py --address auto   # on a cluster started with `ray up cluster.yaml`

Steps: generate the embedded digits data and pretrain the detector body on digit crops if absent (the
papers' ImageNet pretraining, made locally); train the super-net on Ray Train (K=4 strict fair sampling,
gamma with an L1 term); train the FPN detector standalone with the same data and epochs (the reference
the sub-nets are measured against); search the super-net with the evolutionary searcher and with random
search under the same evaluation budget on Ray Tune, scoring every candidate inference-only on the
search split (training images held out of every training run) with scorer actors that share the
super-net weights; print the comparison and the ratio of a random sub-net's AP to the standalone FPN's.
``--retrain`` then trains the best evolved architecture standalone with the same recipe and prints it
next to the FPN on val. Re-running resumes: finished training runs are skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from raynas.config import apply_yaml, load_yaml, with_overrides
from raynas.data.config import DataConfig
from raynas.errors import run_main
from raynas.models.config import ModelConfig
from raynas.search.opanas import OPANASSearchConfig
from raynas.studies.flags import check_counts
from raynas.studies.recipes import SMOKE_BUDGET
from raynas.training.config import OPANASConfig, OptimConfig, RunConfig, SupernetConfig, TrainConfig

KINDS = ("fcos", "retinanet", "faster_rcnn", "cascade_rcnn")
SMOKE_PRETRAIN_STEPS = 5


def main_supernet_config(
    data: str, out: str, kind: str = "fcos", workers: int = 2, address: str | None = None
) -> SupernetConfig:
    """The main job's super-net (see the README's main-job row for what it costs)."""
    # digits at 128 px from the body pretrained on digit crops; the widths torchvision's heads need
    # (FCOS: GroupNorm(32, c) with c >= 64)
    # 20 % of the training images are the search split: held out of the super-net and of every
    # standalone run it is compared with, and what candidates are scored on
    return SupernetConfig(
        data=DataConfig(root=data, num_train=1000, num_val=200, batch_size=4, search_fraction=0.2),
        model=ModelConfig(
            kind=kind,
            backbone="resnet18",
            out_channels=64 if kind == "fcos" else 32,
            min_size=128,
            max_size=128,
            backbone_weights="proxy",
            trainable_backbone_layers=3,  # torchvision's default with weights; conv1 + layer1 frozen
        ),
        optim=OptimConfig(epochs=4, lr=0.01, warmup_iters=50, milestones=[3]),
        run=RunConfig(name="supernet", storage_path=out, num_workers=workers, address=address, eval_every=4),
        opanas=OPANASConfig(norm="gn"),
    )


def smoke_supernet_config(
    data: str, out: str, kind: str = "fcos", workers: int = 2, address: str | None = None
) -> SupernetConfig:
    """The seconds-scale super-net of ``--smoke`` (also used by the other experiments' smoke modes): the
    main job's super-net under the smoke budget (``raynas/studies/smoke_budget.yaml``), with what only this
    job needs on top: 2 images per worker, a search split of 4 of the 16 images, one sub-net
    evaluated, and RetinaNet at 16 channels (FCOS's head needs 64)."""
    config = apply_yaml(main_supernet_config(data, out, kind, workers, address), SMOKE_BUDGET)
    return with_overrides(
        config,
        {
            "data": {"batch_size": 2, "search_fraction": 0.25},
            "model": {"out_channels": 64 if kind == "fcos" else 16},
            "opanas": {"eval_subnets": 1},
            "run": {"eval_every": 1},
        },
        where="smoke_supernet_config",
    )


def default_configs(args: argparse.Namespace) -> tuple[SupernetConfig, OPANASSearchConfig]:
    """The budget of each mode (see the README's main-job row for what the default costs)."""
    if args.smoke:
        supernet = smoke_supernet_config(args.data, args.out, args.kind, args.train_workers, args.address)
        search = OPANASSearchConfig(population_size=4, generations=1, top_k=2)
    else:
        supernet = main_supernet_config(args.data, args.out, args.kind, args.train_workers)
        search = OPANASSearchConfig(population_size=10, generations=3, top_k=4, max_search_images=100)
        if args.paper:
            search = replace(search, population_size=50, generations=12, top_k=10, max_search_images=None)
    if args.supernet_config:
        supernet = load_yaml(SupernetConfig, args.supernet_config)
    if args.search_config:
        search = load_yaml(OPANASSearchConfig, args.search_config)
    return apply_flags(supernet, search, args)


def apply_flags(
    supernet: SupernetConfig, search: OPANASSearchConfig, args: argparse.Namespace
) -> tuple[SupernetConfig, OPANASSearchConfig]:
    """Flags given on the command line win over the config files; without a file, flags and their
    defaults decide. ``replace`` re-runs each config's own checks on the new values."""
    run_changes: dict = {}
    search_changes: dict = {}
    if args.out_given or not args.supernet_config:
        run_changes["storage_path"] = args.out
    if args.out_given or not args.search_config:
        search_changes["storage_path"] = args.out
    if not args.search_config:
        search_changes["name"] = "search"
    if args.gpu:
        run_changes["use_gpu"] = search_changes["use_gpu"] = True
    if args.address:
        run_changes["address"] = args.address
    if args.train_workers_given or not args.supernet_config:
        run_changes["num_workers"] = args.train_workers
    if args.scorers is not None or not args.search_config:
        search_changes["num_scorers"] = 2 if args.scorers is None else args.scorers
    supernet = replace(supernet, run=replace(supernet.run, **run_changes), neck=None)
    return supernet, replace(search, **search_changes)


def reference_config(supernet: SupernetConfig) -> TrainConfig:
    """The FPN detector trained standalone with the super-net's data, model and schedule."""
    return TrainConfig(
        data=supernet.data,
        model=supernet.model,
        optim=supernet.optim,
        run=replace(supernet.run, name="reference_fpn", eval_every=supernet.optim.epochs),
    )


def retrain_config(supernet: SupernetConfig, arch_config: dict) -> TrainConfig:
    """The full-training phase of the best architecture: the reference's recipe, the searched neck."""
    from raynas.models.build import searched_neck_spec

    return replace(
        reference_config(supernet),
        run=replace(supernet.run, name="retrain_opa_fpn", eval_every=supernet.optim.epochs),
        neck=searched_neck_spec(arch_config, supernet.opanas),
    )


def prepare_inputs(supernet: SupernetConfig, smoke: bool) -> None:
    """Data and pretrained body on the driver, before any worker starts (a tiny body for --smoke)."""
    from raynas.data.loaders import ensure_dataset
    from raynas.models.pretrain import PretrainConfig, pretrain_body
    from raynas.training.inputs import ensure_inputs

    ensure_dataset(supernet.data)
    weights = Path(supernet.model.backbone_weights or "")
    if smoke and supernet.model.backbone_weights and not weights.is_file():
        pretrain_body(PretrainConfig(steps=SMOKE_PRETRAIN_STEPS, eval_crops=64), weights, log_every=0)
    ensure_inputs(supernet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=None, help="dataset root (default data/digits; data/digits_smoke)")
    parser.add_argument(
        "--out", default=None, help="where runs, tables and plots go (default runs/opanas_ea)"
    )
    parser.add_argument(
        "--kind", default="fcos", choices=KINDS, help="detector (the paper also has the others)"
    )
    parser.add_argument(
        "--train-workers",
        type=int,
        default=None,
        help="Ray Train workers (default 2; Ray gives each CPU worker one thread: 2 uses 2 cores)",
    )
    parser.add_argument("--scorers", type=int, default=None, help="scorer actors (default 2)")
    parser.add_argument("--gpu", action="store_true", help="train and score on GPUs")
    parser.add_argument("--address", default=None, help="attach to a Ray cluster (e.g. auto)")
    parser.add_argument("--paper", action="store_true", help="the paper's EA settings (N_S 50, T 12, k 10)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget (CI)")
    parser.add_argument("--retrain", action="store_true", help="train the best EA architecture standalone")
    parser.add_argument("--no-reference", action="store_true", help="skip the standalone FPN reference")
    parser.add_argument("--supernet-checkpoint", default=None, help="skip training; search this checkpoint")
    parser.add_argument("--supernet-config", default=None, help="YAML SupernetConfig (flags win over it)")
    parser.add_argument("--search-config", default=None, help="YAML OPANASSearchConfig (flags win over it)")
    parser.add_argument("--resume", action="store_true", help="resume interrupted searches under --out")
    parser.add_argument(
        "--verbose", action="store_true", help="Tune's per-trial tables too (default: a line a generation)"
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.out_given, args.train_workers_given = args.out is not None, args.train_workers is not None
    args.out = args.out or "runs/opanas_ea"
    args.data = args.data or ("data/digits_smoke" if args.smoke else "data/digits")
    args.train_workers = 2 if args.train_workers is None else args.train_workers
    return args


def ratio_line(summary: pd.DataFrame, reference: dict | None, metric: str) -> tuple[str, float | None]:
    """How a random sub-net of the super-net compares with the FPN trained standalone (search split)."""
    rows = summary.set_index("strategy")
    if reference is None or "random" not in rows.index:
        return "sub-net / standalone ratio: not measured (needs the random strategy and the reference)", None
    subnet, standalone = float(rows.loc["random", "mean_" + metric]), reference[metric]
    ratio = subnet / standalone if standalone else float("nan")
    return (
        f"random sub-nets of the super-net: mean {metric} {100 * subnet:.1f} on the search split = "
        f"{ratio:.2f} x the standalone FPN's {100 * standalone:.1f} (same data and epochs)",
        ratio,
    )


def checked_configs(
    args: argparse.Namespace,
) -> tuple[SupernetConfig, OPANASSearchConfig, SupernetConfig | None]:
    """The super-net and search configs and a given checkpoint's config, every flag and file checked:
    called before Ray starts, so that a wrong one costs nothing."""
    from raynas.checkpoints import load_state
    from raynas.config import ConfigError, check_writable_folder
    from raynas.search.pool import supernet_config

    if args.smoke and args.paper:
        raise ConfigError("--smoke and --paper exclude each other; give one of them")
    check_counts(
        args,
        {"train_workers": 1, "scorers": 1},
        {"train_workers": "run.num_workers", "scorers": "num_scorers"},
    )
    check_writable_folder(args.out, "--out")
    supernet_cfg, search_cfg = default_configs(args)
    if args.retrain and "evolution" not in search_cfg.strategies:
        raise ConfigError(
            f"--retrain trains the best evolved architecture, but the search runs only "
            f"{search_cfg.strategies}; add evolution to the search config's strategies, or drop --retrain"
        )
    checkpoint = args.supernet_checkpoint
    given_cfg = supernet_config(load_state(checkpoint), checkpoint) if checkpoint else None
    finished = Path(search_cfg.storage_path) / search_cfg.name / "evolution"
    if args.retrain and (finished / "summary.json").is_file():  # reused as it is: checked now
        best_evolved(finished / "best_arch.json", (given_cfg or supernet_cfg).opanas.num_nodes)
    return supernet_cfg, search_cfg, given_cfg


def run(
    args: argparse.Namespace, configs: tuple[SupernetConfig, OPANASSearchConfig, SupernetConfig | None]
) -> int:
    """The main job with the ``configs`` of :func:`checked_configs`."""
    from raynas.io import atomic_write_json
    from raynas.search.opanas import search_opanas
    from raynas.training.launch import ensure_ray
    from raynas.training.standalone import evaluate_checkpoint, train
    from raynas.training.supernet import train_supernet

    started = time.perf_counter()
    times: dict[str, float] = {}
    supernet_cfg, search_cfg, given_cfg = configs
    checkpoint = args.supernet_checkpoint
    ensure_ray(args.address)
    if checkpoint is None:
        prepare_inputs(supernet_cfg, args.smoke)
        times["data_and_body_s"] = time.perf_counter() - started
        print(f"== super-net training ({supernet_cfg.optim.epochs} epochs, K={supernet_cfg.opanas.k}) ==")
        checkpoint = str(train_supernet(supernet_cfg).checkpoint_dir)
        times["supernet_s"] = time.perf_counter() - started - sum(times.values())
    else:  # the checkpoint's config, with the flags applied as they would be to a new super-net
        supernet_cfg = apply_flags(given_cfg, search_cfg, args)[0]
    reference = None
    if not args.no_reference:
        print(f"== standalone FPN reference ({supernet_cfg.optim.epochs} epochs, same data) ==")
        fpn = train(reference_config(supernet_cfg))
        reference = {
            **evaluate_checkpoint(fpn.checkpoint_dir, "search", search_cfg.max_search_images),
            "val": {k: fpn.metrics.get(k) for k in ("AP", "AP50", "AP75")},
        }
        times["reference_s"] = time.perf_counter() - started - sum(times.values())
    print(f"== search: {search_cfg.strategies}, {search_cfg.budget} evaluations each ==")
    outcome = search_opanas(
        checkpoint, search_cfg, resume=args.resume, verbose=1 if args.verbose else 0, address=args.address
    )
    times["search_s"] = time.perf_counter() - started - sum(times.values())
    pd.set_option("display.width", 160)
    summary = outcome["summary"]
    print("\n== strategies compared (Tune result tables) ==")
    print(summary.to_string(index=False))
    line, ratio = ratio_line(summary, reference, search_cfg.metric)
    print("\n" + line)
    for strategy, table in outcome["tables"].items():
        columns = [
            c for c in ("evaluation", "generation", "origin", "AP", "AP50", "neck_params") if c in table
        ]
        print(f"\n-- top 5 {strategy} --")
        print(table.sort_values(search_cfg.metric, ascending=False)[columns].head(5).to_string(index=False))
    run_dir = outcome["run_dir"]
    retrained = None
    if args.retrain:
        best = best_evolved(run_dir / "evolution" / "best_arch.json", supernet_cfg.opanas.num_nodes)
        print("\n== full training: best EA architecture vs the FPN reference (val) ==")
        result = train(retrain_config(supernet_cfg, best))
        retrained = {k: result.metrics.get(k) for k in ("AP", "AP50", "AP75")}
        rows = [
            {"model": "FPN (reference)", **(reference or {}).get("val", {})},
            {"model": "OPA-FPN (best EA)", **retrained},
        ]
        print(pd.DataFrame(rows).to_string(index=False))
        times["retrain_s"] = time.perf_counter() - started - sum(times.values())
    times["total_s"] = time.perf_counter() - started
    atomic_write_json(
        Path(args.out) / "main_job.json",
        {
            "strategies": summary.to_dict("records"),
            "reference_fpn": reference,
            "subnet_to_standalone_ratio": ratio,
            "retrained_best_evolution": retrained,
            "supernet_checkpoint": checkpoint,
            "times_s": {k: round(v, 1) for k, v in times.items()},
        },
    )
    print(f"\nresults: {run_dir} (results.csv, best_arch.json/png per strategy, search_curves.png)")
    print(
        f"{times['total_s']:.0f} s in all: "
        + ", ".join(f"{k} {v:.0f}" for k, v in times.items() if k != "total_s")
    )
    return 0


def best_evolved(path: Path, num_nodes: int) -> dict:
    """The best evolved architecture the search wrote (checked: a user may have edited the file)."""
    from raynas.config import ConfigError
    from raynas.spaces.base import arch_from_json
    from raynas.spaces.opanas import OPANASSpace

    space = OPANASSpace(num_nodes)
    try:
        return space.to_config(arch_from_json(space, path.read_text()))
    except ValueError as err:
        raise ConfigError(
            f"{path}: {err}; restore it, or move the search folder away to search again"
        ) from err


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main("opanas_ea", lambda: run_in_ray_session(args))


def run_in_ray_session(args: argparse.Namespace) -> int:
    from raynas.training.launch import ray_session

    configs = checked_configs(args)  # before Ray starts
    with ray_session(args.address):
        return run(args, configs)


if __name__ == "__main__":
    sys.exit(main())
