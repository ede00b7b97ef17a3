"""Does the super-net rank architectures the way standalone training does? (OPANAS Sec. 4.3, Table 5)

    python experiments/rank_correlation.py --checkpoint runs/opanas_ea/supernet/checkpoint_...
    python experiments/rank_correlation.py --checkpoint CKPT --m 10 --pool 40 --epochs 4
    python experiments/rank_correlation.py --smoke      # tiny: trains its own super-net first (CI)

Steps: draw ``--pool`` random architectures and score each on the super-net's search split with the
scorer actors (inference only, the super-net's weights); pick ``--m`` of them spread evenly over the
range of those scores; train each standalone from the same pretrained body with one recipe on Ray Train
(the super-net's data, model and schedule unless ``--epochs`` says otherwise); evaluate on ``val``;
report Kendall tau and Spearman rho between super-net score and standalone AP, each with a bootstrap
95 % interval. The paper sampled 15 sub-nets and measured tau = 0.61.

Resumable: the pool's scores are kept in ``pool.csv`` and every standalone run is skipped on re-run
once finished (an interrupted one continues from its last checkpoint). Outputs in ``--out``:
``rank_correlation.csv`` (one row per trained architecture), ``rank_correlation.json`` (tau, rho,
intervals, settings, times) and ``rank_correlation.png`` (scatter).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from raynas.checkpoints import load_state
from raynas.config import ConfigError
from raynas.errors import run_main
from raynas.evaluation import rank_agreement, spread_picks
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.arms import arch_id
from raynas.models.build import searched_neck_spec
from raynas.spaces.opanas import OPANASSpace
from raynas.studies.flags import check_counts
from raynas.studies.tables import none_as_written, read_table
from raynas.training.config import SupernetConfig, TrainConfig

METRIC = "AP"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="super-net checkpoint (checkpoint_* folder of opanas_ea.py)")
    parser.add_argument("--out", default="runs/rank_correlation", help="where runs, tables and plots go")
    parser.add_argument("--pool", type=int, default=40, help="random architectures scored on the super-net")
    parser.add_argument(
        "--m", type=int, default=10, help="architectures trained standalone (spread over scores)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="standalone epochs (default: the super-net's)"
    )
    parser.add_argument("--search-images", type=int, default=None, help="cap on search-split images scored")
    parser.add_argument("--scorers", type=int, default=2, help="scorer actors")
    parser.add_argument(
        "--train-workers", type=int, default=None, help="Ray Train workers per standalone run"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the pool draw")
    parser.add_argument("--gpu", action="store_true", help="train and score on GPUs")
    parser.add_argument("--address", default=None, help="attach to a Ray cluster (e.g. auto)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget; trains its own super-net")
    return parser


def score_pool(checkpoint: str, space: OPANASSpace, args: argparse.Namespace, out: Path) -> pd.DataFrame:
    """Super-net scores of ``--pool`` random architectures (kept in ``pool.csv``; reused on re-run)."""
    path = out / "pool.csv"
    key = {
        "seed": args.seed,
        "checkpoint": str(Path(checkpoint).resolve()),
        "search_images": args.search_images,
    }
    table = kept_pool(path)
    if table is not None:
        same = all(table[k].astype(str).eq(str(v)).all() for k, v in key.items() if k in table)
        if len(table) == args.pool and same and set(key) <= set(table):
            return table  # scored by this super-net on these images: reused
    from ray.util import ActorPool

    from raynas.search.pool import ScorerPool

    rng = random.Random(args.seed)
    archs: list = []
    while len(archs) < args.pool:
        arch = space.canonical(space.sample(rng))
        if arch not in archs:
            archs.append(arch)
    configs = [space.to_config(arch) for arch in archs]
    scorers = ScorerPool(checkpoint, num_actors=args.scorers, max_images=args.search_images, use_gpu=args.gpu)
    try:
        started = time.perf_counter()
        results = list(ActorPool(scorers.actors).map(lambda actor, c: actor.score.remote(c), configs))
        print(
            f"scored {len(configs)} architectures on the super-net in {time.perf_counter() - started:.0f} s"
        )
    finally:
        scorers.shutdown()
    rows = [
        {"arch_id": arch_id(c), **c, "supernet_" + METRIC: r[METRIC], "supernet_AP50": r["AP50"],
         "neck_params": r["neck_params"], "neck_flops": r["neck_flops"], **key}
        for c, r in zip(configs, results)
    ]  # fmt: skip
    table = pd.DataFrame(rows)
    atomic_write_text(path, table.to_csv(index=False))
    return table


def standalone_config(supernet: SupernetConfig, arch_config: dict, args: argparse.Namespace, out: Path):
    """One recipe for every architecture: the super-net's data, model and schedule, its neck options."""
    optim = supernet.optim if args.epochs is None else replace(supernet.optim, epochs=args.epochs)
    optim = replace(optim, milestones=[m for m in optim.milestones if m < optim.epochs])
    run = replace(
        supernet.run,
        name=f"arch_{arch_id(arch_config)}",
        storage_path=str(out / "standalone"),
        eval_every=optim.epochs,
        use_gpu=args.gpu,
        address=args.address,
        num_workers=args.train_workers or supernet.run.num_workers,
    )
    return TrainConfig(
        data=supernet.data,
        model=supernet.model,
        optim=optim,
        run=run,
        neck=searched_neck_spec(arch_config, supernet.opanas),
    )


def plot(table: pd.DataFrame, stats: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(100 * table["supernet_" + METRIC], 100 * table["standalone_" + METRIC])
    ax.set_xlabel(f"super-net {METRIC} on the search split (%)")
    ax.set_ylabel(f"standalone {METRIC} on val (%)")
    ax.set_title(
        f"Kendall tau {stats['kendall_tau']:.2f} [{stats['kendall_tau_low']:.2f}, "
        f"{stats['kendall_tau_high']:.2f}], n={stats['n']}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def smoke_checkpoint(out: Path, args: argparse.Namespace) -> str:
    """A tiny super-net for the smoke mode (the same one opanas_ea.py --smoke trains)."""
    from raynas.jobs.main_job import prepare_inputs, smoke_supernet_config
    from raynas.training.supernet import train_supernet

    cfg = smoke_supernet_config(data=str(out / "data"), out=str(out), workers=1, address=args.address)
    prepare_inputs(cfg, smoke=True)  # a pretrained body of a few steps, not the 2-minute one
    return str(train_supernet(cfg).checkpoint_dir)


def run(args: argparse.Namespace) -> dict:
    from raynas.search.pool import supernet_config
    from raynas.training.cluster import ensure_ray
    from raynas.training.standalone import train

    out = Path(args.out)
    ensure_ray(args.address)
    started = time.perf_counter()
    checkpoint = args.checkpoint or smoke_checkpoint(out, args)
    supernet = supernet_config(load_state(checkpoint), checkpoint)
    space = OPANASSpace(num_nodes=supernet.opanas.num_nodes)
    pool = score_pool(checkpoint, space, args, out)
    picked = pool.iloc[spread_picks(pool["supernet_" + METRIC].tolist(), args.m)].reset_index(drop=True)
    rows = []
    for index, row in picked.iterrows():
        arch_config = space.to_config(space.from_config(row.to_dict()))
        print(f"== standalone {index + 1}/{len(picked)}: arch {row['arch_id']} "
              f"(super-net {METRIC} {100 * row['supernet_' + METRIC]:.1f}) ==", flush=True)  # fmt: skip
        result = train(standalone_config(supernet, arch_config, args, out))
        rows.append(
            {
                **row.to_dict(),
                **{f"standalone_{k}": result.metrics.get(k) for k in ("AP", "AP50", "AP75")},
                "train_time_s": result.metrics.get("epoch_time_s", 0) * result.metrics.get("epoch", 0),
                "checkpoint": str(result.checkpoint_dir),
            }
        )
    table = pd.DataFrame(rows)
    stats = rank_agreement(table["supernet_" + METRIC], table["standalone_" + METRIC])
    record = {
        **stats,
        "metric": METRIC,
        "pool": args.pool,
        "m": args.m,
        "standalone_epochs": supernet.optim.epochs if args.epochs is None else args.epochs,
        "supernet_checkpoint": str(checkpoint),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(out / "rank_correlation.csv", table.to_csv(index=False))
    atomic_write_json(out / "rank_correlation.json", record)
    plot(table, stats, out / "rank_correlation.png")
    return record


def report(args: argparse.Namespace) -> int:
    from raynas.config import check_writable_folder
    from raynas.search.pool import supernet_config
    from raynas.training.cluster import ray_session

    check_counts(args, {"pool": 3, "m": 3, "epochs": 1, "search_images": 1, "scorers": 1, "train_workers": 1})
    if args.smoke:  # the given values were checked, and give way to the smoke budget
        args.pool, args.m, args.epochs = min(args.pool, 6), min(args.m, 3), 1
    elif not args.checkpoint:
        raise ConfigError(
            "--checkpoint is required (or --smoke); pass the checkpoint_* folder of a super-net run, "
            "e.g. runs/opanas_ea/supernet/checkpoint_..."
        )
    if args.m > args.pool:
        raise ConfigError(f"--m {args.m} exceeds --pool {args.pool}: pick at most as many as are scored")
    check_writable_folder(args.out, "--out")
    if args.checkpoint:
        supernet_config(load_state(args.checkpoint), args.checkpoint)  # a super-net's, before Ray starts
    kept_pool(Path(args.out) / "pool.csv")
    with ray_session(args.address):
        record = run(args)
    print(
        f"\nKendall tau {record['kendall_tau']:.3f} (95 % CI {record['kendall_tau_low']:.3f} .. "
        f"{record['kendall_tau_high']:.3f}), Spearman rho {record['spearman_rho']:.3f} "
        f"(95 % CI {record['spearman_rho_low']:.3f} .. {record['spearman_rho_high']:.3f}) over "
        f"{record['n']} architectures; {record['wall_time_s']:.0f} s\nresults: {args.out}"
    )
    return 0


def kept_pool(path: Path) -> pd.DataFrame | None:
    """The pool scored by an earlier run (``None`` if none), each row a whole architecture with its score
    and key: a damaged copy is refused (also before Ray starts), not half reused."""
    if not path.is_file():
        return None
    fix = "restore it, or delete it to score the pool again"
    space = OPANASSpace(5)
    # a row cut short in its key (seed, checkpoint, search_images) matches no key: the pool is scored again
    table = read_table(path, fix, complete=("arch_id", *space.keys), numeric=("supernet_" + METRIC,))
    for line, row in enumerate(table.to_dict("records"), start=2):
        try:
            space.from_config(row)
        except ValueError as err:
            raise ConfigError(f"{path} line {line} is not an OPANAS architecture ({err}); {fix}") from err
    return none_as_written(table)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("rank_correlation", lambda: report(args))


if __name__ == "__main__":
    sys.exit(main())
