"""Which super-net ranks architectures? OPANAS's Table 5 on the proxy: sampling rule x edge importance.

    python experiments/supernet_variants.py --proxy scenes --budget evidence --archs ARCHS.csv
    python experiments/supernet_variants.py --variants fair_gamma uniform_gamma
    python experiments/supernet_variants.py --smoke --archs ARCHS.csv     # tiny data (CI)

Every variant is the main job's super-net (``experiments/opanas_ea.py``: data, body and schedule of its
``--proxy`` and ``--budget``; on scenes ``--budget evidence`` is the one that learns) with the switches of
``OPANASConfig`` changed:

* ``fair_gamma``: the paper (strict fair sampling, K=4, learned gamma with the L1 term);
* ``fair_nogamma``: fair sampling, no edge importance weights (Table 5, Fig. 4);
* ``uniform_gamma`` / ``uniform_nogamma``: one uniformly drawn sub-net per step (SPOS's rule on the dense
  DAG; Table 5's "w/o fair sampling"). Same number of steps, so a quarter of the sub-net updates;
* ``fair_gamma_all``: fair sampling over all six paths (K=6), so the shared body and head also train on
  sub-nets with ``skip``/``none`` edges. Not in the paper: a hypothesis v1 raised on the digits proxy.

Every super-net scores THE SAME architectures, the set ``rank_correlation.py`` picked and trained
standalone (``--archs``: its ``rank_correlation.csv``; by default the committed one under
``experiments/results/rank_correlation/``, v1 until v2 is committed: give v2's with ``--archs``). With
v2's table (issue 27: a fresh pool, picks stratified by rank, 2 seeds each) ``standalone_AP`` is the mean
over seeds and each seed's AP is a ``standalone_AP_seed<k>`` column; v1's has one seed.

Reported per variant: Kendall tau and Spearman rho between super-net score (search split) and standalone
AP (val), each with a bootstrap 95 % interval over the architectures and, within each, its seeds; and,
since all variants rank the same architectures, the variants are compared PAIRED: its tau minus
``fair_gamma``'s with a paired bootstrap interval (each resample scores both super-nets on the same
architectures and seeds: ``raynas.evaluation.ranking.paired_difference``); also the mean score of the
set and the training time. Resumable: finished super-nets and their scores are reused. Outputs in
``--out``: ``supernet_variants.csv`` / ``.md`` / ``.json`` / ``.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raynas.config import ConfigError
from raynas.errors import OneLineParser
from raynas.jobs.entry import run_experiment
from raynas.jobs.study_flags import add_data_flags, study_job
from raynas.jobs.supernet_scores import VARIANTS, kept_scores, load_archs, variant_config
from raynas.jobs.supernet_variants import VariantSettings, run
from raynas.studies.flags import check_counts

DEFAULT_ARCHS = Path(__file__).resolve().parent / "results" / "rank_correlation" / "rank_correlation.csv"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--archs",
        default=str(DEFAULT_ARCHS),
        help="rank_correlation.csv: architectures (e0_1 .. e4_5), their standalone_AP (v2: the seeds' mean)",
    )
    parser.add_argument("--out", default="runs/supernet_variants", help="where runs and tables go")
    add_data_flags(parser)
    parser.add_argument("--search-images", type=int, default=None, help="cap on search-split images scored")
    parser.add_argument("--scorers", type=int, default=2, help="scorer actors")
    parser.add_argument("--train-workers", type=int, default=2, help="Ray Train workers per super-net")
    parser.add_argument("--gpu", action="store_true", help="train and score on GPUs")
    parser.add_argument("--address", default=None, help="attach to a Ray cluster (e.g. auto)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget (CI)")
    return parser


def check(args: argparse.Namespace) -> VariantSettings:
    """Every flag and every file the run reads checked first, before Ray starts."""
    from raynas.config import check_writable_folder

    check_counts(args, {"search_images": 1, "scorers": 1, "train_workers": 1})
    repeated = sorted({name for name in args.variants if args.variants.count(name) > 1})
    if repeated:
        raise ConfigError(f"--variants names {repeated} more than once; name each variant once")
    check_writable_folder(args.out, "--out")
    if args.proxy != "digits" and Path(args.archs).resolve() == DEFAULT_ARCHS:
        raise ConfigError(
            f"--proxy {args.proxy} with the default --archs, whose standalone APs were measured on the "
            f"digits proxy; pass the rank_correlation.csv of a {args.proxy} run with --archs"
        )
    load_archs(args.archs)  # a bad --archs fails before Ray starts
    job = study_job(args, args.out)
    for name in args.variants:
        variant_config(name, job)
        kept_scores(Path(args.out) / f"scores_{name}.csv")
    return VariantSettings(
        Path(args.out), args.archs, job, tuple(args.variants), args.proxy, args.search_images, args.scorers,
        args.gpu, args.smoke,
    )  # fmt: skip


def report(args: argparse.Namespace, settings: VariantSettings) -> None:
    table = run(settings)
    columns = [
        "variant",
        "kendall_tau",
        "kendall_tau_low",
        "kendall_tau_high",
        "kendall_tau_diff",
        "spearman_rho",
    ]
    print("\n" + table[columns + ["mean_supernet_AP", "epoch_time_s"]].to_string(index=False))
    print(f"results: {args.out}")


def main(argv: list[str] | None = None) -> int:
    return run_experiment("supernet_variants", build_parser(), argv, check, report)


if __name__ == "__main__":
    sys.exit(main())
