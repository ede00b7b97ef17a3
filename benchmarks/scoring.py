"""EA scoring speed: cached backbone features vs full forward, 2 scorer actors vs 1, Tune vs a plain loop.

Goals in benchmarks/README.md, measured side by side in one run, variants interleaved (the
order alternates every repeat) so that machine load hits them alike; medians are reported.

1. ``cache``: seconds per candidate of ``SupernetScorer.score`` with cached backbone features vs the
   full forward, same weights, same validation images, same architectures, in this process. The
   backbone's own share is timed too: the cache removes exactly that part, so
   ``full / (full - backbone)`` bounds the ratio. Goal >= 5x.
2. ``actors``: throughput of a batch of ``--candidates`` architectures on one ``ScorerPool`` of 2
   actors, called by 1 client (one actor busy at a time) vs 2 concurrent clients. Goal >= 1.8x.
3. ``tune``: the same candidates as a Ray Tune search (``run_search`` + ``RandomSearcher``) vs a plain
   Python loop with the same concurrency calling the same ``pool.score``, with ``--candidates-per-trial``
   candidates per Tune trial (the main job's: its generation of 10 over 2 scorers, 5) and with one
   candidate per trial (before batching). Goal: Tune overhead <= 10%. The main job's size:
   ``--val-images 100 --candidates 40 --cls-bias -1 --skip cache actors``.

The super-net is untrained unless ``--checkpoint`` names a trained one. With torchvision's
classification prior an untrained detector emits (almost) no detections, so post-processing and
COCO evaluation cost next to nothing; ``--cls-bias -1`` makes it fire on every anchor (the
post-processing worst case: NMS over every anchor, 300 detections per image). Detections per image
are reported either way.

    python benchmarks/scoring.py                                   # resnet18, 128 px, CPU, ~2 min
    python benchmarks/scoring.py --backbone resnet50 --size 256
    python benchmarks/scoring.py --device cuda --val-images 64
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray
import torch

from raynas.checkpoints import load_state, write_checkpoint
from raynas.data.config import DataConfig
from raynas.data.loaders import base_dataset, build_dataset, ensure_dataset
from raynas.errors import OneLineParser, run_main
from raynas.io import atomic_write_json, select_device
from raynas.models.build import build_model
from raynas.models.config import ModelConfig
from raynas.search.pool import ScorerPool
from raynas.search.random import RandomSearcher
from raynas.search.run import results_table, run_search
from raynas.search.scorer import SupernetScorer, state_to_numpy
from raynas.spaces.opanas import OPANASSpace
from raynas.training.config import SupernetConfig

SPACE = OPANASSpace()
SEARCH_FRACTION = 0.9


def untrained_checkpoint(args: argparse.Namespace, directory: Path) -> Path:
    """An untrained super-net checkpoint (written like ``worker_loop`` writes one) over generated digits."""
    data = DataConfig(
        root=str(Path(args.data or directory / "digits")),
        # candidates are scored on the search split (held out of the training images): make it hold
        # --val-images images
        num_train=math.ceil(args.val_images / SEARCH_FRACTION),
        search_fraction=SEARCH_FRACTION,
        num_val=args.val_images,
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
    cfg = SupernetConfig(data=data, model=model)
    ensure_dataset(cfg.data, progress=False)
    num_classes = base_dataset(build_dataset(cfg.data, "val")).num_classes
    torch.manual_seed(0)
    detector = build_model(cfg.model, num_classes, cfg.neck, cfg.head)
    if args.cls_bias is not None:
        with torch.no_grad():
            for name, param in detector.named_parameters():
                if name.endswith("cls_logits.bias"):
                    param.fill_(args.cls_bias)
    return write_checkpoint(
        directory / "checkpoint",
        cfg,
        "raynas.training.supernet.SupernetTask",
        detector.state_dict(),
        num_classes,
        epoch=0,
        step=0,
    )


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each variant per repeat; the order rotates every repeat."""
    names, times = list(variants), {name: [] for name in variants}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(variants[name]))
    return times


def bench_cache(checkpoint: Path, archs: list, args: argparse.Namespace, device: torch.device) -> dict:
    state = load_state(checkpoint)
    weights = state_to_numpy(state["model"])
    scorers = {
        mode: SupernetScorer(
            weights,
            state["config"],
            state["num_classes"],
            max_images=args.val_images,
            batch_size=args.batch,
            device=str(device),
            cache_features=mode == "cached",
        )
        for mode in ("cached", "full")
    }
    configs = [SPACE.to_config(arch) for arch in archs]
    for scorer in scorers.values():  # warm-up; also fills the per-architecture params/FLOPs cache
        for config in configs:
            scorer.score(config)
    full = scorers["full"]

    @torch.inference_mode()
    def backbone() -> None:
        for images, _ in full.batches:
            image_list, _ = full.model.transform(images)
            full.model.backbone.body(image_list.tensors)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    per_candidate: dict[str, list[float]] = {"cached": [], "full": []}
    for config in configs:
        times = interleaved(
            {mode: lambda s=s, c=config: s.score(c) for mode, s in scorers.items()}, args.repeats
        )
        for mode in per_candidate:
            per_candidate[mode] += times[mode]
    backbone_s = statistics.median(interleaved({"backbone": backbone}, args.repeats)["backbone"])
    with full.supernet.using(archs[0]):
        outputs = [out for k, (images, _) in enumerate(full.batches) for out in full._detect(k, images)]
    cached_s, full_s = (statistics.median(per_candidate[m]) for m in ("cached", "full"))
    return {
        "val_images": len(full.image_ids),
        "detections_per_image": sum(len(o["boxes"]) for o in outputs) / len(outputs),
        "cached_s_per_candidate": cached_s,
        "full_s_per_candidate": full_s,
        "backbone_s_per_val_set": backbone_s,
        "speedup": full_s / cached_s,
        "speedup_bound_full_over_full_minus_backbone": full_s / max(full_s - backbone_s, 1e-9),
        "times_s": per_candidate,
    }


def bench_actors(pool: ScorerPool, configs: list[dict], repeats: int) -> dict:
    def batch(clients: int) -> Callable[[], None]:
        def run() -> None:
            with ThreadPoolExecutor(max_workers=clients) as executor:
                list(executor.map(pool.score, configs))

        return run

    times = interleaved({"1_actor": batch(1), "2_actors": batch(2)}, repeats)
    one, two = statistics.median(times["1_actor"]), statistics.median(times["2_actors"])
    return {
        "candidates": len(configs),
        "1_actor_candidates_per_s": len(configs) / one,
        "2_actors_candidates_per_s": len(configs) / two,
        "throughput_ratio": one / two,
        "times_s": times,
    }


def random_searcher(m: int, seed: int) -> RandomSearcher:
    return RandomSearcher(SPACE, max_evaluations=m, seed=seed, batch_size=m)


def searcher_configs(m: int, seed: int) -> list[dict]:
    """The configs a fresh ``random_searcher(m, seed)`` hands to Tune, in order."""
    searcher = random_searcher(m, seed)
    return [searcher.suggest(f"t{i}") for i in range(m)]


def bench_tune(
    pool: ScorerPool, m: int, repeats: int, workdir: Path, seed: int, paper_budget: int, per_trial: int
) -> dict:
    """Tune search vs plain loop over the same ``m`` architectures (same searcher seed), with
    ``per_trial`` candidates per trial and with one.

    A 1-candidate search of each kind splits Tune's cost into a fixed part (experiment start and
    end) and a per-candidate part, which projects the overhead of a search of ``paper_budget``.
    """
    clients = len(pool.actors)
    configs = searcher_configs(m, seed)
    runs = iter(range(3 * repeats))

    def tune_run(size: int, candidates_per_trial: int = per_trial) -> Callable[[], None]:
        def run() -> None:
            name = f"tune_{next(runs)}"
            searcher = random_searcher(size, seed)
            grid = run_search(
                searcher, pool.handles, name, workdir, clients, candidates_per_trial=candidates_per_trial
            )
            df = results_table(grid, "random")
            if len(df) != size or df["AP"].isna().any():
                raise RuntimeError(f"the Tune run scored {len(df)} of {size} candidates")

        return run

    def loop(size: int) -> Callable[[], None]:
        def run() -> None:
            with ThreadPoolExecutor(max_workers=clients) as executor:
                list(executor.map(pool.score, configs[:size]))

        return run

    variants = {
        "loop": loop(m),
        "tune": tune_run(m),
        "tune_one_per_trial": tune_run(m, 1),
        "loop_1": loop(1),
        "tune_1": tune_run(1),
    }
    times = interleaved(variants, repeats)
    med = {name: statistics.median(t) for name, t in times.items()}
    fixed_s = med["tune_1"] - med["loop_1"]
    per_candidate_s = (med["tune"] - med["loop"] - fixed_s) / (m - 1)
    loop_per_candidate_s = med["loop"] / m
    return {
        "candidates": m,
        "concurrency": clients,
        "candidates_per_trial": per_trial,
        "loop_s": med["loop"],
        "tune_s": med["tune"],
        "overhead": med["tune"] / med["loop"] - 1.0,
        "tune_one_per_trial_s": med["tune_one_per_trial"],
        "overhead_one_per_trial": med["tune_one_per_trial"] / med["loop"] - 1.0,
        "tune_fixed_s": fixed_s,
        "tune_overhead_s_per_candidate": per_candidate_s,
        "loop_s_per_candidate": loop_per_candidate_s,
        "projected_budget": paper_budget,
        "projected_overhead": (fixed_s + paper_budget * per_candidate_s)
        / (paper_budget * loop_per_candidate_s),
        "times_s": times,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", default=None, help="a trained super-net checkpoint (default: untrained)"
    )
    parser.add_argument(
        "--data", default=None, help="digits root for the untrained super-net (default: temp)"
    )
    parser.add_argument(
        "--kind", default="retinanet", choices=["retinanet", "fcos", "faster_rcnn", "cascade_rcnn"]
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--out-channels", type=int, default=32, help="neck width (the main job: 32)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--val-images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--archs", type=int, default=4, help="architectures for the cache comparison")
    parser.add_argument("--candidates", type=int, default=16, help="M, the batch for actors and Tune")
    parser.add_argument("--candidates-per-trial", type=int, default=5, help="Tune part (main job: 5)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cls-bias", type=float, default=None, help="untrained net's cls bias (e.g. -1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of this process (0: default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--skip", nargs="*", default=[], choices=["cache", "actors", "tune"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/scoring.json")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    rng = random.Random(args.seed)
    archs = [SPACE.sample(rng) for _ in range(args.archs)]
    result: dict[str, Any] = {
        "config": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "skip")},
            "device": str(device),
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "machine": platform.processor() or platform.machine(),
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else untrained_checkpoint(args, workdir)
        if "cache" not in args.skip:
            result["cache"] = cache = bench_cache(checkpoint, archs, args, device)
            print(
                f"[cache]  {cache['val_images']} val images, "
                f"{cache['detections_per_image']:.0f} detections/image: "
                f"full {cache['full_s_per_candidate'] * 1e3:.0f} ms, cached "
                f"{cache['cached_s_per_candidate'] * 1e3:.0f} ms per candidate -> {cache['speedup']:.2f}x "
                f"(backbone {cache['backbone_s_per_val_set'] * 1e3:.0f} ms of the full forward; bound "
                f"{cache['speedup_bound_full_over_full_minus_backbone']:.2f}x; goal >= 5x)",
                flush=True,
            )
        if {"actors", "tune"} - set(args.skip):
            result.update(bench_pool(args, checkpoint, device, workdir))
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return result


def bench_pool(args: argparse.Namespace, checkpoint: Path, device: torch.device, workdir: Path) -> dict:
    """Parts 2 and 3 on one pool of (up to) two actors with warm caches."""
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    out: dict[str, Any] = {}
    try:
        use_gpu = device.type == "cuda"
        actors = 2 if not use_gpu else min(2, int(ray.cluster_resources().get("GPU", 0)))
        pool = ScorerPool(
            checkpoint,
            num_actors=actors,
            max_images=args.val_images,
            batch_size=args.batch,
            use_gpu=use_gpu,
        )
        rng = random.Random(args.seed + 1)
        configs = [SPACE.to_config(SPACE.sample(rng)) for _ in range(args.candidates)]
        warm = [SPACE.from_config(c) for c in configs + searcher_configs(args.candidates, args.seed)]
        ray.get([actor.costs.remote(arch) for actor in pool.actors for arch in warm])  # params/FLOPs cached
        if "actors" not in args.skip:
            if actors < 2:
                out["actors"] = {"skipped": "needs 2 GPUs for 2 GPU actors"}
                print("[actors] skipped: needs 2 GPUs", flush=True)
            else:
                out["actors"] = a = bench_actors(pool, configs, args.repeats)
                print(
                    f"[actors] {a['candidates']} candidates: 1 actor {a['1_actor_candidates_per_s']:.2f}/s, "
                    f"2 actors {a['2_actors_candidates_per_s']:.2f}/s -> {a['throughput_ratio']:.2f}x "
                    "(goal >= 1.8x)",
                    flush=True,
                )
        if "tune" not in args.skip:
            out["tune"] = t = bench_tune(
                pool,
                args.candidates,
                args.repeats,
                workdir / "tune",
                args.seed,
                650,
                args.candidates_per_trial,
            )
            print(
                f"[tune]   {t['candidates']} candidates, {t['concurrency']} actor(s): plain loop "
                f"{t['loop_s']:.2f} s, Tune with {t['candidates_per_trial']} per trial {t['tune_s']:.2f} s "
                f"-> overhead {t['overhead'] * 100:.0f}% (goal <= 10%; one per trial: "
                f"{t['tune_one_per_trial_s']:.2f} s, {t['overhead_one_per_trial'] * 100:.0f}%); "
                f"Tune costs {t['tune_fixed_s']:.1f} s per search + "
                f"{t['tune_overhead_s_per_candidate']:.2f} s per candidate vs "
                f"{t['loop_s_per_candidate']:.2f} s of scoring -> {t['projected_overhead'] * 100:.0f}% "
                f"projected for {t['projected_budget']} candidates",
                flush=True,
            )
        pool.shutdown()
    finally:
        ray.shutdown()
    return out


if __name__ == "__main__":
    sys.exit(run_main("scoring", lambda: main() and 0))  # a user's mistake: one line, exit 2
