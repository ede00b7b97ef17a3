"""One OPANAS super-net step vs one standalone detector step: fair sampling should cost ~K x, no more.

Goals: benchmarks/README.md. All variants take a full optimisation step (forward,
backward, gradient clipping, SGD update, LR scheduler) through the training tasks' own
``train_step``, in plain PyTorch (no Ray), on the same batch of digits images, interleaved (the
order rotates every repeat); medians are reported.

* ``supernet``: ``SupernetTask.train_step``, K=4 strictly fair sub-nets (the backbone body once, neck
  and head forward+backward per sub-net, gradients accumulated) + the gamma L1 term + one update.
  The step index is fixed, so every repeat draws the same K sub-nets.
* ``fpn``: ``StandaloneTask.train_step`` of the same detector with torchvision's FPN neck.
  Goal: supernet <= 1.2 x K x fpn.
* ``opa_fpn_xK``: the K sub-nets of that same fair draw built as discrete OPA-FPN detectors, one
  standalone step each (K updates). An OPA-FPN sub-net is a bigger neck than an FPN, so this is
  what the K forward+backward passes cost without weight sharing: supernet / opa_fpn_xK is the
  super-net's overhead over them, below 1 because the super-net runs the shared body once.

    python benchmarks/supernet_step.py                       # retinanet, resnet18, 128 px, batch 8
    python benchmarks/supernet_step.py --device cuda --batch 16 --size 512
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raynas.data.config import DataConfig
from raynas.data.loaders import base_dataset, build_dataset, ensure_dataset, make_loader
from raynas.errors import OneLineParser, run_main
from raynas.io import atomic_write_json, select_device
from raynas.models.config import ModelConfig
from raynas.spaces.opanas import OPANASSpace, fair_sample, fair_step_seed
from raynas.training.config import OPANASConfig, SupernetConfig, TrainConfig
from raynas.training.engine import Task
from raynas.training.standalone import StandaloneTask
from raynas.training.supernet import SupernetTask

STEP = 0  # the fixed step index: the same fair draw in every repeat


def prepare(task: Task, num_classes: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = task.build_model(num_classes).to(device).train()
    task.device = device
    task.build_optimizers(model, iters_per_epoch=1)
    return model


def timed_step(task: Task, model: nn.Module, batch: Any, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    task.train_step(model, batch, STEP, {})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run(args: argparse.Namespace, device: torch.device, data_root: Path) -> dict[str, Any]:
    data = DataConfig(
        root=str(data_root),
        num_train=args.batch,
        search_fraction=0.0,  # one training batch, nothing scored: no search split
        num_val=2,
        image_size=args.size,
        batch_size=args.batch,
        hflip=0.0,
    )
    model = ModelConfig(
        kind=args.kind,
        backbone=args.backbone,
        out_channels=args.out_channels,
        min_size=args.size,
        max_size=args.size,
    )
    supernet_cfg = SupernetConfig(data=data, model=model, opanas=OPANASConfig(k=args.k))
    ensure_dataset(data, progress=False)
    dataset = build_dataset(data, "train", train_transforms=False)
    num_classes = base_dataset(dataset).num_classes
    images, targets = next(iter(make_loader(dataset, args.batch, shuffle=False)))
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    batch = ([image.to(device) for image in images], targets)

    space = OPANASSpace(num_nodes=supernet_cfg.opanas.num_nodes)
    archs = fair_sample(space, seed=fair_step_seed(supernet_cfg.run.seed, STEP), k=args.k)
    supernet_task = SupernetTask(supernet_cfg)
    fpn_task = StandaloneTask(TrainConfig(data=data, model=model, optim=supernet_cfg.optim))
    discrete_tasks = [
        StandaloneTask(
            TrainConfig(
                data=data,
                model=model,
                optim=supernet_cfg.optim,
                neck={"type": "opa_fpn", "arch": space.to_config(a)},
            )
        )
        for a in archs
    ]
    models = {
        "supernet": prepare(supernet_task, num_classes, device),
        "fpn": prepare(fpn_task, num_classes, device),
    }
    discrete_models = [prepare(task, num_classes, device) for task in discrete_tasks]
    opa_name = f"opa_fpn_x{args.k}"
    steps = {
        "supernet": lambda: timed_step(supernet_task, models["supernet"], batch, device),
        "fpn": lambda: timed_step(fpn_task, models["fpn"], batch, device),
        opa_name: lambda: sum(
            timed_step(t, m, batch, device) for t, m in zip(discrete_tasks, discrete_models)
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(args.warmup + args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds = steps[name]()
            if r >= args.warmup:
                times[name].append(seconds)
    med = {name: statistics.median(t) for name, t in times.items()}

    def neck_params(m: nn.Module) -> int:
        return sum(p.numel() for p in m.backbone.neck.parameters())

    return {
        "config": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "data")},
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
        },
        "fair_archs": [space.to_config(a) for a in archs],
        "neck_params": {
            "supernet": neck_params(models["supernet"]),
            "fpn": neck_params(models["fpn"]),
            "opa_fpn_mean": statistics.mean(neck_params(m) for m in discrete_models),
        },
        "median_s": med,
        "supernet_over_fpn": med["supernet"] / med["fpn"],
        "goal_max_supernet_over_fpn": 1.2 * args.k,
        f"supernet_over_{opa_name}": med["supernet"] / med[opa_name],
        "times_s": times,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kind", default="retinanet", choices=["retinanet", "fcos", "faster_rcnn", "cascade_rcnn"]
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--out-channels", type=int, default=32, help="neck width (the main job: 32)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--k", type=int, default=4, help="fair sub-nets per step (paper: 4)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--data", default=None, help="digits root (default: generated into a temp dir)")
    parser.add_argument("--out", default="benchmarks/results/supernet_step.json")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, device, Path(args.data) if args.data else Path(tmp) / "digits")
    med, k = result["median_s"], args.k
    print(f"config: {result['config']}")
    print(f"neck params: {result['neck_params']}")
    for name, seconds in med.items():
        print(f"{name:<12}{seconds * 1e3:>10.0f} ms/step  ({seconds / med['fpn']:.2f} x fpn)")
    print(
        f"supernet / fpn = {result['supernet_over_fpn']:.2f} (K={k}; goal <= {1.2 * k:.1f}); "
        f"supernet / opa_fpn_x{k} = {result[f'supernet_over_opa_fpn_x{k}']:.2f}"
    )
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(run_main("supernet_step", lambda: main() and 0))  # a user's mistake: one line, exit 2
