"""Compare search strategies: existing result folders, or a full side-by-side run (OPANAS Tables 5/6).

    python experiments/compare_strategies.py runs/opanas_ea/search [more/search/dirs ...] [--out cmp.png]
    python experiments/compare_strategies.py --run                 # ~25 min, super-nets reused
    python experiments/compare_strategies.py --run --retrain       # + 3-seed standalone training of each best
    python experiments/compare_strategies.py --run --smoke         # tiny data (CI)

Folder mode: a result folder is what ``search_opanas`` writes (one sub-folder per strategy with
results.csv); prints the summary table and plots best-so-far curves.

``--run`` mode runs every strategy with the main job's data, pretrained body and 4-epoch budget
(``experiments/opanas_ea.py``):

* ``OPANAS``: fair sampling + gamma super-net, evolutionary search;
* ``random``: random search on the same super-net, same number of evaluations;
* ``Pareto``: NSGA-II evolution on the same super-net (AP max, neck FLOPs min);
* ``SPOS``: uniformly sampled super-net (one sub-net per step), evolutionary search;
* ``OPANAS, all paths trained``: fair sampling over all six paths (K=6; skip/none trained too, our
  deviation, see ``experiments/supernet_variants.py``) + gamma, evolutionary search;
* ``DARTS`` / ``Fair DARTS``: the dense DAG relaxed (softmax / sigmoids + zero-one loss), bilevel on
  Ray Train with the alphas on the search split, derived to one architecture.

One budget: every strategy gets the same training epochs and, for the one-shot ones, the same number
of scored candidates. The wall seconds each one actually spent on this machine are measured and reported
as its search cost (the super-net's training is charged to every strategy that searches it), not
equalised. Per strategy the table gives that cost, the best architecture, its score on the common
yardstick (the OPANAS fair+gamma super-net on the search split), its score under the strategy's own
super-net, and that super-net's Kendall tau on the fixed architectures with measured standalone AP
(``experiments/supernet_variants.py``). DARTS rows say how their architecture was derived, and
"repaired" when no path passed the rule on any input edge (the relaxation may not have converged).

``--retrain`` trains each best architecture and the FPN standalone with the evidence experiment's
recipe, ``--seeds`` seeds each: once per *network* (the canonical form, ``OPANASSpace.canonical``), so
strategies that found the same network share its runs and its row in the tests. Its per-seed rows
(AP, AP50, AP75, APs, APm, APl on val, the neck's params and FLOPs) go to ``strategies_seeds.csv``,
rewritten after every run; the standalone table in ``strategies.md`` is computed from them: mean +/- std,
the difference to the FPN with its 95 % interval, Welch's p and Holm's p over the distinct networks.

Resumable: finished trainings, searches and scorings are reused, and a (network, seed) with a row in
``strategies_seeds.csv`` starts no Train run. Outputs in ``--out``: ``strategies.csv`` / ``.md`` /
``.json`` (``retrain_runs_started``), ``strategies.png`` (best-so-far vs search cost),
``darts_<relaxation>_alphas.json`` (the final softmax / sigmoid weights per edge and candidate, and the
derivation) and, with ``--retrain``, ``strategies_seeds.csv``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError, check_writable_folder
from raynas.errors import OneLineParser
from raynas.jobs.entry import run_experiment
from raynas.jobs.proxies import default_data
from raynas.jobs.strategies import StrategiesSettings, check_run_inputs, load_tables, run
from raynas.jobs.study_flags import add_data_flags
from raynas.jobs.supernet_scores import METRIC
from raynas.search.run import summarize
from raynas.studies.flags import check_counts
from raynas.viz import plot_search_curves

#: the architectures with measured standalone AP the super-nets' Kendall tau is computed on
DEFAULT_ARCHS = Path(__file__).resolve().parent / "results" / "rank_correlation" / "rank_correlation.csv"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directories", nargs="*", help="search result folders to compare (folder mode)")
    parser.add_argument("--metric", default=METRIC)
    parser.add_argument("--run", action="store_true", help="run every strategy side by side")
    parser.add_argument(
        "--out",
        default=None,
        help="folder mode: the PNG (strategies.png); --run: the folder (runs/strategies)",
    )
    parser.add_argument(
        "--supernets", default=None, help="--run: folder of super-net runs to reuse (default: --out)"
    )
    add_data_flags(parser)
    parser.add_argument("--retrain", action="store_true", help="--run: train each best architecture")
    parser.add_argument("--seeds", type=int, default=3, help="--retrain: seeds per architecture")
    parser.add_argument("--epochs", type=int, default=3, help="--retrain: epochs of the one recipe")
    parser.add_argument("--search-images", type=int, default=None, help="cap on search-split images scored")
    parser.add_argument("--scorers", type=int, default=2, help="scorer actors")
    parser.add_argument("--train-workers", type=int, default=2, help="Ray Train workers per run")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--address", default=None)
    parser.add_argument("--smoke", action="store_true", help="--run: tiny data and budget (CI)")
    return parser


#: the flags of one mode only
RUN_ONLY = ("supernets", "data", "retrain", "seeds", "epochs", "search_images", "scorers", "train_workers",
            "gpu", "address", "smoke")  # fmt: skip
FOLDERS_ONLY = ("metric",)


def main(argv: list[str] | None = None) -> int:
    return run_experiment("compare_strategies", build_parser(), argv, check, run_or_compare, lambda a: a.run)


def check(args: argparse.Namespace) -> StrategiesSettings | None:
    """``--run`` or folder mode, after refusing a flag of the other mode (``--retrain`` without ``--run``
    would be ignored without a word); each mode's flags and files checked (before Ray starts)."""
    args.out = args.out or ("runs/strategies" if args.run else "strategies.png")
    parser = build_parser()
    given = [
        name
        for name in (FOLDERS_ONLY if args.run else RUN_ONLY)
        if getattr(args, name) != parser.get_default(name)
    ]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        mode, fix = ("--run", "drop --run") if args.run else ("comparing folders (no --run)", "add --run")
        raise ConfigError(
            f"{mode} does not use {flags}; leave {'it' if len(given) == 1 else 'them'} out, or {fix}"
        )
    if args.run:
        return check_run(args)
    if not args.directories:
        raise ConfigError("give one or more search result folders, or --run to run the strategies")
    if Path(args.out).is_dir():
        raise ConfigError(
            f"--out {args.out!r} is a folder; without --run, --out is the plot to write, e.g. "
            f"{Path(args.out) / 'strategies.png'}"
        )
    check_writable_folder(str(Path(args.out).parent), "--out's folder")
    return None


def check_run(args: argparse.Namespace) -> StrategiesSettings:
    """``--run``'s flags as :class:`StrategiesSettings` (``--smoke`` gives way to the smoke budget), and
    everything the run would find wrong only after super-nets trained."""
    if args.directories:
        raise ConfigError("--run takes no result folders; drop them, or drop --run to compare folders")
    check_counts(args, {"seeds": 1, "epochs": 1, "search_images": 1, "scorers": 1, "train_workers": 1})
    settings = StrategiesSettings(
        out=Path(args.out), data=args.data or default_data(args.smoke, args.proxy), archs=DEFAULT_ARCHS,
        proxy=args.proxy, budget=args.budget, supernets=args.supernets, retrain=args.retrain,
        seeds=args.seeds, epochs=args.epochs, search_images=args.search_images, scorers=args.scorers,
        train_workers=args.train_workers, gpu=args.gpu, address=args.address, smoke=args.smoke,
    )  # fmt: skip
    if args.smoke:  # the given values were checked, and give way to the smoke budget
        settings = replace(settings, seeds=1, epochs=1, train_workers=1)
    check_run_inputs(settings)
    return settings


def run_or_compare(args: argparse.Namespace, settings: StrategiesSettings | None) -> None:
    if settings is not None:
        run(settings)
        print("\n" + (settings.out / "strategies.md").read_text())
    else:
        compare(args)


def compare(args: argparse.Namespace) -> None:
    tables = load_tables(args.directories, args.metric)
    rows = []
    for label, df in tables.items():
        wall = float(df["time_total_s"].sum()) if "time_total_s" in df else float("nan")
        rows.append({"strategy": label, **summarize(df, wall, args.metric)})
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"plot: {plot_search_curves(tables, args.out, args.metric)}")


if __name__ == "__main__":
    sys.exit(main())
