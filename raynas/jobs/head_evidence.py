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
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.fad import FAD_RECIPE, FADSettings, fad_head_spec, fad_search_config, search_time_s
from raynas.studies import TEST_HEADER, per_arm_summary, verdict_cells, verdict_note
from raynas.studies.tables import table_fix, wall_times
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
    """Parameters and FLOPs of the detector's head alone, per image at the recipe's size (counted on two
    images: GroupNorm refuses one value per group, which one image gives on a 1x1 P7 with a group of one
    channel)."""
    import torch

    from raynas.evaluation import count_flops, count_params
    from raynas.models.build import build_model

    model = build_model(cfg.model, num_classes, cfg.neck, cfg.head).eval()
    size = cfg.model.min_size
    with torch.no_grad():
        features = model.backbone(torch.zeros(2, 3, size, size))
    levels = list(features.values())
    return {"head_params": count_params(model.head), "head_flops": count_flops(model.head, (levels,)) // 2}


#: the widths :func:`matched_c_prime` chooses from: even ones, so that GroupNorm keeps >= 2 groups
#: (``gn_groups`` = gcd(c', 32): an odd width would normalise with one). Steps of 4 or 8 miss the default
#: head's parameters by 7-8 % (a head grows ~22 k parameters every 2 channels at c' ~ 32); the group count
#: still follows the width (c' = 34: 2 groups; 24: 8), a difference from the searched width's head
MIN_MATCHED_C_PRIME, MAX_MATCHED_C_PRIME, MATCHED_STEP = 4, 512, 2
RANDOM_ARM = "FAD random"
RANDOM_DRAW_SEED = 1000
RECIPE = ("kind", *FAD_RECIPE)  # rows of another recipe are never mixed into one table


def run_searches(
    base,
    settings: FADSettings,
    out: Path,
    before: dict,
    on_search: Callable[[list[dict]], None] | None = None,
    shared: tuple[Path, dict] | None = None,
    searching: set[str] | None = None,
) -> tuple[dict, list[dict]]:
    """Every searched arm's genotype (copied to ``out/genotypes``) and its search cost; a genotype already
    in ``genotypes/`` is reused with the cost recorded for it. ``on_search`` gets every cost known after
    each new search (the record is written there, so a stop in a later search keeps this one).
    ``shared``: another folder and its record whose genotypes are reused too (a shard reads ``--out``'s);
    ``searching``: the slugs this call may search (None: every wanted one; a shard: the ones dealt to it,
    the others' arms are left out)."""
    from raynas.training.darts import search_fad

    genotypes, costs = {}, []
    wanted = set(settings.arms or [s for _, s, _ in SEARCHED])
    recorded = {cost["arm"]: cost for cost in recorded_costs(before, out)}
    folders = [(out, recorded)]
    if shared is not None:  # --out's first: a shard retrains the genotype every shard deals from
        folders.insert(0, (shared[0], {cost["arm"]: cost for cost in recorded_costs(shared[1], shared[0])}))

    def with_unreached(known: list[dict]) -> list[dict]:
        """Arms not searched in this call (left out by --arms, or not reached yet) keep their cost."""
        reached = {cost["arm"] for cost in known}
        return known + [cost for arm, cost in recorded.items() if arm not in reached]

    for label, slug, switches in SEARCHED:
        if slug not in wanted:
            continue
        kept = [(folder / "genotypes" / f"{slug}.json", known[label]) for folder, known in folders
                if (folder / "genotypes" / f"{slug}.json").is_file() and label in known]  # fmt: skip
        if kept:
            path, cost = kept[0]
            print(f"== search: {label} (from {path}) ==", flush=True)
            genotypes[label] = json.loads(path.read_text())["arch"]
            costs.append(cost)
            continue
        if searching is not None and slug not in searching:
            continue  # another shard's search
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
                "search_time_s": search_time_s(result),
                "search_peak_memory_mb": float(metrics.get("peak_memory_mb", float("nan"))),
            }
        )
        if on_search is not None:
            on_search(with_unreached(costs))
    return genotypes, with_unreached(costs)


def matched_c_prime(base, genotype_config: dict, settings: FADSettings) -> int:
    """The block width c' at which the searched head has the parameters of torchvision's head, as near as a
    whole width allows (the searched head's comparison at equal size; the paper compares at c' = 96, where
    its head is smaller than the default one, Table 3). A head's parameters grow with c', so a bisection
    over the even widths finds the nearest; only heads are built past the one detector that gives
    the target."""
    from raynas.evaluation import count_params
    from raynas.models.build import build_model, head_factory

    annotations = Path(base.data.root) / "annotations" / "instances_train.json"
    num_classes = max(c["id"] for c in json.loads(annotations.read_text())["categories"]) + 1
    body_only = replace(base.model, backbone_weights=None)  # the head's size does not depend on the body
    default = build_model(body_only, num_classes, None, None)
    target = count_params(default.head)
    num_anchors = default.anchor_generator.num_anchors_per_location()[0]

    def head_params(c_prime: int) -> int:
        build = head_factory(fad_head_spec(genotype_config, settings, c_prime), base.model.kind)
        return count_params(build(base.model.out_channels, num_anchors, num_classes))

    # widths in steps of MATCHED_STEP: the first with >= target params lies in (low, high]
    low, high = MIN_MATCHED_C_PRIME // MATCHED_STEP, MAX_MATCHED_C_PRIME // MATCHED_STEP
    if head_params(high * MATCHED_STEP) < target:
        return high * MATCHED_STEP
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if head_params(middle * MATCHED_STEP) >= target else (middle, high)
    return min((low * MATCHED_STEP, high * MATCHED_STEP), key=lambda c: abs(head_params(c) - target))


def random_heads(settings: FADSettings) -> list[dict]:
    """FAD random's ``--random-genotypes`` heads (the paper's random baseline, Sec. 4.1: a random
    transformation per edge, two random incoming edges per node), genotype ``g`` drawn from seed 1000 + g
    (so the first ones are the genotypes of tables that drew one per seed), each trained at every seed."""
    from raynas.spaces.fad import FADSpace

    space = FADSpace()
    return [
        fad_head_spec(space.to_config(space.sample(random.Random(RANDOM_DRAW_SEED + g))), settings)
        for g in range(settings.random_genotypes)
    ]


def plan_arms(genotypes: dict, settings: FADSettings, base) -> list:
    """torchvision's head, FAD random (``--random-genotypes`` genotypes, each at every seed), every
    searched arm, and the searched head at the width that matches the default head's parameters (unless
    that width is ``--c-prime``: then the searched head is that arm, and one network is trained once)."""
    from raynas.jobs.arms import HeadArm

    def same_for_every_seed(head: dict | None) -> dict:
        return dict.fromkeys(range(settings.seeds), head)

    kind = "FCOS" if settings.kind == "fcos" else "RetinaNet"
    arms = [HeadArm(f"{kind} head", "default_head", same_for_every_seed(None))]
    arms += [HeadArm(RANDOM_ARM, f"fad_random_g{g}", same_for_every_seed(head), genotype=g)
             for g, head in enumerate(random_heads(settings))]  # fmt: skip
    for label, slug, _ in SEARCHED:
        if label in genotypes:
            spec = fad_head_spec(genotypes[label], settings)
            arms.append(HeadArm(label, slug, same_for_every_seed(spec), search=slug))
            if slug == "fad_full" and settings.matched_width:
                c_prime = matched_c_prime(base, genotypes[label], settings)
                if c_prime == settings.c_prime:  # the searched head is the matched one: trained once
                    print(f"== the matched width is c' = {c_prime}, the searched one: no arm of its own ==")
                    continue
                spec = fad_head_spec(genotypes[label], settings, c_prime)
                arms.append(HeadArm(f"FAD searched @c'={c_prime}", f"fad_full_c{c_prime}",
                                    same_for_every_seed(spec), search=slug))  # fmt: skip
    return arms


def summarize(rows: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per arm with its tests against ``baseline``. FAD random counts its genotypes' means, one
    value a genotype: the genotype is what a random search draws, its seeds repeat one draw (pooling them
    would count a genotype's seeds as independent draws and make its p-value too small)."""
    costs = ("head_params", "head_flops")
    units = []
    for arm, group in rows.groupby("arm", sort=False):
        if "genotype" in group and group["genotype"].notna().any():
            group = group.groupby("genotype")[[*METRICS, *costs]].mean().reset_index()
            group = group.assign(arm=arm, seed=group["genotype"])
        units.append(group)
    return per_arm_summary(pd.concat(units, ignore_index=True), METRICS, costs, baseline).reset_index()


def random_spread(rows: pd.DataFrame, metric: str = "AP") -> dict[str, float]:
    """FAD random's spread in ``metric`` told apart: between its genotypes (std of the genotypes' means over
    seeds) and between seeds of one genotype (root mean square of the genotypes' seed stds); NaN where a
    side has fewer than two values."""
    random_rows = rows[(rows["arm"] == RANDOM_ARM) & rows["genotype"].notna()]
    per_genotype = random_rows.groupby("genotype")[metric]
    seed_stds = per_genotype.std(ddof=1).dropna()
    return {
        "genotypes": int(per_genotype.ngroups),
        "between_genotypes_std": float(per_genotype.mean().std(ddof=1))
        if per_genotype.ngroups > 1
        else np.nan,
        "between_seeds_std": float(np.sqrt((seed_stds**2).mean())) if len(seed_stds) else np.nan,
    }


def markdown(table: pd.DataFrame, costs: pd.DataFrame, rows: pd.DataFrame | None = None) -> str:
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
    lines += ["", verdict_note(table)]
    spread = random_spread(rows) if rows is not None and "genotype" in rows else {"genotypes": 0}
    if spread["genotypes"]:
        lines += ["", f"{RANDOM_ARM}: {spread['genotypes']} genotype(s), each at every seed, tested on the "
                  "genotypes' means (its row's mean +/- std too); AP std between genotypes "
                  f"{100 * spread['between_genotypes_std']:.1f}, between seeds of one genotype "
                  f"{100 * spread['between_seeds_std']:.1f} (nan: fewer than two)."]  # fmt: skip
    return "\n".join(lines) + "\n"


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


def with_genotypes(kept_rows: pd.DataFrame) -> pd.DataFrame:
    """Kept rows with FAD random's ``genotype``: a table written before the column drew genotype g for
    seed g (:func:`random_heads`)."""
    if kept_rows.empty or RANDOM_ARM not in set(kept_rows["arm"]):
        return kept_rows
    rows = kept_rows.copy() if "genotype" in kept_rows else kept_rows.assign(genotype=np.nan)
    missing = (rows["arm"] == RANDOM_ARM) & rows["genotype"].isna()
    rows.loc[missing, "genotype"] = rows.loc[missing, "seed"]
    return rows


def run_unit(row: dict) -> tuple:
    """What one row of the table stands for: an arm's run at a seed (and FAD random's genotype)."""
    genotype = row.get("genotype")
    missing = genotype is None or pd.isna(genotype)
    return row["arm"], int(row["seed"]), -1 if missing else int(genotype)


def run(settings: FADSettings, base: TrainConfig, before: dict, kept_rows: pd.DataFrame) -> dict:
    """Search, plan, retrain and tabulate; a shard (``settings.shard``) does its part of it
    (:mod:`raynas.jobs.head_shards`) and writes its table in its own folder."""
    from raynas.jobs.arms import reported_split, train_head_arms
    from raynas.jobs.head_shards import ShardPlan, table_folder
    from raynas.jobs.proxies import prepare_inputs

    out = table_folder(settings)
    started = time.perf_counter()
    prepare_inputs(base, smoke=settings.smoke)  # data and pretrained body (a few steps in --smoke)
    kept_from_before = {key: before[key] for key in ("shards",) if key in before}

    def record_searches(costs: list[dict]) -> None:
        """The record after each search, the table as it was: a stop in a later search keeps this one."""
        record = {"runs_started": 0, "runs": len(kept_rows), **wall_times(started, before),
                  **kept_from_before, "search_costs": costs, "settings": asdict(settings)}  # fmt: skip
        atomic_write_json(out / "fad_evidence.json", record)

    shard = ShardPlan.read(settings)
    genotypes, costs = run_searches(
        base, settings, out, before, record_searches, shard.shared, shard.searching
    )
    arms = plan_arms(genotypes, settings, base)
    earlier = with_genotypes(kept_rows).to_dict("records")

    def write(rows: list[dict], launched: int = 0) -> dict:
        """Table, plot and record after every run: a stop leaves a folder the same command resumes."""
        reached = {run_unit(row) for row in rows}  # a stop keeps every row; a rerun replaces its own
        table = rows + [row for row in earlier if run_unit(row) not in reached]
        if table:  # a shard dealt nothing has no table, only its record
            write_table(out, table, costs, arms[0].label, reported_split(base))
        record = {
            "runs_started": launched,
            "runs": len(rows),
            **wall_times(started, before),
            **kept_from_before,
            "search_costs": costs,
            "settings": asdict(settings),
        }
        atomic_write_json(out / "fad_evidence.json", record)
        return record

    mine = shard.runs(arms, settings.seeds, Path(base.run.storage_path))
    rows, launched = train_head_arms(base, arms, settings.seeds, kept_rows, METRICS, head_cost, write, mine)
    record = write(rows, launched)
    if (out / "fad_evidence.md").is_file():
        print("\n" + (out / "fad_evidence.md").read_text())
    if settings.shard is not None:
        print(f"shard {settings.shard}: {len(rows)} row(s) in {out}; --gather (with the same recipe flags) "
              "makes --out's table of every shard")  # fmt: skip
    return record


def write_table(out: Path, rows: list[dict], costs: list[dict], baseline: str, split: str) -> pd.DataFrame:
    """``fad_evidence.csv`` / ``.md`` / ``.png`` in ``out`` from the table's rows (returned as written)."""
    frame = pd.DataFrame(rows)
    if "genotype" in frame:  # a whole number where there is one (NaN would make the column float)
        frame["genotype"] = pd.to_numeric(frame["genotype"]).astype("Int64")
    frame = frame[[column for column in frame.columns if column != "head"] + ["head"]]  # head last
    for metric in METRICS:
        frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    table = summarize(frame, baseline)
    atomic_write_text(out / "fad_evidence.csv", frame.to_csv(index=False))
    atomic_write_text(out / "fad_evidence.md", markdown(table, pd.DataFrame(costs), frame))
    plot(table, out / "fad_evidence.png", split)
    return frame


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
