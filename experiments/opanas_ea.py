"""The main job: OPANAS end to end on Ray (data -> body -> super-net -> EA vs random search -> table).

    python experiments/opanas_ea.py                  # default budget: a 2-core CPU, about 15 minutes
    python experiments/opanas_ea.py --smoke          # seconds-scale run used by CI
    python experiments/opanas_ea.py --paper          # the paper's search settings (N_S 50, T 12, k 10, p 0.1)
    python experiments/opanas_ea.py --address auto   # on a cluster started with `ray up cluster.yaml`
    python experiments/opanas_ea.py --proxy scenes   # the scenes proxy: frozen body, cached features

Steps: generate the embedded data (digits, or scenes with ``--proxy scenes``) and pretrain the detector body
on crops of it if absent (the papers' ImageNet pretraining, made locally; on scenes the body is then frozen
and its outputs cached, so the neck and head train on them); train the super-net on Ray Train (K=4 strict
fair sampling, gamma with an L1 term); train the FPN detector standalone with the same data and epochs (the
reference the sub-nets are measured against); search the super-net with the evolutionary searcher and with
random search under the same evaluation budget on Ray Tune, scoring every candidate inference-only on the
search split (training images held out of every training run) with scorer actors that share the super-net
weights; print the comparison and the ratio of a random sub-net's AP to the standalone FPN's. ``--retrain``
then trains the best evolved architecture standalone with the same recipe and prints it next to the FPN on
val. Re-running resumes: finished training runs are skipped.
"""

from __future__ import annotations

import argparse
import sys

from raynas.errors import OneLineParser
from raynas.jobs.entry import run_experiment
from raynas.jobs.main_job import KINDS, CheckedConfigs, MainJob, check_main_job, run_main_job
from raynas.jobs.proxies import default_data
from raynas.jobs.study_flags import add_data_flags


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_flags(parser)
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


def job_from_args(argv: list[str] | None) -> MainJob:
    """The command line as a :class:`MainJob`."""
    return job_of(build_parser().parse_args(argv))


def job_of(args: argparse.Namespace) -> MainJob:
    """The flags as a :class:`MainJob`; the defaults that depend on ``--smoke`` filled in."""
    return MainJob(
        data=args.data or default_data(args.smoke, args.proxy),
        proxy=args.proxy,
        budget=args.budget,
        out=args.out or "runs/opanas_ea",
        kind=args.kind,
        train_workers=2 if args.train_workers is None else args.train_workers,
        scorers=args.scorers,
        gpu=args.gpu,
        address=args.address,
        paper=args.paper,
        smoke=args.smoke,
        retrain=args.retrain,
        reference=not args.no_reference,
        supernet_checkpoint=args.supernet_checkpoint,
        supernet_config=args.supernet_config,
        search_config=args.search_config,
        resume=args.resume,
        verbose=args.verbose,
        out_given=args.out is not None,
        train_workers_given=args.train_workers is not None,
    )


def check(args: argparse.Namespace) -> tuple[MainJob, CheckedConfigs]:
    """The job and its configs, every flag and file checked before Ray starts."""
    job = job_of(args)
    return job, check_main_job(job)


def main(argv: list[str] | None = None) -> int:
    return run_experiment("opanas_ea", build_parser(), argv, check, lambda _, checked: run_main_job(*checked))


if __name__ == "__main__":
    sys.exit(main())
