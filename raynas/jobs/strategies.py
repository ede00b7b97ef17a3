"""OPANAS's search strategies side by side (Tables 5 / 6): the one-shot strategies on their super-nets,
DARTS and Fair DARTS, one budget, each strategy's search cost, its best architecture scored on a common
yardstick and, with ``retrain``, trained standalone per seed (``experiments/compare_strategies.py --run``
parses its flags into :class:`StrategiesSettings` and runs :func:`run`; what each row means: its
docstring). Also the folder mode's reading of result folders (:func:`load_tables`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError, check_writable_folder
from raynas.jobs.arms import Arm, arch_id, arm_config, recipe_key, standalone_recipe, train_arms, train_time_s
from raynas.jobs.main_job import MainJob, main_job_configs
from raynas.jobs.supernet_scores import (
    METRIC,
    kept_scores,
    load_archs,
    score_archs,
    scorer_options,
    seed_aps,
    variant_config,
)
from raynas.spaces.opanas import OPANASSpace
from raynas.studies import TEST_HEADER, per_arm_summary, verdict_cells, verdict_note
from raynas.studies.tables import check_table, not_yet_reached, read_table

#: the one-shot strategies: (label, super-net variant, search strategy)
ONE_SHOT = (
    ("OPANAS", "fair_gamma", "evolution"),
    ("random", "fair_gamma", "random"),
    ("Pareto", "fair_gamma", "pareto"),
    ("SPOS", "uniform_gamma", "evolution"),
    ("OPANAS, all paths trained", "fair_gamma_all", "evolution"),
)
DIFFERENTIABLE = (("DARTS", "softmax"), ("Fair DARTS", "sigmoid"))
YARDSTICK = "fair_gamma"
#: ``--retrain``'s per-seed rows, one per strategy and seed, in ``--out``: what strategies.md is computed from
SEEDS_FILE = "strategies_seeds.csv"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
BASELINE, BASELINE_RUN = "FPN", "fpn"
#: the cells every kept row has (a row cut short lacks its last, ``arch``); the metrics other than AP may be
#: empty where COCO did not report them
SEED_COMPLETE = ("strategy", "seed", "run", "split", "epochs", "recipe", "AP", "arch")
COSTS = ("neck_params", "neck_flops", "train_time_s")
SEED_NUMERIC = ("seed", "epochs", *METRICS, *COSTS)


@dataclass(frozen=True)
class StrategiesSettings:
    """What a side-by-side run is asked for: the ``--run`` flags of ``experiments/compare_strategies.py``,
    checked, the defaults that depend on others filled in."""

    out: Path  # the folder of every run and table
    data: str  # the main job's data root
    archs: Path  # the architectures with measured standalone AP the super-nets' tau is computed on
    proxy: str = "digits"
    supernets: str | None = None  # a folder of super-net runs to reuse (default: out)
    retrain: bool = False  # train each best architecture standalone
    seeds: int = 3  # retrain: seeds per network
    epochs: int = 3  # retrain: epochs of the one recipe
    search_images: int | None = None  # cap on search-split images scored
    scorers: int = 2
    train_workers: int = 2
    gpu: bool = False
    address: str | None = None
    smoke: bool = False


def folder_labels(directories: list[str]) -> list[str]:
    """A label per result folder that tells it apart from the others: the fewest trailing parts of its
    resolved path that differ (``x/search`` and ``y/search`` for two main jobs' ``<out>/search``), so no
    folder's results hide another's. A folder given twice is refused."""
    resolved = [Path(directory).resolve() for directory in directories]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            first = directories[resolved.index(path)]
            raise ConfigError(
                f"{first!r} and {directories[index]!r} are the same result folder; give each folder once"
            )
    for depth in range(1, max(len(path.parts) for path in resolved) + 1):
        labels = ["/".join(path.parts[-depth:]).lstrip("/") or "/" for path in resolved]
        if len(set(labels)) == len(labels):
            return labels
    return [str(path) for path in resolved]


def load_tables(directories: list[str], metric: str) -> dict[str, pd.DataFrame]:
    """Each strategy's ``results.csv`` of every folder, labelled ``<strategy>`` (one folder) or
    ``<folder label>/<strategy>``; each file checked (a user may have cut it short or edited it)."""
    tables = {}
    labels = folder_labels(directories)
    for directory, folder in zip(directories, labels):
        found = sorted(Path(directory).glob("*/results.csv"))
        if not found:
            raise FileNotFoundError(
                f"{directory!r} holds no <strategy>/results.csv; pass a search output folder"
            )
        for csv in found:
            label = csv.parent.name if len(directories) == 1 else f"{folder}/{csv.parent.name}"
            fix = "restore it, or move that strategy's folder away and run its search again"
            table = read_table(csv, fix)
            if metric not in table:
                columns = sorted(c for c in table.columns if c.startswith("AP"))
                raise ConfigError(
                    f"--metric {metric!r} is not a column of the results of [{label!r}] ({csv}); "
                    f"metric columns: {columns}"
                )
            # a row cut short lacks its architecture (the last columns); a score left empty is a failed one
            arch = tuple(column for column in table if re.fullmatch(r"e\d+_\d+", column))
            times = ("time_total_s",) if "time_total_s" in table else ()
            tables[label] = check_table(table, csv, fix, complete=arch, numeric=(metric, *times))
    return tables


def main_job(settings: StrategiesSettings, out: str | None = None) -> MainJob:
    """The main job whose super-nets and search budget the strategies share, in ``out`` (default
    ``settings.supernets``, else ``settings.out``)."""
    return MainJob(
        data=settings.data, proxy=settings.proxy, out=out or settings.supernets or str(settings.out),
        smoke=settings.smoke, gpu=settings.gpu, address=settings.address,
        train_workers=settings.train_workers, out_given=True, train_workers_given=True,
    )  # fmt: skip


def search_config(settings: StrategiesSettings, name: str, strategies: list[str]):
    _, search = main_job_configs(main_job(settings, out=str(settings.out)))
    return replace(
        search,
        name=name,
        strategies=strategies,
        num_scorers=settings.scorers,
        max_search_images=settings.search_images or search.max_search_images,
    )


def darts_config(supernet_cfg, relaxation: str, settings: StrategiesSettings):
    """DARTS on the OPANAS DAG with the super-net's data, model, schedule and neck options."""
    from raynas.training.config import OPANASDartsConfig, OPANASDartsSettings

    opanas = supernet_cfg.opanas
    return OPANASDartsConfig(
        data=supernet_cfg.data,
        model=supernet_cfg.model,
        optim=supernet_cfg.optim,
        run=replace(supernet_cfg.run, name=f"darts_{relaxation}", storage_path=str(settings.out)),
        darts=OPANASDartsSettings(
            relaxation=relaxation, num_nodes=opanas.num_nodes, deformable=opanas.deformable, norm=opanas.norm
        ),
    )


def yardstick_scores(
    checkpoint: str, archs: dict[str, dict], settings: StrategiesSettings, path: Path
) -> dict[str, float]:
    """The common-yardstick super-net's score of each strategy's best architecture (cached in ``path``)."""
    frame = pd.DataFrame([{"strategy": s, **a} for s, a in archs.items()])
    scored = score_archs(checkpoint, frame, path, **scorer_options(settings))
    return dict(zip(scored["strategy"], scored["supernet_" + METRIC]))


def check_run_inputs(settings: StrategiesSettings) -> None:
    """What ``--run`` would find wrong only after super-nets trained, checked before Ray starts: the
    folders, every config it builds, the scores and the per-seed rows it kept from an earlier run."""
    check_writable_folder(str(settings.out), "--out")
    if settings.supernets:
        check_writable_folder(settings.supernets, "--supernets")
    if settings.retrain:
        kept_seed_rows(settings.out, settings.epochs)
    for variant in dict.fromkeys(v for _, v, _ in ONE_SHOT):
        variant_config(variant, main_job(settings))
    search_config(settings, "search", ["evolution"])
    for variant in dict.fromkeys(v for _, v, _ in ONE_SHOT):
        kept_scores(settings.out / f"tau_scores_{variant}.csv")
    load_archs(str(settings.archs))
    kept_scores(settings.out / "yardstick_scores.csv")


def run(settings: StrategiesSettings) -> pd.DataFrame:
    from raynas.evaluation.ranking import rank_agreement_over_seeds
    from raynas.io import atomic_write_json, atomic_write_text
    from raynas.jobs.main_job import prepare_inputs
    from raynas.search.opanas import search_opanas
    from raynas.training.darts import search_opanas_darts
    from raynas.training.supernet import train_supernet

    out = settings.out
    started = time.perf_counter()
    space = OPANASSpace(5)
    prepare_inputs(variant_config(YARDSTICK, main_job(settings)), smoke=settings.smoke)
    fixed = load_archs(str(settings.archs))
    supernets, taus, curves, rows, derivations = {}, {}, {}, [], {}
    for variant in dict.fromkeys(v for _, v, _ in ONE_SHOT):
        print(f"== super-net {variant} ==", flush=True)
        result = train_supernet(variant_config(variant, main_job(settings)))
        supernets[variant] = (str(result.checkpoint_dir), train_time_s(result.metrics), result)
        scored = score_archs(
            supernets[variant][0], fixed, out / f"tau_scores_{variant}.csv", **scorer_options(settings)
        )
        # the fixed set's APs as loaded now (a reused score table may carry an older --archs' APs), the
        # bootstrap over architectures and their seeds as supernet_variants computes it
        taus[variant] = rank_agreement_over_seeds(scored["supernet_" + METRIC], seed_aps(fixed))
    base_cfg = variant_config(YARDSTICK, main_job(settings))
    best_archs: dict[str, dict] = {}
    for variant in dict.fromkeys(v for _, v, _ in ONE_SHOT):
        labels = [(label, strategy) for label, v, strategy in ONE_SHOT if v == variant]
        cfg = search_config(settings, f"search_{variant}", [s for _, s in labels])
        print(f"== search on {variant}: {cfg.strategies} ==", flush=True)
        outcome = search_opanas(supernets[variant][0], cfg, verbose=0, address=settings.address)
        summary = outcome["summary"].set_index("strategy")
        checkpoint, train_s, _ = supernets[variant]
        for label, strategy in labels:
            df = outcome["tables"][strategy]
            best = df.loc[df[METRIC].astype(float).fillna(-1).idxmax()]
            best_archs[label] = space.to_config(space.from_config(best.to_dict()))
            search_s = float(summary.loc[strategy, "wall_time_s"])
            curves[label] = (train_s, search_s, df[METRIC].astype(float).fillna(0.0).cummax().tolist())
            rows.append(
                {"strategy": label, "supernet": variant, "search": strategy,
                 "cost_s": round(train_s + search_s, 1), "evaluations": len(df),
                 "own_score_AP": float(best[METRIC]), "kendall_tau": taus[variant]["kendall_tau"],
                 "kendall_tau_low": taus[variant]["kendall_tau_low"],
                 "kendall_tau_high": taus[variant]["kendall_tau_high"]}
            )  # fmt: skip
    for label, relaxation in DIFFERENTIABLE:
        print(f"== {label} ==", flush=True)
        cfg = darts_config(base_cfg, relaxation, settings)
        result = search_opanas_darts(cfg)
        best_archs[label] = space.to_config(result.genotype)
        derivations[label] = write_alphas(result, cfg, out / f"darts_{relaxation}_alphas.json")
        rows.append(
            {"strategy": label, "supernet": "-", "search": f"darts ({relaxation})",
             "cost_s": round(train_time_s(result.metrics), 1), "evaluations": 1,
             "own_score_AP": float(result.metrics.get(METRIC, float("nan"))), "kendall_tau": float("nan"),
             "kendall_tau_low": float("nan"), "kendall_tau_high": float("nan")}
        )  # fmt: skip
    yardstick = yardstick_scores(supernets[YARDSTICK][0], best_archs, settings, out / "yardstick_scores.csv")
    for row in rows:
        row["yardstick_AP"] = float(yardstick[row["strategy"]])
        row["best_arch"] = json.dumps(best_archs[row["strategy"]], sort_keys=True)
        row["derivation"] = derivations.get(row["strategy"], "-")
    table = pd.DataFrame(rows)
    record: dict = {}
    text = markdown(table)
    if settings.retrain:
        seeds, record["retrain_runs_started"] = retrain(best_archs, base_cfg, settings, out)
        networks, per_strategy = seeds_summary(seeds)
        table = pd.concat(
            [table, pd.DataFrame([{"strategy": BASELINE, "supernet": "-", "search": "hand-made"}])]
        )
        summary = per_strategy.rename(
            columns={"AP_mean": "standalone_AP_mean", "AP_std": "standalone_AP_std"}
        )[["strategy", *RETRAIN_COLUMNS]]
        table = table.merge(summary, on="strategy", how="left").reset_index(drop=True)
        split = "/".join(sorted(set(seeds["split"].astype(str))))
        text += "\n" + retrain_markdown(networks, per_strategy, split)
    atomic_write_text(out / "strategies.csv", table.to_csv(index=False))
    atomic_write_text(out / "strategies.md", text)
    atomic_write_json(
        out / "strategies.json",
        {"rows": table.to_dict("records"), **record, "wall_time_s": round(time.perf_counter() - started, 1)},
    )
    plot_costs(curves, table, out / "strategies.png")
    return table


def write_alphas(result, cfg, path: Path) -> str:
    """The DARTS run's final architecture weights (softmax, or Fair DARTS's sigmoids, per edge and
    candidate) into ``path``, with its derivation; returns how the architecture was derived ("argmax",
    or "repaired (...)" when no path passed the rule and an input edge was forced: see
    ``raynas.spaces.opanas.mixed``). The architecture is the one the run saved; should the alphas,
    re-derived here, give another (a near tie decided otherwise on another device), the derivation says so."""
    import torch

    from raynas.io import atomic_write_json
    from raynas.spaces.opanas.mixed import derive

    state = result.load_state()
    alphas = torch.as_tensor(state["alphas"]).float()
    candidates = list(state["candidates"])
    relaxation = cfg.darts.relaxation
    weights = torch.softmax(alphas, dim=-1) if relaxation == "softmax" else torch.sigmoid(alphas)
    derivation = derive(weights, candidates, relaxation, cfg.darts.threshold)
    space = OPANASSpace(cfg.darts.num_nodes)
    how = derivation.how
    if derivation.arch != result.genotype:
        how += f"; re-derived here the alphas give {space.to_config(derivation.arch)} (a near tie)"
    atomic_write_json(
        path,
        {
            "relaxation": relaxation,
            "threshold": cfg.darts.threshold if relaxation == "sigmoid" else None,
            "candidates": candidates,
            "weights": {key: dict(zip(candidates, row)) for key, row in zip(space.keys, weights.tolist())},
            "alphas": dict(zip(space.keys, alphas.tolist())),
            "arch": space.to_config(result.genotype),
            "repaired": derivation.repaired,
            "derivation": how,
            "checkpoint": f"{result.run_dir.name}/{result.checkpoint_dir.name}",
        },
    )
    return how


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
                 f"{_fmt(row['AP_mean'])} +/- {_fmt(row['AP_std'])}",
                 *(_fmt(row[f"{m}_mean"]) for m in ("AP50", "APs", "APm", "APl")),
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


def markdown(table: pd.DataFrame) -> str:
    """The search table: one row per strategy, with how a DARTS row's architecture was derived."""
    lines = [
        "| strategy | super-net | search cost (s) | evaluations | score, common yardstick | own score "
        "| tau [95 % CI] | derivation |",
        "|---" * 8 + "|",
    ]
    for row in table.to_dict("records"):
        tau = (
            "-"
            if pd.isna(row["kendall_tau"])
            else (f"{row['kendall_tau']:.2f} [{row['kendall_tau_low']:.2f}, {row['kendall_tau_high']:.2f}]")
        )
        cells = [row["strategy"], row["supernet"], _fmt(row["cost_s"], 1, ".0f"),
                 _fmt(row["evaluations"], 1, ".0f"), _fmt(row["yardstick_AP"]), _fmt(row["own_score_AP"]),
                 tau, row["derivation"]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "\nScores are COCO AP (%) of sub-nets with super-net weights on the search split; the common "
        f"yardstick is the {YARDSTICK} super-net. DARTS rows: own score = the relaxed network's val AP; "
        "their final weights are in darts_<relaxation>_alphas.json, and a derivation marked repaired "
        "means no path passed the rule on any input edge (the relaxation may not have converged)."
    )
    return "\n".join(lines) + "\n"


def _fmt(value, scale: float = 100.0, spec: str = ".1f") -> str:
    return "-" if value is None or pd.isna(value) else format(scale * float(value), spec)


def plot_costs(curves: dict, table: pd.DataFrame, path: Path) -> None:
    """Best-so-far own score against search cost (super-net training, then the evaluations spread over
    the search's wall time); DARTS runs are one point at their training cost (common yardstick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, (train_s, search_s, best) in curves.items():
        xs = [train_s + search_s * (k + 1) / len(best) for k in range(len(best))]
        ax.plot(xs, [100 * b for b in best], label=label)
    for row in table.to_dict("records"):
        if row["supernet"] == "-" and pd.notna(row["yardstick_AP"]):  # the DARTS runs (not the FPN)
            ax.scatter([row["cost_s"]], [100 * row["yardstick_AP"]], marker="s", label=row["strategy"])
    ax.set_xlabel("search cost (wall seconds on this machine)")
    ax.set_ylabel(f"best {METRIC} so far (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
