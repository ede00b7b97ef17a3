"""FAD's mask-head table (Table 5's comparison): the mask head searched by DARTS (or a given genotype),
then Mask R-CNN's mask head and the FAD mask head retrained per seed and compared
(``experiments/mask_fad.py`` parses its flags into :class:`~raynas.jobs.fad.FADSettings` and runs
:func:`run`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.fad import FAD_RECIPE, FADSettings, fad_head_spec, fad_search_config, search_time_s
from raynas.studies import TEST_HEADER, per_arm_summary, verdict_cells, verdict_note
from raynas.studies.tables import not_yet_reached, wall_times
from raynas.training.config import TrainConfig

METRICS = ("AP", "mask_AP", "mask_AP50")
DEFAULT_ARM, SEARCHED_ARM = "Mask R-CNN mask head", "FAD mask head"
RECIPE = FAD_RECIPE


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


def run(settings: FADSettings, base: TrainConfig, before: dict, kept_rows: pd.DataFrame) -> dict:
    """Search (or take ``settings.genotype``), then retrain each arm and seed; the table, its record and
    the genotype are written into ``settings.out`` only once a run has trained (and at the end), so a run
    refused on its way writes nothing there."""
    from raynas.jobs.arms import HeadArm, train_head_arms
    from raynas.jobs.proxies import prepare_inputs
    from raynas.training.darts import search_fad

    out = Path(settings.out)
    started = time.perf_counter()
    prepare_inputs(base, smoke=settings.smoke)
    if settings.genotype:
        print(f"== search: FAD mask head (from {settings.genotype}) ==", flush=True)
        genotype_path, search_metrics, search_seconds = Path(settings.genotype), {}, float("nan")
    else:
        print("== search: FAD mask head ==", flush=True)
        searched = search_fad(fad_search_config(base, settings, "search_mask_head"))
        genotype_path, search_metrics = searched.genotype_path, searched.metrics
        search_seconds = search_time_s(searched)
    genotype = json.loads(genotype_path.read_text())["arch"]
    check_same_genotype(before, kept_rows, genotype, out, str(genotype_path))
    seeds = range(settings.seeds)
    searched_head = fad_head_spec(genotype, settings)
    arms = [HeadArm(DEFAULT_ARM, "default_mask_head", dict.fromkeys(seeds)),
            HeadArm(SEARCHED_ARM, "fad_mask_head", dict.fromkeys(seeds, searched_head))]  # fmt: skip
    search_cost = {
        "genotype": genotype,
        "genotype_from": settings.genotype,  # None: searched by this run (then its cost follows)
        "search_time_s": search_seconds,
        "search_peak_memory_mb": float(search_metrics.get("peak_memory_mb", "nan")),
    }
    if settings.genotype and before.get("genotype") == genotype:  # the search that found it was recorded
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
        record = {
            "runs_started": launched,
            "runs": len(rows),
            **search_cost,
            **wall_times(started, before),
            "settings": asdict(settings),
        }
        atomic_write_json(out / "mask_fad.json", record)
        return record

    rows, launched = train_head_arms(base, arms, settings.seeds, kept_rows, METRICS, mask_head_cost, write)
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
