"""Evidence for FAD on the proxy: searched heads vs torchvision's head, random heads and the ablations.

    python experiments/fad_evidence.py                    # FCOS, default budget for a 2-core CPU
    python experiments/fad_evidence.py --kind retinanet   # Table 3's second detector
    python experiments/fad_evidence.py --smoke            # tiny (CI)
    python experiments/fad_evidence.py --paper            # the paper's settings (VOC on GPUs; see below)
    python experiments/fad_evidence.py --arms fad_full --seeds 1   # one search (and a random head) vs default

FAD's Table 2 (and Table 3's searched-vs-default columns) on the digits proxy. Every searched arm runs
first-order DARTS (``raynas.training.darts``) on the training split from the pretrained proxy body, then
its derived head is retrained; every retrained arm uses one recipe (``--epochs``, decay in the last) and
``--seeds`` seeds (``raynas.jobs.arms.train_head_arms``), and is scored on the test split where the data
have one (the scenes proxy), else on val (digits); the ``split`` column says which:

- ``<detector> head``: torchvision's head (the hand-made baseline);
- ``FAD searched``: the full space (12 transformations + none, RepShare, decoupling H);
- ``FAD searched @c'=N``: the same genotype retrained at the block width whose head has about the
  parameters of torchvision's head (so a loss is not just a smaller head; ``--no-matched-width`` drops it);
- ``FAD random``: the paper's random baseline (a random transformation per edge, two random incoming
  edges per node), one genotype per seed;
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

Every derived head is retrained with ``--cells-per-group`` cells per group (default 2, the depth at which
the heads have Table 3's parameters; the search has one, Sec. 3.1).
``--paper`` sets the paper's head width (c' = 96) and 12-epoch search and retraining schedules (meant for
``--gpu``); the data stay the digits proxy. The paper's VOC setting is ``raynas search fad --config
experiments/configs/fad_paper.yaml`` (the user's VOC copy; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.arms import train_time_s
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
from raynas.registry import ONE_STAGE
from raynas.studies import TEST_HEADER, per_arm_summary, verdict_cells, verdict_note
from raynas.studies.flags import check_counts
from raynas.studies.tables import (
    not_yet_reached,
    previous_record,
    previous_rows,
    table_fix,
)
from raynas.training.config import TrainConfig

METRICS = ("AP", "AP50", "AP75")
SMOKE = {"seeds": 1, "search_epochs": 1, "epochs": 1, "c_prime": 12}  # what --smoke fills in
#: searched arms: (label, slug, FADConfig switches); Table 2's rows
SEARCHED = (
    ("FAD searched", "fad_full", {}),
    ("no RepShare", "no_repshare", {"repshare": False}),
    ("no decoupling", "no_decouple", {"decouple": False}),
    ("std only", "std_only", {"streams": ["std"]}),
    ("sep only", "sep_only", {"streams": ["sep"]}),
    ("RF <= 5", "rf5", {"rf_max": 5}),
    ("RF <= 7", "rf7", {"rf_max": 7}),
    ("DARTS ops", "darts_ops", {"ops": "darts", "repshare": False}),
    ("DARTS primitives", "darts_primitives", {"ops": "darts_primitives", "repshare": False}),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/fad_evidence", help="where runs, tables and plots go")
    add_fad_flags(parser)
    parser.add_argument("--kind", default="fcos", choices=list(ONE_STAGE))
    parser.add_argument(
        "--arms",
        nargs="+",
        default=None,
        help=f"searched arms to run (default all): {[s for _, s, _ in SEARCHED]}",
    )
    parser.add_argument(
        "--no-matched-width",
        dest="matched_width",
        action="store_false",
        help="leave out the searched head retrained at the width that matches the default head's params",
    )
    return parser


def head_cost(cfg, num_classes: int) -> dict[str, int]:
    """Parameters and FLOPs of the detector's head alone, on one image at the recipe's size."""
    import torch

    from raynas.evaluation import count_flops, count_params
    from raynas.models.build import build_model

    model = build_model(cfg.model, num_classes, cfg.neck, cfg.head).eval()
    size = cfg.model.min_size
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, size, size))
    levels = list(features.values())
    return {"head_params": count_params(model.head), "head_flops": count_flops(model.head, (levels,))}


#: the settings a table's rows depend on: rows from another recipe are never mixed into one table
RECIPE = ("kind", "search_epochs", "epochs", "train_images", "c_prime", "cells_per_group", "smoke", "paper")


def run_searches(base, args: argparse.Namespace, out: Path, before: dict) -> tuple[dict, list[dict]]:
    """Every searched arm's genotype (copied to ``genotypes/``) and its search cost; a genotype already
    in ``genotypes/`` is reused with the cost recorded for it."""
    from raynas.training.darts import search_fad

    genotypes, costs = {}, []
    wanted = set(args.arms or [s for _, s, _ in SEARCHED])
    recorded = {cost["arm"]: cost for cost in recorded_costs(before, out)}
    for label, slug, switches in SEARCHED:
        if slug not in wanted:
            continue
        kept = out / "genotypes" / f"{slug}.json"
        if kept.is_file() and label in recorded:
            print(f"== search: {label} (from {kept}) ==", flush=True)
            genotypes[label] = json.loads(kept.read_text())["arch"]
            costs.append(recorded[label])
            continue
        print(f"== search: {label} ==", flush=True)
        result = search_fad(fad_search_config(base, args, f"search_{slug}", **switches))
        genotypes[label] = json.loads(result.genotype_path.read_text())["arch"]
        (out / "genotypes").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.genotype_path, out / "genotypes" / f"{slug}.json")
        shutil.copyfile(result.run_dir / "genotype.png", out / "genotypes" / f"{slug}.png")
        metrics = result.metrics
        costs.append(
            {
                "arm": label,
                "search_time_s": train_time_s(metrics),
                "search_peak_memory_mb": float(metrics.get("peak_memory_mb", float("nan"))),
            }
        )
    # arms left out by --arms keep the cost recorded for them (their rows stay in the table too)
    costs += [cost for arm, cost in recorded.items() if arm not in genotypes]
    return genotypes, costs


def matched_c_prime(base, genotype_config: dict, args: argparse.Namespace) -> int:
    """The block width c' (a multiple of 8) at which the searched head has about the parameters of
    torchvision's head: the searched head's comparison at equal size (the paper compares at c' = 96, where
    its head is smaller than the default one, Table 3)."""
    from raynas.evaluation import count_params
    from raynas.models.build import build_model

    annotations = Path(base.data.root) / "annotations" / "instances_train.json"
    num_classes = max(c["id"] for c in json.loads(annotations.read_text())["categories"]) + 1

    body_only = replace(base.model, backbone_weights=None)  # the head's size does not depend on the body

    def head_params(head: dict | None) -> int:
        return count_params(build_model(body_only, num_classes, None, head).head)

    target = head_params(None)
    sizes = {c: head_params(fad_head_spec(genotype_config, args, c)) for c in range(16, 8 * 33, 8)}
    return min(sizes, key=lambda c: abs(sizes[c] - target))


def plan_arms(genotypes: dict, args: argparse.Namespace, base) -> list:
    """torchvision's head, FAD random (a genotype per seed), every searched arm, and the searched head at
    the width that matches the default head's parameters."""
    from raynas.jobs.arms import HeadArm
    from raynas.spaces.fad import FADSpace

    def same_for_every_seed(head: dict | None) -> dict:
        return dict.fromkeys(range(args.seeds), head)

    space = FADSpace()
    randoms = {
        seed: fad_head_spec(space.to_config(space.sample(random.Random(1000 + seed))), args)
        for seed in range(args.seeds)
    }
    kind = "FCOS" if args.kind == "fcos" else "RetinaNet"
    arms = [HeadArm(f"{kind} head", "default_head", same_for_every_seed(None)),
            HeadArm("FAD random", "fad_random", randoms)]  # fmt: skip
    for label, slug, _ in SEARCHED:
        if label in genotypes:
            arms.append(HeadArm(label, slug, same_for_every_seed(fad_head_spec(genotypes[label], args))))
            if slug == "fad_full" and args.matched_width:
                c_prime = matched_c_prime(base, genotypes[label], args)
                spec = fad_head_spec(genotypes[label], args, c_prime)
                arms.append(
                    HeadArm(f"FAD searched @c'={c_prime}", f"fad_full_c{c_prime}", same_for_every_seed(spec))
                )
    return arms


def summarize(rows: pd.DataFrame, baseline: str) -> pd.DataFrame:
    return per_arm_summary(rows, METRICS, ("head_params", "head_flops"), baseline).reset_index()


def markdown(table: pd.DataFrame, costs: pd.DataFrame) -> str:
    table = table.merge(costs, on="arm", how="left") if len(costs) else table
    lines = [
        f"| arm | AP (mean +/- std) | AP50 | head params | head FLOPs | {TEST_HEADER} "
        "| search time | search peak memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):
        time_s, memory = row.get("search_time_s"), row.get("search_peak_memory_mb")
        cells = [
            row["arm"],
            f"{100 * row['AP_mean']:.1f} +/- {100 * row['AP_std']:.1f}",
            f"{100 * row['AP50_mean']:.1f}",
            f"{row['head_params'] / 1e6:.2f} M",
            f"{row['head_flops'] / 1e9:.2f} G",
            *verdict_cells(row, scale=100, digits=1),
            "-" if pd.isna(time_s) else f"{time_s:.0f} s",
            "-" if pd.isna(memory) else f"{memory:.0f} MB",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", verdict_note(table)]) + "\n"


def plot(table: pd.DataFrame, path: Path, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(table))
    ax.bar(x, 100 * table["AP_mean"], yerr=100 * table["AP_std"].fillna(0), capsize=3)
    ax.set_xticks(x, table["arm"], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel(f"AP on {split} (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace, base, before: dict, kept_rows: pd.DataFrame) -> dict:
    from raynas.jobs.arms import reported_split, train_head_arms
    from raynas.jobs.main_job import prepare_inputs

    out = Path(args.out)
    started = time.perf_counter()
    prepare_inputs(base, smoke=args.smoke)  # data and pretrained body (a few steps in --smoke)
    genotypes, costs = run_searches(base, args, out, before)
    arms = plan_arms(genotypes, args, base)

    def write(rows: list[dict], _trained: int = 0) -> None:
        frame = pd.DataFrame(rows + not_yet_reached(kept_rows, rows))  # a stop keeps every row
        for metric in METRICS:
            frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
        table = summarize(frame, arms[0].label)
        atomic_write_text(out / "fad_evidence.csv", frame.to_csv(index=False))
        atomic_write_text(out / "fad_evidence.md", markdown(table, pd.DataFrame(costs)))
        plot(table, out / "fad_evidence.png", reported_split(base))

    rows, launched = train_head_arms(base, arms, args.seeds, kept_rows, METRICS, head_cost, write)
    write(rows)
    wall_time_s = round(time.perf_counter() - started, 1)
    record = {
        "runs_started": launched,
        "runs": len(rows),
        "wall_time_s": wall_time_s,
        "wall_time_total_s": round(
            before.get("wall_time_total_s", before.get("wall_time_s", 0)) + wall_time_s, 1
        ),
        "search_costs": costs,
        "settings": vars(args),
    }
    atomic_write_json(out / "fad_evidence.json", record)
    print("\n" + (out / "fad_evidence.md").read_text())
    return record


def recorded_costs(before: dict, out: Path) -> list[dict]:
    """The record's search costs, each an arm's label with its numbers (what ``run_searches`` reuses)."""
    costs = before.get("search_costs", [])
    labels = {label for label, _, _ in SEARCHED}
    if not isinstance(costs, list) or not all(
        isinstance(cost, dict)
        and cost.get("arm") in labels
        and all(isinstance(value, int | float) for key, value in cost.items() if key != "arm")
        for cost in costs
    ):
        raise ConfigError(
            f"{out / 'fad_evidence.json'}: 'search_costs' is not a list of searched arms' costs; "
            f"{table_fix('fad_evidence')}"
        )
    return costs


def check_kept_genotypes(args: argparse.Namespace, out: Path, costs: list[dict]) -> None:
    """The genotypes in ``--out/genotypes`` that this run reuses instead of searching, each a genotype."""
    from raynas.models.build import head_factory

    recorded = {cost["arm"] for cost in costs}
    for label, slug, _ in SEARCHED:
        kept = out / "genotypes" / f"{slug}.json"
        if slug in (args.arms or [slug]) and label in recorded and kept.is_file():
            try:
                head_factory({"type": "fad", "genotype": str(kept), "c_prime": args.c_prime}, args.kind)
            except ValueError as err:
                raise ConfigError(
                    f"{kept} is not the genotype that was searched ({err}); restore it (from git or "
                    f"experiments/results/fad_evidence/genotypes/), or delete it to search {slug} again"
                ) from err


def check(args: argparse.Namespace) -> tuple[TrainConfig, dict, pd.DataFrame]:
    """Every flag and every file the run reads back checked here, before Ray starts: the recipe, the
    record and the rows kept from an earlier run."""
    from raynas.config import check_writable_folder

    with_presets(args)
    known = [s for _, s, _ in SEARCHED]
    if args.arms and set(args.arms) - set(known):
        raise ConfigError(f"--arms {sorted(set(args.arms) - set(known))} unknown; choose from {known}")
    check_counts(args, dict.fromkeys(FAD_COUNTS, 1))
    check_writable_folder(args.out, "--out")
    base = fad_base_config(args, args.kind)
    fad_search_config(base, args, "check")  # its own checks, before Ray
    out = Path(args.out)
    before = previous_record(args, out, "fad_evidence", RECIPE)
    check_kept_genotypes(args, out, recorded_costs(before, out))
    kept_rows = previous_rows(out, "fad_evidence", before, METRICS)
    check_cells_per_group(before, args, out)
    return base, before, kept_rows


def main(argv: list[str] | None = None) -> int:
    return run_experiment("fad_evidence", build_parser(), argv, check, lambda args, kept: run(args, *kept))


def with_presets(args: argparse.Namespace) -> argparse.Namespace:
    """``--smoke`` / ``--paper`` fill in the flags not given (a given flag wins)."""
    with_fad_presets(args, SMOKE)
    if args.smoke:
        args.arms = args.arms or ["fad_full"]
        args.matched_width = False
    return args


if __name__ == "__main__":
    sys.exit(main())
