"""Do the random necks' goals hold on a larger test split? (issue 26; no training)

    python experiments/proxy_test_split.py                  # the calibration's runs, 1000 test images
    python experiments/proxy_test_split.py --runs RUNS --shard 0/2 &   # two side by side, one core each
    python experiments/proxy_test_split.py --runs RUNS --shard 1/2

The calibration (``proxy_calibration.py``) scores each run on 200 test images, which carry about as much
measurement noise as a second seed would. This generates the same scenes with ``--test-images`` test images
in ``--out/data`` (images are seeded by split and index: the first 200 are the calibration's test split, the
training and val images are the same), scores every finished random-neck run of ``--runs`` on them with
the full detector (nothing is trained), and measures the random necks' two goals (spread between necks
>= 3 x between seeds; seed 0's ranking vs seed 1's, Kendall tau >= 0.6) on both splits. Outputs in
``--out``: ``scores/<run>.json`` (one per scored run: a re-run skips it), ``test_split.csv`` / ``.md`` /
``.json``. Code: ``raynas/jobs/test_split_probe.py``.
"""

from __future__ import annotations

import argparse
import sys

from raynas.errors import OneLineParser
from raynas.jobs.entry import run_experiment
from raynas.jobs.shards import shard_of
from raynas.jobs.test_split_probe import ProbeSettings, check, run


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs",
        default="runs/proxy_calibration_context/runs",
        help="the calibration's runs folder, random<k>_seed<s>/ inside (default: proxy_calibration.py's)",
    )
    parser.add_argument("--out", default="runs/proxy_test_split", help="where data, scores and tables go")
    parser.add_argument("--test-images", type=int, default=1000, help="test images (> 200; default 1000)")
    parser.add_argument("--shard", default=None, help="I/N: score every N-th run from the I-th")
    return parser


def settings_of(args: argparse.Namespace) -> tuple[ProbeSettings, list]:
    from raynas.config import check_writable_folder

    if args.shard is not None:
        shard_of(args.shard)
    check_writable_folder(args.out, "--out")
    settings = ProbeSettings(args.runs, args.out, args.test_images, args.shard)
    return settings, check(settings)


def main(argv: list[str] | None = None) -> int:
    return run_experiment(
        "proxy_test_split", build_parser(), argv, settings_of, lambda args, checked: run(*checked),
        uses_ray=False,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
