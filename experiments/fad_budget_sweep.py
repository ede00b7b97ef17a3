"""FAD's budget sweep: the searched head's AP against the search's width c' and length, and the default
head's AP after every retraining epoch, so that the evidence recipe is chosen from measurements (issue 28).

    python experiments/fad_budget_sweep.py --proxy scenes                 # c' 24/48/96 x 2/6 search epochs
    python experiments/fad_budget_sweep.py --proxy scenes --c-primes 24 96 --search-lengths 4
    python experiments/fad_budget_sweep.py --proxy scenes --c-primes 24 --search-warmups 6 --search-lengths 2
    python experiments/fad_budget_sweep.py --smoke                        # tiny (CI)

Each grid point runs first-order DARTS (``raynas.training.darts``) at its c' for its number of epochs, after
its number of weights-only warm-up epochs (``--search-warmups``, default 0: DARTS's reference), and
retrains the derived head once (seed 0) with the evidence's recipe (``--epochs``, ``--train-images``,
``--cells-per-group``, ``--kind``); torchvision's head is retrained at ``--seeds`` seeds with the same
recipe. Every retraining is scored on the test split where the data have one (val on digits) and
evaluated on val after every epoch (its curve). Outputs in ``--out``: ``budget_sweep.csv`` (one row per
run: test AP, head parameters and FLOPs, search time and memory), ``budget_curve.csv`` (val AP per run
and epoch), ``budget_sweep.md`` (the grid, and whether the default head's AP has stopped rising over the
last epoch by more than its seed std), ``budget_sweep.png`` (the curves), ``budget_sweep.json`` and
``genotypes/``. Resumable, also from the table alone: a row of ``budget_sweep.csv`` in ``--out`` (same
recipe) is not run again, and a search that finished before a stop is kept (its genotype in ``genotypes/``,
its cost in the record's ``searches``), so only its retraining runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raynas.config import ConfigError
from raynas.errors import OneLineParser
from raynas.jobs.entry import run_experiment
from raynas.jobs.fad import (
    BEFORE_FLAGS,
    FAD_COUNTS,
    add_fad_flags,
    fad_base_config,
    fad_search_config,
    fad_settings,
    with_fad_presets,
)
from raynas.jobs.fad_budget import NAME, RECIPE, SweepSettings, check_kept_searches, read_kept, run
from raynas.studies.flags import check_counts
from raynas.studies.tables import previous_record
from raynas.training.config import TrainConfig

#: what --smoke fills in: one width, two search lengths, two seeds of the default head over two epochs (so
#: that the schedule check has a last epoch and a seed std to compare); c' = 12, not 8: GroupNorm's groups of
#: one channel fail on the 1x1 P7 of a 128 px smoke image when the head's FLOPs are counted on one image
SMOKE = {"seeds": 2, "epochs": 2, "c_primes": [12], "search_lengths": [1, 2]}
WIDTHS, SEARCH_LENGTHS = [24, 48, 96], [2, 6]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/fad_budget_sweep", help="where runs, tables and plots go")
    add_fad_flags(parser, one_search=False)
    parser.add_argument("--kind", default="fcos", choices=["fcos", "retinanet"])
    parser.add_argument(
        "--c-primes", type=int, nargs="+", default=None, help=f"block widths (default {WIDTHS})"
    )
    parser.add_argument(
        "--search-warmups",
        type=int,
        nargs="+",
        default=[0],
        help="weights-only epochs before each search's alphas move (default [0]: none)",
    )
    parser.add_argument(
        "--search-lengths",
        type=int,
        nargs="+",
        default=None,
        help=f"search epochs (default {SEARCH_LENGTHS})",
    )
    return parser


def with_presets(args: argparse.Namespace) -> argparse.Namespace:
    """The grid's defaults (``--smoke``'s own), then ``--smoke`` / ``--paper`` fill in the other flags not
    given (a given flag wins): ``--paper`` sets the seeds and the retraining epochs, not the grid."""
    if args.c_primes is None:
        args.c_primes = SMOKE["c_primes"] if args.smoke else WIDTHS
    if args.search_lengths is None:
        args.search_lengths = SMOKE["search_lengths"] if args.smoke else SEARCH_LENGTHS
    args.c_prime, args.search_epochs = max(args.c_primes), max(args.search_lengths)  # each point sets its own
    return with_fad_presets(args, SMOKE)


def check(args: argparse.Namespace) -> tuple[SweepSettings, TrainConfig, dict]:
    """Every flag and the sweep already in ``--out`` checked here, before Ray starts."""
    from raynas.config import check_writable_folder

    for flag, values, least in (
        ("--c-primes", args.c_primes, 1),
        ("--search-lengths", args.search_lengths, 1),
        ("--search-warmups", args.search_warmups, 0),
    ):
        if values is not None and (min(values) < least or len(set(values)) < len(values)):
            raise ConfigError(f"{flag} takes distinct counts >= {least}, got {values}")
    with_presets(args)
    check_counts(args, dict.fromkeys(set(FAD_COUNTS) - {"c_prime", "search_epochs"}, 1))
    check_writable_folder(args.out, "--out")
    settings = SweepSettings(
        fad_settings(args), tuple(args.c_primes), tuple(args.search_lengths), tuple(args.search_warmups)
    )
    base = fad_base_config(settings.fad, settings.fad.kind)
    fad_search_config(base, settings.fad, "check")  # its own checks, before Ray
    out = Path(settings.fad.out)
    before = previous_record(settings.fad, out, NAME, RECIPE, BEFORE_FLAGS)
    if (out / f"{NAME}.csv").is_file() and not before:
        raise ConfigError(
            f"{out / f'{NAME}.csv'} has no record {NAME}.json beside it; copy it too, or choose another --out"
        )
    check_kept_searches(before, out)
    try:
        read_kept(out)
    except (ValueError, KeyError) as err:
        raise ConfigError(
            f"{out}: the kept sweep cannot be read ({err}); restore it, or choose another --out"
        ) from err
    return settings, base, before


def main(argv: list[str] | None = None) -> int:
    return run_experiment(
        "fad_budget_sweep", build_parser(), argv, check, lambda args, checked: run(*checked)
    )


if __name__ == "__main__":
    sys.exit(main())
