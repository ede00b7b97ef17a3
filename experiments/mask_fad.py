"""FAD for instance segmentation on the proxy: the searched mask head vs torchvision's, in Mask R-CNN.

    python experiments/mask_fad.py            # default budget for a 2-core CPU
    python experiments/mask_fad.py --smoke    # tiny (CI)
    python experiments/mask_fad.py --paper    # the paper's widths and schedules (meant for --gpu)
    python experiments/mask_fad.py --proxy scenes   # the scenes proxy (issue 28; budget not fixed yet)

FAD's Table 5 comparison (fad-repshare.txt Sec. 4.2) on a proxy whose annotations carry instance masks
(digits, the committed table, or scenes: 320 px, the calibration's body frozen; Mask R-CNN runs it, no
cache): first-order DARTS (``raynas.training.darts``, Ray Train) searches the mask head of Mask R-CNN, one
group of FAD cells in place of the four 3x3 convs before the deconvolution; the derived head and
torchvision's mask head are then retrained with one recipe (``--epochs``, decay in the last) and ``--seeds``
seeds, from the pretrained proxy body. Reported per arm: box AP and mask AP (mean +/- std) on the test
split where the data have one, else on val (the ``split`` column), the mask head's parameters and its
FLOPs per RoI (14x14 features). Outputs in ``--out``: ``mask_fad.csv``
(one row per arm and seed), ``mask_fad.md``, ``mask_fad.json`` and the searched ``genotype.json`` /
``.png``. Resumable: a finished search or run is skipped. ``--genotype PATH`` retrains the genotype of an
earlier search (the committed ``experiments/results/mask_fad/genotype.json``) without searching again.

The derived mask head is retrained with ``--cells-per-group`` cells (default 2: the depth at which FAD's
detection heads have Table 3's parameters, and the mask head its Table 5 size: measured 2.66 M vs Mask
R-CNN's 2.36 M at c' = 96, benchmarks/fad_table3_params.py; the search has one cell).
``--paper`` sets c' = 96 and 12-epoch search and retraining schedules; the data stay the proxy's.
"""

from __future__ import annotations

import argparse
import json
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
    fad_head_spec,
    fad_search_config,
    fad_settings,
    with_fad_presets,
)
from raynas.jobs.mask_head_evidence import METRICS, RECIPE, check_same_genotype, run
from raynas.studies.flags import check_counts
from raynas.studies.tables import previous_record, previous_rows, table_fix
from raynas.training.config import TrainConfig

SMOKE = {"seeds": 1, "search_epochs": 1, "epochs": 1, "c_prime": 8}  # what --smoke fills in


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/mask_fad", help="where runs and tables go")
    add_fad_flags(parser)
    parser.add_argument(
        "--genotype",
        default=None,
        help="retrain this genotype.json of an earlier mask-head search instead of searching "
        "(e.g. experiments/results/mask_fad/genotype.json)",
    )
    return parser


def check(args: argparse.Namespace) -> tuple[FADSettings, TrainConfig, dict, pd.DataFrame]:
    """Every flag and every file the run reads back checked here, before Ray starts: the recipe, the
    record and the rows kept from an earlier run."""
    from raynas.config import check_writable_folder

    with_presets(args)
    check_counts(args, {**dict.fromkeys(FAD_COUNTS, 1), "search_warmup": 0})
    check_writable_folder(args.out, "--out")
    settings = fad_settings(args)
    base = fad_base_config(settings, "mask_rcnn")
    fad_search_config(base, settings, "search_mask_head")  # its own checks, before Ray
    out = Path(settings.out)
    before = previous_record(settings, out, "mask_fad", RECIPE, BEFORE_FLAGS)
    if not isinstance(before.get("genotype", {}), dict):
        raise ConfigError(
            f"{out / 'mask_fad.json'}: 'genotype' is not a genotype mapping; {table_fix('mask_fad')}"
        )
    kept_rows = previous_rows(out, "mask_fad", before, METRICS)
    if args.genotype:
        from raynas.models.build import head_factory

        try:  # a missing file, not JSON, or a genotype of another space or shape
            head_factory(fad_head_spec(args.genotype, settings), "mask_rcnn")
        except ValueError as err:
            raise ConfigError(f"--genotype: {err}") from err
        genotype = json.loads(Path(args.genotype).read_text())["arch"]
        check_same_genotype(before, kept_rows, genotype, out, args.genotype)
    check_cells_per_group(before, settings, out)
    return settings, base, before, kept_rows


def main(argv: list[str] | None = None) -> int:
    return run_experiment("mask_fad", build_parser(), argv, check, lambda args, checked: run(*checked))


def with_presets(args: argparse.Namespace) -> argparse.Namespace:
    """``--smoke`` / ``--paper`` fill in the flags not given (a given flag wins)."""
    return with_fad_presets(args, SMOKE)


if __name__ == "__main__":
    sys.exit(main())
