"""Ray Train's cost: one training epoch through raynas' engine vs the same epoch in a plain PyTorch loop.

Goals in benchmarks/README.md; measured side by side in one run, variants interleaved (the order
rotates every repeat) so that machine load hits them alike; medians are reported.

* ``plain``: the epoch as ``raynas.training.engine.worker_loop`` runs it, without Ray: the same
  ``StandaloneTask`` (model, SGD with warmup, ``train_step``), the same data, batch and seed, in this
  process with ``--threads`` torch threads (Ray gives a 1-CPU worker one thread: the default 1 matches).
* ``engine_1``: ``raynas.training.standalone.train`` with 1 Ray Train worker (a fresh run each repeat).
* ``engine_2``: the same with 2 workers (DDP over gloo, each worker half of the images).

Two numbers per engine variant: the epoch time the worker measures around its loop (``epoch_time_s``,
what Ray Train adds inside an epoch: data loader wrapping, DDP) and the wall time of the whole call
(worker group start, checkpoint, report: Ray Train's fixed cost per run). The plain loop's epoch is timed
the same way. Goal: ``engine_1`` epoch within 10 % of ``plain``; ``engine_2`` vs ``engine_1`` shows what
a second worker buys on this machine.

    python benchmarks/train_overhead.py                        # fcos, resnet18, 128 px, 96 images, batch 8
    python benchmarks/train_overhead.py --images 200 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
import torch

from raynas.data.config import DataConfig
from raynas.data.loaders import base_dataset, build_dataset, ensure_dataset
from raynas.errors import OneLineParser, run_main
from raynas.io import atomic_write_json
from raynas.models.config import ModelConfig
from raynas.training.config import OptimConfig, RunConfig, TrainConfig
from raynas.training.standalone import StandaloneTask, train


def plain_epoch(cfg: TrainConfig) -> float:
    """Seconds of one epoch of ``worker_loop``'s inner loop, without Ray."""
    task = StandaloneTask(cfg)
    torch.manual_seed(cfg.run.seed)
    dataset = build_dataset(cfg.data, "train")
    task.device = torch.device("cpu")
    model = task.build_model(base_dataset(dataset).num_classes).train()
    loader = next(iter(task.train_loaders(dataset).values()))
    task.build_optimizers(model, len(loader))
    started = time.perf_counter()
    for step, batch in enumerate(loader):
        task.train_step(model, batch, step, {})
    return time.perf_counter() - started


def engine_epoch(cfg: TrainConfig, storage: Path, name: str) -> tuple[float, float]:
    """``(epoch_time_s, wall_s)`` of one run of the engine."""
    cfg = replace(cfg, run=replace(cfg.run, name=name, storage_path=str(storage)))
    started = time.perf_counter()
    result = train(cfg)
    return float(result.metrics["epoch_time_s"]), time.perf_counter() - started


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[Any]]:
    names, out = list(variants), {name: [] for name in variants}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out[name].append(variants[name]())
    return out


def config(args: argparse.Namespace, root: Path) -> TrainConfig:
    data = DataConfig(
        root=str(root),
        num_train=args.images,
        num_val=2,
        image_size=args.size,
        batch_size=args.batch,
        hflip=0.0,
    )
    model = ModelConfig(
        kind=args.kind, backbone=args.backbone, out_channels=args.out_channels, min_size=args.size,
        max_size=args.size,
    )  # fmt: skip
    optim = OptimConfig(epochs=1, warmup_iters=2, milestones=[])
    return TrainConfig(data=data, model=model, optim=optim, run=RunConfig(eval_every=1))


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="fcos", choices=["fcos", "retinanet", "faster_rcnn"])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--out-channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--images", type=int, default=96, help="training images (one epoch)")
    parser.add_argument("--batch", type=int, default=8, help="per worker")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the plain loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-two-workers", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/train_overhead.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config(args, Path(tmp) / "digits")
            ensure_dataset(cfg.data, progress=False)
            runs = iter(range(10**6))
            variants: dict[str, Callable[[], Any]] = {
                "plain": lambda: plain_epoch(cfg),
                "engine_1": lambda: engine_epoch(cfg, Path(tmp) / "runs", f"w1_{next(runs)}"),
            }
            if not args.skip_two_workers:
                two = replace(cfg, run=replace(cfg.run, num_workers=2))
                variants["engine_2"] = lambda: engine_epoch(two, Path(tmp) / "runs", f"w2_{next(runs)}")
            variants["plain"]()  # warm-up: imports, first allocations
            measured = interleaved(variants, args.repeats)
    finally:
        ray.shutdown()
    plain = statistics.median(measured["plain"])
    result: dict[str, Any] = {
        "config": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "machine": platform.processor() or platform.machine(),
        },
        "plain_epoch_s": plain,
        "times_s": measured,
    }
    print(f"plain loop      epoch {plain:7.2f} s")
    for name in ("engine_1", "engine_2"):
        if name not in measured:
            continue
        epoch = statistics.median(e for e, _ in measured[name])
        wall = statistics.median(w for _, w in measured[name])
        result[name] = {"epoch_s": epoch, "wall_s": wall, "epoch_over_plain": epoch / plain}
        print(f"{name:<15} epoch {epoch:7.2f} s ({epoch / plain:.2f} x plain), whole run {wall:7.2f} s")
    result["engine_1_epoch_overhead"] = result["engine_1"]["epoch_over_plain"] - 1.0
    print(
        f"Ray Train overhead per epoch, 1 worker: {result['engine_1_epoch_overhead'] * 100:+.0f}%"
        " (goal <= 10%)"
    )
    if "engine_2" in result:
        speedup = result["engine_1"]["epoch_s"] / result["engine_2"]["epoch_s"]
        result["two_workers_epoch_speedup"] = speedup
        print(f"2 workers vs 1: epoch {speedup:.2f}x faster")
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(run_main("train_overhead", lambda: main() and 0))  # a user's mistake: one line, exit 2
