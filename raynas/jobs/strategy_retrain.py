"""``compare_strategies --retrain`` (Table 6's standalone columns): each strategy's best architecture trained
standalone per seed beside the FPN, once per network (two encodings of one network found by two strategies
are one arm), with per-seed rows in ``strategies_seeds.csv`` that a re-run keeps, and the per-strategy
summary with Welch / Holm tests against the FPN (``raynas.jobs.strategies.run`` calls :func:`retrain`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from raynas.config import ConfigError
from raynas.jobs.arms import Arm, arch_id, arm_config, recipe_key, standalone_recipe, train_arms, train_time_s
from raynas.spaces.opanas import OPANASSpace
from raynas.studies import TEST_HEADER, per_arm_summary, verdict_cells, verdict_note
from raynas.studies.tables import not_yet_reached, read_table

if TYPE_CHECKING:
    from raynas.jobs.strategies import StrategiesSettings

#: ``--retrain``'s per-seed rows, one per strategy and seed, in ``--out``: what strategies.md is computed from
SEEDS_FILE = "strategies_seeds.csv"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
BASELINE, BASELINE_RUN = "FPN", "fpn"
#: the cells every kept row has (a row cut short lacks its last, ``arch``); the metrics other than AP may be
#: empty where COCO did not report them
SEED_COMPLETE = ("strategy", "seed", "run", "split", "epochs", "recipe", "AP", "arch")
COSTS = ("neck_params", "neck_flops", "train_time_s")
SEED_NUMERIC = ("seed", "epochs", *METRICS, *COSTS)


def network_plan(best_archs: dict[str, dict], opanas, width: int) -> list[tuple[Arm, list[str]]]:
    """The networks to train standalone and the strategies that found each: the FPN first, then one arm
    per *canonical* network (``OPANASSpace.canonical``: edges out of dead nodes are ``none``), so two
    encodings of one network, found by two strategies, are one run (named ``arch_<id of the canonical
    config>``)."""
    from raynas.models.build import searched_neck_spec

    space = OPANASSpace(opanas.num_nodes)
    plan: dict[str, tuple[Arm, list[str]]] = {
        BASELINE_RUN: (Arm(BASELINE, BASELINE_RUN, None, width), [BASELINE])
    }
    for label, arch in best_archs.items():
        canonical = space.to_config(space.canonical(space.from_config(arch)))
        slug = "arch_" + arch_id(canonical)
        if slug not in plan:
            plan[slug] = (Arm(label, slug, searched_neck_spec(canonical, opanas), width), [])
        plan[slug][1].append(label)
    return list(plan.values())


def neck_cost_of(cfg) -> tuple[int, int]:
    """``(params, FLOPs)`` of the neck a standalone run trains, on the reference input of the search's
    neck cost (``raynas.search.neck_cost``: a black ``min_size`` square through the detector's body)."""
    from raynas.search.neck_cost import detector_cost

    cost = detector_cost(cfg.model, cfg.neck, cfg.head)
    return cost.neck_params, cost.neck_flops


def kept_row(measured: dict, run: str, seed: int, cfg) -> dict | None:
    """The kept row of ``run`` at ``seed`` if it was measured under this run's recipe (``cfg``), else None:
    a row of other data, width, workers or schedule is trained anew (or refused by the run folder)."""
    row = measured.get((run, seed))
    return row if row is not None and str(row.get("recipe")) == recipe_key(cfg) else None


def kept_seed_rows(out: Path, epochs: int) -> pd.DataFrame:
    """The per-seed rows of an earlier ``--retrain`` in ``out`` (empty if none), each whole and of this
    recipe: a row kept is not trained again, so a damaged file or one of another ``--epochs`` is refused;
    a row is reused only under its run's ``recipe`` key (``raynas.jobs.arms.recipe_key``: other data, width,
    workers or schedule train anew, or are refused by the run folder's own check)."""
    path = out / SEEDS_FILE
    if not path.is_file():
        return pd.DataFrame()
    fix = (
        "restore it (from git or experiments/results/strategies/), or delete it (the finished runs in "
        f"{out / 'runs'} are read back, not trained again)"
    )
    table = read_table(path, fix, complete=SEED_COMPLETE, numeric=SEED_NUMERIC)
    if not table["seed"].astype(float).map(float.is_integer).all():
        raise ConfigError(f"{path} has a seed that is not a whole number; {fix}")
    repeated = table[table.duplicated(["strategy", "seed"], keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        raise ConfigError(f"{path} has ({first['strategy']!r}, seed {first['seed']}) more than once; {fix}")
    other = sorted({int(e) for e in table["epochs"]} - {epochs})
    if other:
        raise ConfigError(
            f"{path} holds rows trained with --epochs {other[0]}; run with --epochs {other[0]}, or choose "
            "another --out"
        )
    return table.astype({"seed": int, "epochs": int})


def retrain(
    best_archs: dict[str, dict], supernet_cfg, settings: StrategiesSettings, out: Path
) -> tuple[pd.DataFrame, int]:
    """Each best architecture (once per network, :func:`network_plan`) and the FPN trained standalone,
    ``--seeds`` seeds, the evidence recipe: ``(per-seed rows, Train runs started)``. A (network, seed)
    with a row in ``strategies_seeds.csv`` is not trained again; the file is rewritten after every run,
    so an interrupted retraining leaves its partial table. Kept rows of more seeds than asked stay and
    count; those of a network a strategy no longer finds are dropped (their runs stay in ``runs/``)."""
    from raynas.io import atomic_write_text

    recipe = standalone_recipe(supernet_cfg, settings.epochs)
    plan = network_plan(best_archs, supernet_cfg.opanas, supernet_cfg.model.out_channels)
    kept = kept_seed_rows(out, settings.epochs).to_dict("records")
    measured = {(row["run"], row["seed"]): row for row in kept}
    found = {label: arm.slug for arm, labels in plan for label in labels}
    current = [row for row in kept if found.get(row["strategy"]) == row["run"]]
    labels_of = {arm.slug: labels for arm, labels in plan}
    archs = {
        arm.slug: json.dumps(arm.neck["arch"], sort_keys=True) if arm.neck else BASELINE_RUN
        for arm, _ in plan
    }

    def network_row(arm: Arm, seed: int, cfg, reported) -> dict:
        params, flops = neck_cost_of(cfg)
        return {"run": arm.slug, "seed": seed, "recipe": recipe_key(cfg), "split": reported.split,
                **{metric: reported.metrics.get(metric) for metric in METRICS}, "neck_params": params,
                "neck_flops": flops, "train_time_s": round(train_time_s(reported.metrics), 1)}  # fmt: skip

    def per_strategy(networks: list[dict]) -> list[dict]:
        """A row per strategy that found each network (a network found twice was trained once)."""
        return [
            {"strategy": label, "seed": row["seed"], "run": row["run"], "split": row["split"],
             "epochs": settings.epochs, "recipe": row["recipe"], **{k: row[k] for k in (*METRICS, *COSTS)},
             "arch": archs[row["run"]]}
            for row in networks for label in labels_of[row["run"]]
        ]  # fmt: skip

    def later(rows: list[dict]) -> list[dict]:
        """Kept rows of seeds this run has not reached yet: an interrupted retraining keeps them."""
        return not_yet_reached(pd.DataFrame(current), rows, ("strategy", "seed"))

    def write_partial(networks: list[dict], _: int) -> None:
        rows = per_strategy(networks)
        atomic_write_text(out / SEEDS_FILE, pd.DataFrame(rows + later(rows)).to_csv(index=False))

    def kept_network(arm: Arm, seed: int, cfg) -> dict | None:
        row = kept_row(measured, arm.slug, seed, cfg)
        if row is not None:
            print(
                f"== {' = '.join(labels_of[arm.slug])} ({arm.slug}), seed {seed}: kept from {SEEDS_FILE} =="
            )
        return row

    networks, started = train_arms(
        [arm for arm, _ in plan], settings.seeds,
        lambda arm, seed: arm_config(recipe, arm, seed, out, workers=settings.train_workers,
                                     use_gpu=settings.gpu, address=settings.address),
        network_row, write_partial, kept_network,
        lambda arm, seed: f"retrain {' = '.join(labels_of[arm.slug])} ({arm.slug}), seed {seed}",
    )  # fmt: skip
    write_partial(networks, started)  # also where every run was kept: rows of networks no strategy found go
    rows = per_strategy(networks)
    rows += later(rows)
    print(
        f"retraining: {started} Train run(s) started, {len(kept) - len(current)} kept row(s) of networks no "
        f"strategy found now dropped; per-seed rows: {out / SEEDS_FILE}"
    )
    return pd.DataFrame(rows), started


#: the per-strategy summary columns ``--retrain`` adds to strategies.csv
RETRAIN_COLUMNS = ("run", "seeds", "standalone_AP_mean", "standalone_AP_std", "neck_params", "neck_flops",
                   "diff", "diff_low", "diff_high", "p", "p_holm", "verdict", "same_network")  # fmt: skip


def seeds_summary(seeds: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per network, per strategy)`` from the per-seed rows: mean and std of each metric over seeds,
    the neck's cost, and the AP difference to the FPN with its 95 % interval, Welch's p and Holm's p
    (``raynas.studies.with_tests``). The tests are over the distinct networks (a network two strategies
    found is one arm: counted twice it would weaken Holm's correction); each strategy gets its network's
    row, and ``same_network`` names the strategies that share it."""
    seeds = seeds.copy()
    for metric in METRICS:
        seeds[metric] = pd.to_numeric(seeds[metric], errors="coerce")
    networks = seeds.drop_duplicates(["run", "seed"]).rename(columns={"run": "arm"})
    table = per_arm_summary(networks, METRICS, ("neck_params", "neck_flops"), BASELINE_RUN)
    found_by = seeds.drop_duplicates("strategy").groupby("run", sort=False)["strategy"].agg(list)
    table["same_network"] = [
        " = ".join(found_by[run]) if len(found_by[run]) > 1 else "" for run in table.index
    ]
    per_strategy = seeds.drop_duplicates("strategy")[["strategy", "run"]]
    per_strategy = per_strategy.merge(table, left_on="run", right_index=True, how="left")
    return table.rename_axis("run").reset_index(), per_strategy.reset_index(drop=True)


def retrain_markdown(networks: pd.DataFrame, per_strategy: pd.DataFrame, split: str) -> str:
    """The standalone table: one row per strategy (from ``strategies_seeds.csv``), its network's
    mean +/- std over seeds, cost and test against the FPN."""
    lines = [
        f"Standalone, per-seed rows in {SEEDS_FILE} (COCO AP (%) on {split}):",
        "",
        f"| strategy | network (run) | seeds | AP (mean +/- std) | AP50 | APs | APm | APl | neck params "
        f"| neck FLOPs | {TEST_HEADER} |",
        "|---" * 14 + "|",
    ]
    for row in per_strategy.to_dict("records"):
        cells = [row["strategy"], row["run"], str(int(row["seeds"])),
                 f"{fmt_cell(row['AP_mean'])} +/- {fmt_cell(row['AP_std'])}",
                 *(fmt_cell(row[f"{m}_mean"]) for m in ("AP50", "APs", "APm", "APl")),
                 f"{row['neck_params'] / 1e6:.3f} M", f"{row['neck_flops'] / 1e9:.3f} G",
                 *verdict_cells(row, scale=100, digits=1)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        verdict_note(networks) + " A network found by several strategies is one arm (one set of runs).",
    ]
    shared = [
        f"{row['same_network']} ({row['run']})" for row in networks.to_dict("records") if row["same_network"]
    ]
    lines.append("Strategies that found the same network: " + ("; ".join(shared) if shared else "none") + ".")
    return "\n".join(lines) + "\n"


def fmt_cell(value, scale: float = 100.0, spec: str = ".1f") -> str:
    """A table cell: ``value`` x ``scale`` in ``spec``, "-" where missing (AP fractions as %)."""
    return "-" if value is None or pd.isna(value) else format(scale * float(value), spec)
