"""Evidence for OPANAS on the proxy: the searched neck against the FPN, random, single-path and
cost-matched necks.

    python experiments/opanas_evidence.py --search-dir runs/opanas_ea          # after the main job
    python experiments/opanas_evidence.py --search-dir runs/opanas_ea --kind retinanet
    python experiments/opanas_evidence.py --smoke                               # tiny, for CI

The paper's Tables 2, 4 and 6 on the main job's proxy (the committed table, v1, is on the digits proxy
and predates the cost-matched arms). Every arm is trained standalone from the same pretrained body with one
recipe (the super-net's data and model, ``--epochs`` epochs, decay in the last one), on Ray Train, once per
seed (``--seeds``, default 3), and evaluated on the test split (never used for choices) where the data
have one, else on val (the digits proxy); the ``split`` column says which, ``val_AP`` is kept beside it:

- ``FPN``: torchvision's FPN at the super-net's width (the hand-made baseline);
- ``OPA-FPN (evolution)`` / ``OPA-FPN (random search)``: the best architectures the main job's two
  strategies found with the same number of super-net evaluations;
- ``OPA-FPN (evolution, FLOPs <= FPN)``: evolution on the same super-net with the main job's search
  settings and a neck-FLOPs limit equal to the FPN's, the search's own constraint (``max_neck_flops``; the
  FPN counted as a candidate is, by ``raynas.search.neck_cost`` on the super-net's detector, width and
  image size), searched into ``--out/search_flops_matched``;
- ``OPA-FPN (NSGA-II, nearest FPN FLOPs)``: the member of the NSGA-II front (the "pareto" strategy: AP up,
  neck FLOPs down) whose neck FLOPs are nearest the FPN's, from the main job's pareto search when it ran
  one, else from one with the main job's settings and no limit in ``--out/search_pareto``. A finished
  search is reused, an interrupted one continued; ``--no-cost-matched`` leaves both arms out;
- ``random arch k``: ``--random-archs`` architectures drawn uniformly and trained fully (Table 6's
  random baseline; reported each and as their mean and best);
- ``all <path>``: every edge the same parameterised path (Table 4's single-path FPNs);
- ``OPA-FPN (evolution) @c``: the evolved neck at the width whose neck + head parameters are nearest the
  FPN's (within 5 % where the detector's head allows such a width), when that width differs.

Identical networks are trained once: arms whose necks are one network (the same canonical architecture,
``OPANASSpace.canonical``, which drops the edges of dead nodes that never run; same options and width) are
one row labelled with every name, ``a = b``; torchvision's FPN is its own. ``evidence.md`` lists them.

Outputs in ``--out``: ``evidence.csv`` (one row per arm and seed), ``evidence.md`` (mean +/- std, the
difference to the FPN with its 95 % interval, Welch's and Holm's p), ``evidence.png`` (AP with error
bars; AP vs FLOPs). Resumable: each finished run is skipped on re-run, an interrupted one continues.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raynas.config import ConfigError
from raynas.errors import OneLineParser
from raynas.jobs.entry import run_experiment
from raynas.jobs.main_job import KINDS
from raynas.jobs.neck_evidence import EvidenceSettings, Inputs, run, search_inputs
from raynas.studies.flags import check_counts


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search-dir", help="the main job's --out (holds supernet/ and search/)")
    parser.add_argument("--out", default="runs/opanas_evidence", help="where runs and tables go")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm")
    parser.add_argument("--random-archs", type=int, default=3, help="random architectures trained fully")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the one recipe (decay in the last)")
    parser.add_argument("--kind", default=None, choices=KINDS, help="detector (default: the super-net's)")
    parser.add_argument("--no-single-path", action="store_true", help="leave out the single-path necks")
    parser.add_argument(
        "--no-cost-matched", action="store_true", help="leave out the arms searched at the FPN's FLOPs"
    )
    parser.add_argument("--train-workers", type=int, default=2, help="Ray Train workers per run")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--address", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny: runs the main job's smoke first (CI)")
    return parser


def settings_of(args: argparse.Namespace) -> EvidenceSettings:
    """The flags as :class:`EvidenceSettings`; ``--smoke`` gives way to the smoke budget."""
    if args.smoke:  # the given values were checked, and give way to the smoke budget
        return EvidenceSettings(Path(args.out), seeds=1, random_archs=0, epochs=1, single_path=False,
                                train_workers=1, gpu=args.gpu, address=args.address, smoke=True)  # fmt: skip
    return EvidenceSettings(
        Path(args.out), args.seeds, args.random_archs, args.epochs, args.kind, not args.no_single_path,
        not args.no_cost_matched, args.train_workers, args.gpu, args.address,
    )  # fmt: skip


def check(args: argparse.Namespace) -> tuple[EvidenceSettings, Inputs | None]:
    """Every flag and every file the run reads checked here, before Ray starts; the main job's search
    read back (None with ``--smoke``, which searches its own)."""
    from raynas.config import check_writable_folder

    check_counts(args, {"seeds": 1, "random_archs": 0, "epochs": 1, "train_workers": 1})
    if not args.smoke and not args.search_dir:
        raise ConfigError("--search-dir is required (the main job's --out, e.g. runs/opanas_ea), or --smoke")
    check_writable_folder(args.out, "--out")
    settings = settings_of(args)
    return settings, search_inputs(Path(args.search_dir), settings) if args.search_dir else None


def report(args: argparse.Namespace, checked: tuple[EvidenceSettings, Inputs | None]) -> None:
    record = run(*checked)
    print(
        f"{record['runs']} runs ({record['runs_started']} trained now) in {record['wall_time_s']:.0f} s; "
        f"results: {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_experiment("opanas_evidence", build_parser(), argv, check, report)


if __name__ == "__main__":
    sys.exit(main())
