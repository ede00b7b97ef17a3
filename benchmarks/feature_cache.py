"""One training epoch on cached body outputs vs the same epoch through the frozen body.

Goals in benchmarks/README.md; measured side by side in one run, variants interleaved (the order
rotates every repeat) so that machine load hits them alike; medians are reported.

Both variants train the same detector with a frozen body (``model.trainable_backbone_layers: 0``) for one
epoch of ``worker_loop``'s inner loop, in plain PyTorch (no Ray), from the same initial weights, data,
batch, seed and ``--threads``:

* ``images``: the task's ``train_step`` on the images (PNG decode, the detector's transform, the body's
  forward, then the neck and head forward and backward).
* ``cached``: the same ``train_step`` on the split's cached body outputs (``raynas.data.feature_cache``, read
  through memory maps) with the detector wrapped in ``CachedBodyDetector``.

``--task supernet`` times the OPANAS super-net's epoch instead (K fair sub-nets a step). The cache is made
once before the timings (its cost, one body pass over the split, is reported as ``build_s``: it is paid
once per body and split, and reused by every later job).

    python benchmarks/feature_cache.py                      # fcos, resnet18, 128 px, 96 images, batch 8
    python benchmarks/feature_cache.py --size 320 --images 48 --task supernet
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
from pathlib import Path
from typing import Any

import torch

from raynas.data.config import DataConfig
from raynas.data.feature_cache import feature_dataset
from raynas.data.loaders import base_dataset, build_dataset, ensure_dataset
from raynas.errors import OneLineParser, run_main
from raynas.io import atomic_write_json
from raynas.models.cached import CachedBodyDetector
from raynas.models.config import ModelConfig
from raynas.training.config import OptimConfig, SupernetConfig, TrainConfig
from raynas.training.engine import Task
from raynas.training.standalone import StandaloneTask
from raynas.training.supernet import SupernetTask


def epoch(cfg: TrainConfig, task_cls: type[Task], cached: bool) -> float:
    """Seconds of one epoch of ``worker_loop``'s inner loop, on images or on the cache."""
    task = task_cls(cfg)
    torch.manual_seed(cfg.run.seed)
    dataset = build_dataset(cfg.data, "train")
    model = task.build_model(base_dataset(dataset).num_classes).train()
    if cached:
        dataset = feature_dataset(dataset, "train", model, cfg.data.root, cfg.model.cache_dtype)
        model = CachedBodyDetector(model).train()
    loader = next(iter(task.train_loaders(dataset).values()))
    task.build_optimizers(model, len(loader))
    started = time.perf_counter()
    for step, batch in enumerate(loader):
        task.train_step(model, batch, step, {})
    return time.perf_counter() - started


def build_time(cfg: TrainConfig, task_cls: type[Task]) -> float:
    """Seconds to make the cache of the training split (the body over every image, written to disk)."""
    torch.manual_seed(cfg.run.seed)
    dataset = build_dataset(cfg.data, "train")
    model = task_cls(cfg).build_model(base_dataset(dataset).num_classes)
    started = time.perf_counter()
    feature_dataset(dataset, "train", model, cfg.data.root, cfg.model.cache_dtype)
    return time.perf_counter() - started


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
        max_size=args.size, trainable_backbone_layers=0, cache_features=True, cache_dtype=args.dtype,
    )  # fmt: skip
    optim = OptimConfig(epochs=1, warmup_iters=2, milestones=[])
    if args.task == "supernet":
        return SupernetConfig(data=data, model=model, optim=optim)
    return TrainConfig(data=data, model=model, optim=optim)


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="standalone", choices=["standalone", "supernet"])
    parser.add_argument("--kind", default="fcos", choices=["fcos", "retinanet"])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--out-channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--images", type=int, default=96, help="training images (one epoch)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a 1-CPU Ray worker has 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/feature_cache.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task_cls = SupernetTask if args.task == "supernet" else StandaloneTask
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(args, Path(tmp) / "digits")
        ensure_dataset(cfg.data, progress=False)
        build_s = build_time(cfg, task_cls)
        cache_mb = sum(p.stat().st_size for p in (Path(tmp) / "digits" / "features").rglob("*.npy")) / 2**20
        variants: dict[str, Callable[[], Any]] = {
            "images": lambda: epoch(cfg, task_cls, cached=False),
            "cached": lambda: epoch(cfg, task_cls, cached=True),
        }
        measured = interleaved(variants, args.repeats)
    images, cached = (statistics.median(measured[name]) for name in ("images", "cached"))
    result: dict[str, Any] = {
        "config": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
        },
        "images_epoch_s": images,
        "cached_epoch_s": cached,
        "speedup": images / cached,
        "build_s": build_s,
        "cache_mb": cache_mb,
        "times_s": measured,
    }
    setting = f"{args.images} images at {args.size} px, batch {args.batch}, {args.threads} thread(s)"
    print(f"{args.task} epoch, {setting}")
    print(f"through the frozen body  {images:7.2f} s")
    print(f"on cached {args.dtype:<9}     {cached:7.2f} s   ({images / cached:.2f}x faster)")
    print(f"making the cache once    {build_s:7.2f} s   ({cache_mb:.1f} MiB on disk)")
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(run_main("feature_cache", lambda: main() and 0))  # a user's mistake: one line, exit 2
