"""Evidence for FAD on the proxy: searched heads vs torchvision's head, random heads and the ablations.

    python experiments/fad_evidence.py                    # FCOS, default budget for a 2-core CPU
    python experiments/fad_evidence.py --kind retinanet   # Table 3's second detector
    python experiments/fad_evidence.py --smoke            # tiny (CI)
    python experiments/fad_evidence.py --paper            # the paper's settings (VOC on GPUs; see below)
    python experiments/fad_evidence.py --arms fad_full --seeds 1   # one search (and a random head) vs default
    python experiments/fad_evidence.py --proxy scenes     # scenes (issue 28): 16 epochs, c' = 24, warm-up 6
    python experiments/fad_evidence.py --proxy scenes --shard 0/2 &   # two processes side by side (one
    python experiments/fad_evidence.py --proxy scenes --shard 1/2     # core each), then --gather: the table

FAD's Table 2 (and Table 3's searched-vs-default columns) on a proxy: digits (the committed tables; one
pyramid level in use) or scenes (``--proxy scenes``: every level used; the calibration's body frozen, its
outputs cached, so the search and every retraining run train the head alone, and the test split scored;
docs/proxy.md). Every searched arm runs
first-order DARTS (``raynas.training.darts``) on the training split from the pretrained proxy body, then
its derived head is retrained; every retrained arm uses one recipe (``--epochs``, decay in the last) and
``--seeds`` seeds (``raynas.jobs.arms.train_head_arms``), and is scored on the test split where the data
have one (the scenes proxy), else on val (digits); the ``split`` column says which:

- ``<detector> head``: torchvision's head (the hand-made baseline);
- ``FAD searched``: the full space (12 transformations + none, RepShare, decoupling H);
- ``FAD searched @c'=N``: the same genotype retrained at the block width whose head has about the
  parameters of torchvision's head (so a loss is not just a smaller head; ``--no-matched-width`` drops it;
  none where that width is ``--c-prime``: the searched head is then that arm);
- ``FAD random``: the paper's random baseline (a random transformation per edge, two random incoming
  edges per node), ``--random-genotypes`` genotypes (default 3), each at every seed: its row pools them,
  and the line under the table gives the spread between genotypes apart from the spread between seeds;
- the ablations, each searched and then retrained: ``no RepShare``, ``no decoupling``, ``std only``,
  ``sep only``, ``RF <= 5`` and ``RF <= 7`` (Table 2's subsets), ``DARTS ops`` (Table 2's seven, with
  an RF-7 op) and ``DARTS primitives`` (the seven DARTS searches, skip included).

Search cost per searched arm: wall seconds and peak memory (CUDA allocated on a GPU, else the worker's
resident size), Table 2's columns. Outputs in ``--out``: ``fad_evidence.csv`` (one row per arm and
seed), ``fad_evidence.md`` (mean +/- std, the difference to the default head with its 95 % interval, Welch's
and Holm's p, head parameters and FLOPs, search time and memory), ``fad_evidence.png`` and
``genotypes/<arm>.json`` / ``.png``. Resumable: finished searches and runs are skipped, also from the
table alone: a genotype in ``--out/genotypes`` is not searched again and a row of ``--out/fad_evidence.csv``
with the same arm, seed and head is not retrained, so a committed table is extended by copying it into
``--out`` (``cp -r experiments/results/fad_evidence runs/``) and running the arms it lacks (the committed
digits table retrained one cell per group: add ``--cells-per-group 1``).

Shards (``--shard I/N``, :mod:`raynas.jobs.head_shards`): the searches ``--out`` lacks are dealt every
N-th from the I-th, each shard trains its own searches' runs and every N-th of the other runs ``--out``'s
table lacks, in ``--out/shard-I-of-N`` (run folders stay in ``--out/runs``); ``--gather`` takes every
shard's rows, genotypes and search costs into ``--out``'s table, training nothing. Prepare the data first
(or start one shard first): shards side by side would both make it.

Every derived head is retrained with ``--cells-per-group`` cells per group (default 2, the depth at which
the heads have Table 3's parameters; the search has one, Sec. 3.1).
``--paper`` sets the paper's head width (c' = 96) and 12-epoch search and retraining schedules (meant for
``--gpu``); the data stay the proxy's. The paper's VOC setting is ``raynas search fad --config
experiments/configs/fad_paper.yaml`` (the user's VOC copy; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError
from raynas.errors import OneLineParser
from raynas.jobs.entry import run_experiment
from raynas.jobs.fad import (
    BEFORE_FLAGS,
    FAD_COUNTS,
    FADSettings,
    add_fad_flags,
    check_cells_per_group,
    fad_base_config,
    fad_search_config,
    fad_settings,
    with_fad_presets,
)
from raynas.jobs.head_evidence import (
    METRICS,
    RECIPE,
    SEARCHED,
    check_kept_genotypes,
    recorded_costs,
    run,
)
from raynas.jobs.head_shards import gather, table_folder
from raynas.jobs.shards import shard_of
from raynas.registry import ONE_STAGE
from raynas.studies.flags import check_counts
from raynas.studies.tables import previous_record, previous_rows
from raynas.training.config import TrainConfig

SMOKE = {"seeds": 1, "search_epochs": 1, "epochs": 1, "c_prime": 12}  # what --smoke fills in
#: retraining epochs on the scenes proxy, from the budget sweep (experiments/results/fad_budget_sweep): 8
#: left torchvision's head 3.8 AP short of 16, whose full-rate curve is flat over its last four epochs
SCENES_EPOCHS = 16
#: weights-only epochs before a scenes search's alphas move, from the same sweep: at 2 search epochs
#: without one the relaxed network's own val AP was 0.5 % and its head retrained to 24.3 AP (test); after
#: 6 it was 12.0 % and its head 25.3 (val 24.4 vs 22.6 at the last epoch); one search each
SCENES_SEARCH_WARMUP = 6


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/fad_evidence", help="where runs, tables and plots go")
    add_fad_flags(parser, scenes_epochs=SCENES_EPOCHS, scenes_warmup=SCENES_SEARCH_WARMUP)
    parser.add_argument("--kind", default="fcos", choices=list(ONE_STAGE))
    parser.add_argument(
        "--arms",
        nargs="+",
        default=None,
        help=f"searched arms to run (default all): {[s for _, s, _ in SEARCHED]}",
    )
    parser.add_argument(
        "--random-genotypes",
        type=int,
        default=None,
        help="FAD random's genotypes, each trained at every seed (default 3; 1 with --smoke)",
    )
    parser.add_argument(
        "--no-matched-width",
        dest="matched_width",
        action="store_false",
        help="leave out the searched head retrained at the width that matches the default head's params",
    )
    parser.add_argument(
        "--shard",
        default=None,
        help="I/N: this process's part of the table, beside N-1 others (one core each), written to "
        "OUT/shard-I-of-N; then --gather",
    )
    parser.add_argument(
        "--gather",
        action="store_true",
        help="take every shard's rows, genotypes and search costs into OUT's table (trains nothing)",
    )
    return parser


def check(args: argparse.Namespace) -> tuple[FADSettings, TrainConfig, dict, pd.DataFrame]:
    """Every flag and every file the run reads back checked here, before Ray starts: the recipe, the
    record and the rows kept from an earlier run."""
    from raynas.config import check_writable_folder

    with_presets(args)
    known = [s for _, s, _ in SEARCHED]
    if args.arms and set(args.arms) - set(known):
        raise ConfigError(f"--arms {sorted(set(args.arms) - set(known))} unknown; choose from {known}")
    check_counts(args, {**dict.fromkeys((*FAD_COUNTS, "random_genotypes"), 1), "search_warmup": 0})
    if args.shard is not None:
        shard_of(args.shard)
        if args.gather:
            raise ConfigError("--gather takes in every shard's rows; drop --shard (or --gather)")
    check_writable_folder(args.out, "--out")
    settings = fad_settings(args)
    base = fad_base_config(settings, settings.kind)
    fad_search_config(base, settings, "check")  # its own checks, before Ray
    folders = [Path(settings.out)] + ([table_folder(settings)] if settings.shard is not None else [])
    for out in folders:  # --out, and a shard's own folder: what this call reads back
        before = previous_record(settings, out, "fad_evidence", RECIPE, BEFORE_FLAGS)
        check_kept_genotypes(settings, out, recorded_costs(before, out))
        kept_rows = previous_rows(out, "fad_evidence", before, METRICS)
        check_cells_per_group(before, settings, out)
    return settings, base, before, kept_rows


def main(argv: list[str] | None = None) -> int:
    def run_or_gather(args: argparse.Namespace, checked: tuple) -> dict:
        return gather(*checked) if args.gather else run(*checked)

    return run_experiment(
        "fad_evidence", build_parser(), argv, check, run_or_gather, uses_ray=lambda args: not args.gather
    )


def with_presets(args: argparse.Namespace) -> argparse.Namespace:
    """``--smoke`` / ``--paper`` fill in the flags not given (a given flag wins); on scenes the retraining
    schedule is the budget sweep's."""
    if args.proxy == "scenes" and not (args.smoke or args.paper):
        if args.epochs is None:
            args.epochs = SCENES_EPOCHS
        if args.search_warmup is None:
            args.search_warmup = SCENES_SEARCH_WARMUP
    with_fad_presets(args, SMOKE)
    if args.smoke:
        args.arms = args.arms or ["fad_full"]
        args.matched_width = False
    if args.random_genotypes is None:
        args.random_genotypes = 1 if args.smoke else 3
    return args


if __name__ == "__main__":
    sys.exit(main())
