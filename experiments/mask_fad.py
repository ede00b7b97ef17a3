"""FAD for instance segmentation on the proxy: the searched mask head vs torchvision's, in Mask R-CNN.

    python experiments/mask_fad.py            # default budget for a 2-core CPU
    python experiments/mask_fad.py --smoke    # tiny (CI)
    python experiments/mask_fad.py --paper    # the paper's widths and schedules (meant for --gpu)

FAD's Table 5 comparison (fad-repshare.txt Sec. 4.2) on the digits proxy, whose annotations carry instance
masks: first-order DARTS (``raynas.training.darts``, Ray Train) searches the mask head of Mask R-CNN, one
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
``--paper`` sets c' = 96 and 12-epoch search and retraining schedules; the data stay the digits proxy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.entry import run_experiment
from raynas.jobs.fad import (
    FAD_COUNTS,
    add_fad_flags,
    check_cells_per_group,
    fad_base_config,
    fad_head_spec,
    fad_search_config,
    with_fad_presets,
)
from raynas.studies import TEST_HEADER, per_arm_summary, verdict_cells, verdict_note
from raynas.studies.flags import check_counts
from raynas.studies.tables import (
    not_yet_reached,
    previous_record,
    previous_rows,
    table_fix,
)
from raynas.training.config import TrainConfig

METRICS = ("AP", "mask_AP", "mask_AP50")
SMOKE = {"seeds": 1, "search_epochs": 1, "epochs": 1, "c_prime": 8}  # what --smoke fills in
DEFAULT_ARM, SEARCHED_ARM = "Mask R-CNN mask head", "FAD mask head"
#: the settings a table's rows depend on: rows from another recipe are never mixed into one table
RECIPE = ("search_epochs", "epochs", "train_images", "c_prime", "cells_per_group", "smoke", "paper")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/mask_fad", help="where runs and tables go")
    add_fad_flags(parser)
    parser.add_argument(
        "--genotype",
        default=None,
        help="retrain this genotype.json of an earlier mask-head search instead of searching "
        "(e.g. experiments/results/mask_fad/genotype.json)",
    )
    return parser


def mask_head_cost(cfg, num_classes: int) -> dict[str, int]:
    """Parameters of the mask head and its FLOPs on one RoI (the 14x14 features it reads)."""
    import torch

    from raynas.evaluation import count_flops, count_params
    from raynas.models.build import build_model

    model = build_model(replace(cfg.model, backbone_weights=None), num_classes, cfg.neck, cfg.head)
    head = model.roi_heads.mask_head.eval()
    roi = torch.zeros(1, cfg.model.out_channels, 14, 14)
    return {"mask_head_params": count_params(head), "mask_head_flops": count_flops(head, roi)}


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    costs = ("mask_head_params", "mask_head_flops")
    return per_arm_summary(rows, METRICS, costs, DEFAULT_ARM, metric="mask_AP").reset_index()


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| arm | box AP | mask AP (mean +/- std) | mask AP50 | mask head params | mask head FLOPs / RoI "
        f"| mask AP {TEST_HEADER} | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):
        cells = [
            row["arm"],
            f"{100 * row['AP_mean']:.1f} +/- {100 * row['AP_std']:.1f}",
            f"{100 * row['mask_AP_mean']:.1f} +/- {100 * row['mask_AP_std']:.1f}",
            f"{100 * row['mask_AP50_mean']:.1f}",
            f"{row['mask_head_params'] / 1e6:.3f} M",
            f"{row['mask_head_flops'] / 1e6:.1f} M",
            *verdict_cells(row, scale=100, digits=1),
            str(row["seeds"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", verdict_note(table)]) + "\n"


def run(args: argparse.Namespace, base, before: dict, kept_rows: pd.DataFrame) -> dict:
    """Search (or take ``--genotype``), then retrain each arm and seed; the table, its record and the
    genotype are written into ``--out`` only once a run has trained (and at the end), so a run refused on
    its way writes nothing there."""
    from raynas.jobs.arms import HeadArm, train_head_arms
    from raynas.jobs.main_job import prepare_inputs
    from raynas.training.darts import search_fad

    out = Path(args.out)
    started = time.perf_counter()
    prepare_inputs(base, smoke=args.smoke)
    if args.genotype:
        print(f"== search: FAD mask head (from {args.genotype}) ==", flush=True)
        genotype_path, search_metrics = Path(args.genotype), {}
    else:
        print("== search: FAD mask head ==", flush=True)
        searched = search_fad(fad_search_config(base, args, "search_mask_head"))
        genotype_path, search_metrics = searched.genotype_path, searched.metrics
    genotype = json.loads(genotype_path.read_text())["arch"]
    check_same_genotype(before, kept_rows, genotype, out, str(genotype_path))
    seeds = range(args.seeds)
    searched_head = fad_head_spec(genotype, args)
    arms = [HeadArm(DEFAULT_ARM, "default_mask_head", dict.fromkeys(seeds)),
            HeadArm(SEARCHED_ARM, "fad_mask_head", dict.fromkeys(seeds, searched_head))]  # fmt: skip
    search_cost = {
        "genotype": genotype,
        "genotype_from": args.genotype,  # None: searched by this run (then its cost follows)
        "search_time_s": float(search_metrics.get("epoch_time_s", "nan"))
        * float(search_metrics.get("epoch", "nan")),
        "search_peak_memory_mb": float(search_metrics.get("peak_memory_mb", "nan")),
    }
    if args.genotype and before.get("genotype") == genotype:  # the search that found it was recorded
        search_cost.update(
            {key: before[key] for key in ("search_time_s", "search_peak_memory_mb") if key in before}
        )

    def write(rows: list[dict], launched: int) -> dict:
        out.mkdir(parents=True, exist_ok=True)
        for suffix in (".json", ".png"):  # the genotype (and its drawing, when there is one) with the table
            source, kept = genotype_path.with_suffix(suffix), out / f"genotype{suffix}"
            if source.is_file() and source.resolve() != kept.resolve():
                shutil.copyfile(source, kept)
        frame = pd.DataFrame(rows + not_yet_reached(kept_rows, rows))  # a stop keeps every row
        atomic_write_text(out / "mask_fad.csv", frame.to_csv(index=False))
        atomic_write_text(out / "mask_fad.md", markdown(summarize(frame)))
        wall_time_s = round(time.perf_counter() - started, 1)
        record = {
            "runs_started": launched,
            "runs": len(rows),
            **search_cost,
            "wall_time_s": wall_time_s,
            "wall_time_total_s": round(before.get("wall_time_total_s", 0) + wall_time_s, 1),
            "settings": vars(args),
        }
        atomic_write_json(out / "mask_fad.json", record)
        return record

    rows, launched = train_head_arms(base, arms, args.seeds, kept_rows, METRICS, mask_head_cost, write)
    record = write(rows, launched)
    print("\n" + (out / "mask_fad.md").read_text())
    return record


def check_same_genotype(
    before: dict, kept_rows: pd.DataFrame, genotype: dict, out: Path, source: str
) -> None:
    """A table's searched arm is one genotype: another one's rows would be averaged with it."""
    recorded = before.get("genotype")
    has_rows = not kept_rows.empty and (kept_rows["arm"] == SEARCHED_ARM).any()
    if recorded is not None and has_rows and recorded != genotype:
        raise ConfigError(
            f"{out} holds a table of another FAD genotype than {source!r} (see {out / 'mask_fad.json'}); "
            f"give --genotype {out / 'genotype.json'} to extend it, or choose another --out"
        )


def check(args: argparse.Namespace) -> tuple[TrainConfig, dict, pd.DataFrame]:
    """Every flag and every file the run reads back checked here, before Ray starts: the recipe, the
    record and the rows kept from an earlier run."""
    from raynas.config import check_writable_folder

    with_presets(args)
    check_counts(args, dict.fromkeys(FAD_COUNTS, 1))
    check_writable_folder(args.out, "--out")
    base = fad_base_config(args, "mask_rcnn")
    fad_search_config(base, args, "search_mask_head")  # its own checks, before Ray
    out = Path(args.out)
    before = previous_record(args, out, "mask_fad", RECIPE)
    if not isinstance(before.get("genotype", {}), dict):
        raise ConfigError(
            f"{out / 'mask_fad.json'}: 'genotype' is not a genotype mapping; {table_fix('mask_fad')}"
        )
    kept_rows = previous_rows(out, "mask_fad", before, METRICS)
    if args.genotype:
        from raynas.models.build import head_factory

        try:  # a missing file, not JSON, or a genotype of another space or shape
            head_factory(fad_head_spec(args.genotype, args), "mask_rcnn")
        except ValueError as err:
            raise ConfigError(f"--genotype: {err}") from err
        genotype = json.loads(Path(args.genotype).read_text())["arch"]
        check_same_genotype(before, kept_rows, genotype, out, args.genotype)
    check_cells_per_group(before, args, out)
    return base, before, kept_rows


def main(argv: list[str] | None = None) -> int:
    return run_experiment("mask_fad", build_parser(), argv, check, lambda args, kept: run(args, *kept))


def with_presets(args: argparse.Namespace) -> argparse.Namespace:
    """``--smoke`` / ``--paper`` fill in the flags not given (a given flag wins)."""
    return with_fad_presets(args, SMOKE)


if __name__ == "__main__":
    sys.exit(main())
