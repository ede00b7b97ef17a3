"""Baseline: train FCOS-ResNet18 + FPN on the embedded digits data through Ray Train, print COCO metrics.

    python experiments/train_baseline.py                    # 2 CPU workers, the config's 10 epochs
    python experiments/train_baseline.py --epochs 1         # a quick check that everything runs
    python experiments/train_baseline.py --gpu --workers 4  # 4 GPU workers (scale optim.lr with them)
    python experiments/train_baseline.py --address auto     # a cluster started with `ray up cluster.yaml`
    python experiments/train_baseline.py --scratch          # the same recipe from a randomly initialised body

The digits data (1000 training and 200 validation images at 128 px) is generated into the config's
``data.root`` (default ``data/digits``) when absent, and so is the body pretrained on digit crops
(``backbone_weights: proxy``, about 2 minutes the first time). This is the hand-made detector that a
searched OPA-FPN neck or FAD head is compared with; ``--config`` trains any ``TrainConfig`` YAML.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from raynas.checkpoints import load_state
from raynas.config import ConfigError, check_writable_folder, load_yaml
from raynas.errors import OneLineParser
from raynas.jobs.entry import run_experiment
from raynas.studies.flags import check_counts
from raynas.training.config import TrainConfig
from raynas.training.inputs import ensure_inputs
from raynas.training.standalone import train

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "baseline_fcos_r18.yaml"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
TASK = "standalone"  # what a checkpoint to --resume was written by


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="a TrainConfig YAML")
    parser.add_argument("--workers", type=int, help="Ray Train workers (overrides run.num_workers)")
    parser.add_argument("--epochs", type=int, help="overrides optim.epochs")
    parser.add_argument("--address", help='a running Ray cluster ("auto" or "ray://host:10001")')
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (run.use_gpu)")
    parser.add_argument("--out", help="where runs are written (overrides run.storage_path)")
    parser.add_argument("--resume", help="a checkpoint_* folder of an earlier run to continue from")
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="random init (GroupNorm, all stages trained) instead of the body",
    )
    return parser


def configure(args: argparse.Namespace) -> TrainConfig:
    """The config file with the command-line overrides applied (``replace`` re-checks each value)."""
    cfg = load_yaml(TrainConfig, args.config)
    run: dict = {}
    if args.workers is not None:
        run["num_workers"] = args.workers
    if args.address:
        run["address"] = args.address
    if args.gpu:
        run["use_gpu"] = True
    if args.out:
        run["storage_path"] = args.out
    optim = cfg.optim if args.epochs is None else replace(cfg.optim, epochs=args.epochs)
    model = cfg.model
    if args.scratch:
        model = replace(model, backbone_weights=None, norm="gn", trainable_backbone_layers=5)
        run["name"] = cfg.run.name + "_scratch"
    return replace(cfg, model=model, optim=optim, run=replace(cfg.run, **run))


def metrics_table(metrics: dict) -> str:
    """A two-line table of the COCO metrics (in %, ``-`` where COCO has no objects of that size)."""
    cells = [f"{100 * metrics[k]:.1f}" if isinstance(metrics.get(k), int | float) else "-" for k in METRICS]
    width = max(6, *(len(c) for c in cells))
    header = " ".join(k.rjust(width) for k in METRICS)
    return header + "\n" + " ".join(c.rjust(width) for c in cells)


def main(argv: list[str] | None = None) -> int:
    return run_experiment("train_baseline", build_parser(), argv, check, run, uses_ray=False)


def check_resume(checkpoint: str) -> None:
    """``--resume`` is a standalone run's checkpoint: checked before the data and body are made (the body's
    pretraining takes minutes); whether its model fits the config is checked once the data are there."""
    state = load_state(checkpoint)
    if state.get("task") != TASK:
        raise ConfigError(
            f"--resume {checkpoint!r} was written by {state.get('task')!r}, not by standalone training; "
            "pass a checkpoint_* folder of an earlier train_baseline.py or `raynas train` run"
        )


def check(args: argparse.Namespace) -> TrainConfig:
    """The flags, the config and the checkpoint to resume, checked before data or a body are made."""
    check_counts(args, {"workers": 1, "epochs": 1}, {"workers": "run.num_workers", "epochs": "optim.epochs"})
    cfg = configure(args)
    check_writable_folder(cfg.run.storage_path, "--out" if args.out else "run.storage_path")
    if args.resume:
        check_resume(args.resume)
    return cfg


def run(args: argparse.Namespace, cfg: TrainConfig) -> None:
    """Train (Ray Train starts its own Ray, or attaches to ``run.address``) and print COCO metrics."""
    ensure_inputs(cfg)  # data and body on the driver, with progress, before the workers start
    print(
        f"training {cfg.model.kind}-{cfg.model.backbone} at {cfg.model.min_size} px for "
        f"{cfg.optim.epochs} epoch(s) on {cfg.run.num_workers} {'GPU' if cfg.run.use_gpu else 'CPU'} "
        f"worker(s), batch {cfg.data.batch_size} per worker, data {cfg.data.root}",
        flush=True,
    )
    started = time.perf_counter()
    result = train(cfg, resume_from=args.resume)
    wall = time.perf_counter() - started
    metrics = result.metrics
    print(f"\n== COCO metrics on {cfg.data.root}/val after epoch {metrics['epoch']} (%) ==")
    print(metrics_table(metrics))
    print(
        f"\ntrain loss {metrics['train_loss']:.4f}; last epoch {metrics['epoch_time_s']:.1f} s of training "
        f"(without evaluation); {wall:.0f} s in all, Ray start-up and evaluation included"
    )
    print(f"checkpoint: {result.checkpoint_dir}")


if __name__ == "__main__":
    sys.exit(main())
