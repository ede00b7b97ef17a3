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
from raynas.jobs.arms import train_time_s
from raynas.jobs.main_job import MainJob, main_job_configs
from raynas.jobs.strategy_retrain import (
    BASELINE,
    RETRAIN_COLUMNS,
    fmt_cell,
    kept_seed_rows,
    retrain,
    retrain_markdown,
    seeds_summary,
)
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
from raynas.studies.tables import check_table, read_table

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


@dataclass(frozen=True)
class StrategiesSettings:
    """What a side-by-side run is asked for: the ``--run`` flags of ``experiments/compare_strategies.py``,
    checked, the defaults that depend on others filled in."""

    out: Path  # the folder of every run and table
    data: str  # the main job's data root
    archs: Path  # the architectures with measured standalone AP the super-nets' tau is computed on
    proxy: str = "digits"
    budget: str = "default"  # the main job's --budget
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
        data=settings.data, proxy=settings.proxy, budget=settings.budget,
        out=out or settings.supernets or str(settings.out),
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
    from raynas.jobs.proxies import prepare_inputs
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
        cells = [row["strategy"], row["supernet"], fmt_cell(row["cost_s"], 1, ".0f"),
                 fmt_cell(row["evaluations"], 1, ".0f"), fmt_cell(row["yardstick_AP"]),
                 fmt_cell(row["own_score_AP"]), tau, row["derivation"]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "\nScores are COCO AP (%) of sub-nets with super-net weights on the search split; the common "
        f"yardstick is the {YARDSTICK} super-net. DARTS rows: own score = the relaxed network's val AP; "
        "their final weights are in darts_<relaxation>_alphas.json, and a derivation marked repaired "
        "means no path passed the rule on any input edge (the relaxation may not have converged)."
    )
    return "\n".join(lines) + "\n"


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
