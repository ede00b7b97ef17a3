"""Does the scenes proxy make the neck matter? Standalone necks, seeds, and the context rules switched off.

    python experiments/proxy_calibration.py                  # the calibration (hours on 2 CPU cores)
    python experiments/proxy_calibration.py --smoke          # seconds-scale, every part (CI)
    python experiments/proxy_calibration.py --shard 0/2 &   # two processes side by side (one core each),
    python experiments/proxy_calibration.py --shard 1/2     # then --gather: the tables of every finished run

Before any search result on a proxy is believed, the proxy must separate necks, and repeatably (issue 26;
docs/proxy.md). Every run trains FCOS-ResNet18 standalone with one recipe
(``configs/scenes_calibration.yaml``: the frozen, scenes-pretrained body's cached features, the proxy's
anchor sizes) and is scored on the **test** split:

- ``named``: torchvision's FPN, lateral-only (the laterals, no cross-level path: ``e0_1: skip``),
  OPANAS's own top-down path (``e0_1: top_down``: it tells torchvision's FPN code apart from the path), a
  PANet-like neck (top-down then bottom-up: ``e0_1: top_down, e1_2: bottom_up``), all-skip, and
  torchvision's FPN with GroupNorm after its convs (``{"type": "fpn", "norm": "gn"}``, as the OPANAS paths
  have it); ``--seeds`` each (3);
- ``random``: ``--random-necks`` OPANAS necks drawn uniformly (distinct networks), ``--random-seeds``
  each (2);
- ``control``: FPN and lateral-only on the same images with both context rules off (labels by local cues).

A seed seeds the initialisation and the data order. Outputs in ``--out``: ``calibration.csv`` (one row per
run), ``calibration.md`` (the table, the goals of issue 26 with their measured values), ``calibration.json``,
``calibration.png``. Resumable: a finished run is not trained or scored again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raynas.config import ConfigError
from raynas.data.scene_layout import DEFAULT_LAYOUT, LAYOUTS
from raynas.errors import OneLineParser
from raynas.jobs.calibration import NAMED_SLUGS, CalibrationSettings, recipe, run
from raynas.jobs.entry import run_experiment
from raynas.jobs.shards import read_kept_rows, shard_of
from raynas.training.config import TrainConfig

RECIPE = Path(__file__).parent / "configs" / "scenes_calibration.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/scenes", help="the scenes data root (generated if absent)")
    parser.add_argument(
        "--out", default=None, help="where runs and tables go (default runs/proxy_calibration[_BODY])"
    )
    parser.add_argument(
        "--body",
        default="context",
        choices=["glyphs", "context"],
        help="the frozen body: pretrained on glyph crops, or also on the dense context task (docs/proxy.md)",
    )
    parser.add_argument(
        "--layout",
        default=DEFAULT_LAYOUT,
        choices=list(LAYOUTS),
        help="the scenes layout (raynas.data.scene_layout.LAYOUTS; docs/proxy.md says what each measured)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per named and control neck")
    parser.add_argument("--random-necks", type=int, default=16, help="random OPANAS necks")
    parser.add_argument("--random-seeds", type=int, default=2, help="seeds per random neck")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipe's)")
    parser.add_argument("--groups", default="named,random,control", help="which groups of runs, in order")
    parser.add_argument(
        "--named",
        default=None,
        help=f"only these named necks, comma-separated (default all: {','.join(NAMED_SLUGS)})",
    )
    parser.add_argument("--train-workers", type=int, default=1, help="Ray Train workers per run")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--address", default=None)
    parser.add_argument(
        "--shard",
        default=None,
        help="I/N: only runs I, I+N, ... of the plan's runs that --kept-rows do not cover, tables in "
        "OUT/shard-I-of-N (N processes side by side; --gather then makes the tables of them all)",
    )
    parser.add_argument(
        "--gather",
        action="store_true",
        help="tables from the finished runs only (nothing trains; the plan's other runs are listed)",
    )
    parser.add_argument(
        "--kept-rows",
        default=None,
        help="a calibration.csv of runs finished elsewhere (e.g. committed from another machine): a planned "
        "run whose row is there, with the same recipe and body (its recipe and body columns), is not trained "
        "again and its row joins the tables",
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-scale: tiny data, one epoch (CI)")
    return parser


def check_args(args: argparse.Namespace) -> list[str]:
    """Every flag, before Ray starts; returns the groups asked for."""
    for name, least in (("seeds", 1), ("random_necks", 0), ("random_seeds", 1), ("train_workers", 1)):
        if getattr(args, name) < least:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be >= {least}, got {getattr(args, name)}")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    unknown = sorted(set((args.named or "fpn").split(",")) - set(NAMED_SLUGS))
    if unknown:
        raise ConfigError(f"--named: unknown neck(s) {unknown}; choose from {','.join(NAMED_SLUGS)}")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = sorted(set(groups) - {"named", "random", "control"})
    if unknown or not groups:
        raise ConfigError(
            f"--groups takes named, random and/or control (comma-separated), got {args.groups!r}"
        )
    if args.shard is not None:
        shard_of(args.shard)
        if args.gather:
            raise ConfigError("--gather reads every shard's finished runs; drop --shard (or --gather)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder")
    if args.kept_rows is not None:
        read_kept_rows(args.kept_rows)
    return groups


def settings_of(args: argparse.Namespace, groups: list[str]) -> CalibrationSettings:
    """The checked flags as :class:`CalibrationSettings`."""
    return CalibrationSettings(
        recipe_file=RECIPE, data=args.data, out=args.out, groups=tuple(groups), body=args.body,
        layout=args.layout, seeds=args.seeds, random_necks=args.random_necks, random_seeds=args.random_seeds,
        epochs=args.epochs, named=args.named, train_workers=args.train_workers, gpu=args.gpu,
        address=args.address, shard=args.shard, gather=args.gather, kept_rows=args.kept_rows,
        smoke=args.smoke,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return run_experiment("proxy_calibration", build_parser(), argv, check, report)


def check(args: argparse.Namespace) -> tuple[CalibrationSettings, TrainConfig]:
    """The flags (the smoke budget and the default folders filled in), the groups and the recipe, checked
    before Ray starts."""
    if args.smoke:
        args.random_necks, args.random_seeds, args.seeds = min(args.random_necks, 1), 1, 1
        if args.out is None:
            args.out = "runs/proxy_calibration_smoke"
        if args.data == "data/scenes":
            args.data = "data/scenes_smoke"
    if args.out is None:  # each body its own runs: a finished run of one is no result for the other
        args.out = "runs/proxy_calibration" + ("" if args.body == "glyphs" else f"_{args.body}")
    settings = settings_of(args, check_args(args))
    return settings, recipe(settings)


def report(args: argparse.Namespace, checked: tuple[CalibrationSettings, TrainConfig]) -> None:
    record = run(*checked)
    shard = "" if args.shard is None else "shard-{}-of-{}".format(*shard_of(args.shard))
    table = Path(args.out) / shard / "calibration.md"
    if record["runs"]:
        print(table.read_text())
    print(
        f"{record['runs']} runs ({record['runs_trained_now']} trained now) in {record['wall_time_s']:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
