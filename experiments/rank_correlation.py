"""Does the super-net rank the architectures evolution chooses between? (OPANAS Sec. 4.3, Table 5; v2)

    python experiments/rank_correlation.py --checkpoint runs/opanas_ea/supernet/checkpoint_...
    python experiments/rank_correlation.py --checkpoint CKPT --m 24 --pool 96 --standalone-seeds 3
    python experiments/rank_correlation.py --smoke      # tiny: trains its own super-net first (CI)

The protocol of issue 27 (v1 spread 10 picks over the super-net's *score* range, so on a skewed pool half
came from the bottom quarter; one seed each; a bootstrap over architectures only):

1. a fresh pool: ``--pool`` architectures, distinct after ``OPANASSpace.canonical``, drawn with
   ``--pool-seed`` (seed 0 drew v1's pool, the architectures the earlier analysis was tuned on, and is
   refused outside ``--smoke``), each scored on the super-net's search split by the scorer actors;
2. ``--m`` (>= 20) of them picked stratified by *rank* (``raynas.studies.stratified_by_rank``): half from
   the pool's top quarter, where evolution decides, half from the other ranks, one random pick per equal
   stretch of ranks (seeded by ``--pool-seed``);
3. each trained standalone with ``--standalone-seeds`` seeds (a run's seed sets its initialisation and
   its data order) with one recipe (``raynas.jobs.arms.standalone_recipe``: the super-net's data and
   model, ``--epochs``, default the super-net's, the learning rate decayed in the last), AP on test (val
   on the digits proxy, which has no test split);
4. Kendall tau and Spearman rho between super-net score and mean standalone AP, over all picks and over
   the top half by super-net score, each with a 95 % bootstrap interval that resamples architectures and,
   within each, its seeds (``raynas.evaluation.ranking.rank_agreement_over_seeds``); and the tau between
   the standalone APs of seed 0 and seed 1: how well one standalone run ranks another, the ceiling any
   super-net can reach. The paper measured tau = 0.61 over 15 sub-nets.

Resumable: the pool's scores are kept in ``pool.csv``; each finished (architecture, seed) is a row of
``rank_correlation_seeds.csv`` (rewritten after every run) and is not trained again on re-run; an
interrupted run continues from its last checkpoint. Outputs in ``--out``: ``rank_correlation.csv`` (one
row per picked architecture: its encoding, ``arch_id``, pool rank, super-net score, mean standalone AP
``standalone_AP`` and per-seed ``standalone_AP_seed<k>``), ``rank_correlation_seeds.csv``,
``rank_correlation.md`` (the numbers, the method in two lines), ``.json`` (the same with settings, pool
seed, times), ``.png`` (scatter). ``supernet_variants.py --archs`` reads ``rank_correlation.csv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raynas.checkpoints import load_state
from raynas.config import ConfigError
from raynas.errors import OneLineParser
from raynas.jobs.entry import run_experiment
from raynas.jobs.rank_correlation import (
    DEFAULT_POOL_SEED,
    MIN_M,
    SEEDS_FILE,
    V1_POOL_SEED,
    RankSettings,
    kept_pool,
    kept_seed_rows,
    run,
)
from raynas.studies.flags import check_counts


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="super-net checkpoint (checkpoint_* folder of opanas_ea.py)")
    parser.add_argument("--out", default="runs/rank_correlation", help="where runs, tables and plots go")
    parser.add_argument("--pool", type=int, default=80, help="random architectures scored on the super-net")
    parser.add_argument(
        "--pool-seed",
        type=int,
        default=DEFAULT_POOL_SEED,
        help=f"seed of the pool draw and of the picks ({V1_POOL_SEED} drew v1's pool: refused)",
    )
    parser.add_argument(
        "--m",
        type=int,
        default=MIN_M,
        help=f"architectures trained standalone (>= {MIN_M}; stratified by rank)",
    )
    parser.add_argument(
        "--standalone-seeds", type=int, default=2, help="standalone runs per architecture (seeds 0..k-1)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="standalone epochs (default: the super-net's)"
    )
    parser.add_argument("--search-images", type=int, default=None, help="cap on search-split images scored")
    parser.add_argument("--scorers", type=int, default=2, help="scorer actors")
    parser.add_argument(
        "--train-workers", type=int, default=None, help="Ray Train workers per standalone run"
    )
    parser.add_argument("--gpu", action="store_true", help="train and score on GPUs")
    parser.add_argument("--address", default=None, help="attach to a Ray cluster (e.g. auto)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny data and budget (3 picks); trains its own super-net"
    )
    return parser


def check_flags(args: argparse.Namespace) -> None:
    """The flags alone, before any file is read (the smoke budget replaces the given counts once they
    were checked)."""
    check_counts(
        args,
        {"pool": 3, "m": 3 if args.smoke else MIN_M, "standalone_seeds": 1, "pool_seed": 0, "epochs": 1,
         "search_images": 1, "scorers": 1, "train_workers": 1},
    )  # fmt: skip
    if args.smoke:
        args.pool, args.m, args.epochs = min(args.pool, 6), min(args.m, 3), 1
        args.standalone_seeds = min(args.standalone_seeds, 2)
        return
    if not args.checkpoint:
        raise ConfigError(
            "--checkpoint is required (or --smoke); pass the checkpoint_* folder of a super-net run, "
            "e.g. runs/opanas_ea/supernet/checkpoint_..."
        )
    if args.pool_seed == V1_POOL_SEED:
        raise ConfigError(
            f"--pool-seed {V1_POOL_SEED} draws v1's pool, the architectures the earlier analysis was tuned "
            f"on; give a fresh seed (default {DEFAULT_POOL_SEED})"
        )
    if args.m > args.pool:
        raise ConfigError(f"--m {args.m} exceeds --pool {args.pool}: pick at most as many as are scored")


def check(args: argparse.Namespace) -> RankSettings:
    """Every flag and every file the run reads back checked before Ray starts."""
    from raynas.config import check_writable_folder
    from raynas.search.pool import supernet_config

    check_flags(args)
    check_writable_folder(args.out, "--out")
    key = None
    if args.checkpoint:  # a super-net's, before Ray starts
        supernet = supernet_config(load_state(args.checkpoint), args.checkpoint)
        epochs = supernet.optim.epochs if args.epochs is None else args.epochs
        key = {"epochs": epochs, "supernet_checkpoint": str(Path(args.checkpoint).resolve())}
    kept_pool(Path(args.out) / "pool.csv")
    kept_seed_rows(Path(args.out) / SEEDS_FILE, key)
    return RankSettings(
        Path(args.out), args.checkpoint, args.pool, args.pool_seed, args.m, args.standalone_seeds,
        args.epochs, args.search_images, args.scorers, args.train_workers, args.gpu, args.address, args.smoke,
    )  # fmt: skip


def report(args: argparse.Namespace, settings: RankSettings) -> None:
    record = run(settings)
    print("\n" + (Path(args.out) / "rank_correlation.md").read_text())
    print(
        f"{record['runs']} standalone runs ({record['runs_trained_now']} trained now) in "
        f"{record['wall_time_s']:.0f} s; results: {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_experiment("rank_correlation", build_parser(), argv, check, report)


if __name__ == "__main__":
    sys.exit(main())
