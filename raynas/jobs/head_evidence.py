"""FAD's head table (Table 2 and Table 3's searched-vs-default columns): every searched arm's DARTS search,
then torchvision's head, FAD random, the searched heads and the ablations retrained per seed and compared
(``experiments/fad_evidence.py`` parses its flags into :class:`~raynas.jobs.fad.FADSettings` and runs
:func:`run`; what each arm is: its docstring).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.arms import train_time_s
from raynas.jobs.fad import FADSettings, fad_head_spec, fad_search_config
from raynas.studies import TEST_HEADER, per_arm_summary, verdict_cells, verdict_note
from raynas.studies.tables import not_yet_reached, table_fix
from raynas.training.config import TrainConfig

METRICS = ("AP", "AP50", "AP75")
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


def run_searches(base, settings: FADSettings, out: Path, before: dict) -> tuple[dict, list[dict]]:
    """Every searched arm's genotype (copied to ``genotypes/``) and its search cost; a genotype already
    in ``genotypes/`` is reused with the cost recorded for it."""
    from raynas.training.darts import search_fad

    genotypes, costs = {}, []
    wanted = set(settings.arms or [s for _, s, _ in SEARCHED])
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
        result = search_fad(fad_search_config(base, settings, f"search_{slug}", **switches))
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


def matched_c_prime(base, genotype_config: dict, settings: FADSettings) -> int:
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
    sizes = {c: head_params(fad_head_spec(genotype_config, settings, c)) for c in range(16, 8 * 33, 8)}
    return min(sizes, key=lambda c: abs(sizes[c] - target))


def plan_arms(genotypes: dict, settings: FADSettings, base) -> list:
    """torchvision's head, FAD random (a genotype per seed), every searched arm, and the searched head at
    the width that matches the default head's parameters."""
    from raynas.jobs.arms import HeadArm
    from raynas.spaces.fad import FADSpace

    def same_for_every_seed(head: dict | None) -> dict:
        return dict.fromkeys(range(settings.seeds), head)

    space = FADSpace()
    randoms = {
        seed: fad_head_spec(space.to_config(space.sample(random.Random(1000 + seed))), settings)
        for seed in range(settings.seeds)
    }
    kind = "FCOS" if settings.kind == "fcos" else "RetinaNet"
    arms = [HeadArm(f"{kind} head", "default_head", same_for_every_seed(None)),
            HeadArm("FAD random", "fad_random", randoms)]  # fmt: skip
    for label, slug, _ in SEARCHED:
        if label in genotypes:
            arms.append(HeadArm(label, slug, same_for_every_seed(fad_head_spec(genotypes[label], settings))))
            if slug == "fad_full" and settings.matched_width:
                c_prime = matched_c_prime(base, genotypes[label], settings)
                spec = fad_head_spec(genotypes[label], settings, c_prime)
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


def run(settings: FADSettings, base: TrainConfig, before: dict, kept_rows: pd.DataFrame) -> dict:
    from raynas.jobs.arms import reported_split, train_head_arms
    from raynas.jobs.main_job import prepare_inputs

    out = Path(settings.out)
    started = time.perf_counter()
    prepare_inputs(base, smoke=settings.smoke)  # data and pretrained body (a few steps in --smoke)
    genotypes, costs = run_searches(base, settings, out, before)
    arms = plan_arms(genotypes, settings, base)

    def write(rows: list[dict], _trained: int = 0) -> None:
        frame = pd.DataFrame(rows + not_yet_reached(kept_rows, rows))  # a stop keeps every row
        for metric in METRICS:
            frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
        table = summarize(frame, arms[0].label)
        atomic_write_text(out / "fad_evidence.csv", frame.to_csv(index=False))
        atomic_write_text(out / "fad_evidence.md", markdown(table, pd.DataFrame(costs)))
        plot(table, out / "fad_evidence.png", reported_split(base))

    rows, launched = train_head_arms(base, arms, settings.seeds, kept_rows, METRICS, head_cost, write)
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
        "settings": asdict(settings),
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


def check_kept_genotypes(settings: FADSettings, out: Path, costs: list[dict]) -> None:
    """The genotypes in ``--out/genotypes`` that this run reuses instead of searching, each a genotype."""
    from raynas.models.build import head_factory

    recorded = {cost["arm"] for cost in costs}
    for label, slug, _ in SEARCHED:
        kept = out / "genotypes" / f"{slug}.json"
        if slug in (settings.arms or [slug]) and label in recorded and kept.is_file():
            try:
                head_factory(
                    {"type": "fad", "genotype": str(kept), "c_prime": settings.c_prime}, settings.kind
                )
            except ValueError as err:
                raise ConfigError(
                    f"{kept} is not the genotype that was searched ({err}); restore it (from git or "
                    f"experiments/results/fad_evidence/genotypes/), or delete it to search {slug} again"
                ) from err
