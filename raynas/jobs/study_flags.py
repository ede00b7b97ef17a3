"""What a study of the main job's super-nets takes from the command line: the data flags (``--proxy``,
``--data``) the main job's script has too, and the :class:`~raynas.jobs.main_job.MainJob` they and the
study's other flags describe (``supernet_variants.py``, ``compare_strategies.py``, ``opanas_ea.py``)."""

from __future__ import annotations

import argparse

from raynas.jobs.main_job import BUDGETS, MainJob
from raynas.jobs.proxies import PROXIES, default_data


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """``--proxy`` and ``--data``: the embedded data the main job (or a study of its super-nets) runs on."""
    parser.add_argument(
        "--proxy",
        default="digits",
        choices=PROXIES,
        help="embedded data: digits (one pyramid level in use) or scenes (every level; docs/proxy.md)",
    )
    parser.add_argument(
        "--data", default=None, help="dataset root (default data/<proxy>; data/<proxy>_smoke with --smoke)"
    )
    parser.add_argument(
        "--budget",
        default="default",
        choices=BUDGETS,
        help="the super-net's budget on scenes: default (15 minutes on 2 cores; learns next to nothing) or "
        "evidence (the calibration's recipe: its body, every training image, 8 epochs; about 30 minutes on "
        "2 cores; what the OPANAS evidence on scenes stands on)",
    )


def study_job(args: argparse.Namespace, out: str) -> MainJob:
    """The main job whose super-nets a study shares or varies, from the study's flags (``--proxy``,
    ``--data``, ``--smoke``, ``--gpu``, ``--address``, ``--train-workers``), its folder ``out``."""
    return MainJob(
        data=args.data or default_data(args.smoke, args.proxy),
        proxy=args.proxy,
        budget=args.budget,
        out=out,
        smoke=args.smoke,
        gpu=args.gpu,
        address=args.address,
        train_workers=args.train_workers,
        out_given=True,
        train_workers_given=True,
    )
