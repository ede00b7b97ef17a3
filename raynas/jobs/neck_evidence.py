"""OPANAS's evidence table: the searched neck against torchvision's FPN, random, single-path and
cost-matched necks, each arm trained standalone with one recipe and several seeds (the paper's Tables 2,
4 and 6; ``experiments/opanas_evidence.py`` parses its flags into :class:`EvidenceSettings` and runs
:func:`run`).

What each arm is, how identical networks are trained once and what the outputs are: the script's
docstring. Here: the arms from the main job's search folder (:func:`search_inputs`), the cost-matched
searches (:func:`cost_matched_archs`), the arms x seeds runs (:func:`raynas.jobs.arms.train_arms`) and the
table (:func:`write_outputs`).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.arms import Arm, ReportedRun, arm_config, standalone_recipe, train_arms, train_time_s
from raynas.jobs.cost_matched import cost_matched_archs, fpn_neck_flops, main_search_config
from raynas.search.opanas_config import OPANASSearchConfig
from raynas.search.search_folder import read_finished
from raynas.spaces.base import arch_from_json
from raynas.spaces.opanas import PARAMETERISED_PATHS, OPANASSpace
from raynas.studies import TEST_HEADER, per_arm_summary, verdict_cells, verdict_note
from raynas.training.config import SupernetConfig, TrainConfig

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
BASELINE = "FPN"
WIDTH_TOLERANCE = 0.05
#: the main job's search strategies whose best architectures are arms: (strategy, label)
STRATEGIES = (("evolution", "OPA-FPN (evolution)"), ("random", "OPA-FPN (random search)"))
#: the arms at the FPN's cost: (key of the architecture, label)
COST_MATCHED = (
    ("flops_matched", "OPA-FPN (evolution, FLOPs <= FPN)"),
    ("pareto_nearest", "OPA-FPN (NSGA-II, nearest FPN FLOPs)"),
)
#: joins the labels of arms that are one network
SAME = " = "


@dataclass(frozen=True)
class EvidenceSettings:
    """What an evidence table is asked for: the flags of ``experiments/opanas_evidence.py``, checked."""

    out: Path  # where runs and tables go
    seeds: int = 3  # per arm
    random_archs: int = 3  # random architectures trained fully
    epochs: int = 3  # of the one recipe (decay in the last)
    kind: str | None = None  # the detector (None: the super-net's)
    single_path: bool = True  # the all-<path> necks (Table 4)
    cost_matched: bool = True  # the arms searched at the FPN's FLOPs
    train_workers: int = 2  # Ray Train workers per run
    gpu: bool = False
    address: str | None = None
    smoke: bool = False  # the FPN, the evolved and the cost-matched necks only


def neck_params_and_flops(cfg: TrainConfig, num_classes: int) -> tuple[int, int]:
    """Parameters of neck + head (what the necks change) and FLOPs of the neck at the recipe's image size,
    on the reference input the search's FLOPs constraint uses (``raynas.search.neck_cost``)."""
    from raynas.search.neck_cost import detector_cost

    cost = detector_cost(cfg.model, cfg.neck, cfg.head, num_classes)
    return cost.neck_params + cost.head_params, cost.neck_flops


def matched_width(
    cfg: TrainConfig, neck: dict, target: int, num_classes: int, candidates: list[int]
) -> tuple[int, int]:
    """The width among ``candidates`` (ascending) whose neck + head parameters are nearest ``target``:
    ``(c, params)``. Parameters grow with the width, so a bisection needs a handful of builds."""

    def params_at(width: int) -> int:
        model = replace(cfg.model, out_channels=width)
        return neck_params_and_flops(replace(cfg, model=model, neck=neck), num_classes)[0]

    low, high = 0, len(candidates) - 1
    while high - low > 1:
        middle = (low + high) // 2
        if params_at(candidates[middle]) < target:
            low = middle
        else:
            high = middle
    options = [(width, params_at(width)) for width in {candidates[low], candidates[high]}]
    return min(options, key=lambda option: (abs(option[1] - target), option[0]))


def width_candidates(kind: str, width: int) -> list[int]:
    """Widths a detector's head accepts, up to twice ``width``: torchvision's FCOS head normalises with
    GroupNorm(32, c), so multiples of 32 from 64 (raynas.models.detector); the other heads take any width."""
    low, step = (64, 32) if kind == "fcos" else (1, 1)
    return list(range(low, 2 * width + 1, step))


def arms(
    supernet: SupernetConfig, best: dict[str, dict], settings: EvidenceSettings, num_classes: int
) -> list[Arm]:
    """The arms, from the best architecture of each strategy and the cost-matched architectures (``best``:
    strategy or :data:`COST_MATCHED` key -> architecture config; a cost-matched key absent: no such arm)."""
    from raynas.models.build import searched_neck_spec

    space = OPANASSpace(num_nodes=supernet.opanas.num_nodes)
    width = supernet.model.out_channels
    result = [Arm(BASELINE, "fpn", None, width)]
    for key, label in STRATEGIES + COST_MATCHED:
        if key in best:
            result.append(Arm(label, f"opa_{key}", searched_neck_spec(best[key], supernet.opanas), width))
    rng = random.Random(2021)
    for k in range(1, settings.random_archs + 1):
        arch = space.sample(rng)
        result.append(
            Arm(
                f"random arch {k}",
                f"random_{k}",
                searched_neck_spec(space.to_config(arch), supernet.opanas),
                width,
            )
        )
    if settings.smoke:  # the FPN, the evolved and the cost-matched necks: every part of the experiment
        return [arm for arm in result if arm.slug != "opa_random"]
    if settings.single_path:
        for path in PARAMETERISED_PATHS:
            config = {key: path for key in space.keys}
            result.append(
                Arm(f"all {path}", f"all_{path}", searched_neck_spec(config, supernet.opanas), width)
            )
    recipe = recipe_config(supernet, settings)
    fpn_params, _ = neck_params_and_flops(recipe, num_classes)
    evolved = next(arm.neck for arm in result if arm.slug == "opa_evolution")
    c, params = matched_width(
        recipe, evolved, fpn_params, num_classes, width_candidates(recipe.model.kind, width)
    )
    within = abs(params - fpn_params) <= WIDTH_TOLERANCE * fpn_params
    print(
        f"width-matched OPA-FPN: {c} channels, {params / 1e6:.2f} M neck+head params vs the FPN's "
        f"{fpn_params / 1e6:.2f} M ({'within' if within else 'NOT within'} {WIDTH_TOLERANCE:.0%}; "
        f"{recipe.model.kind} heads take widths {width_candidates(recipe.model.kind, width)[:4]}...)"
    )
    if c != width:
        result.append(Arm(f"OPA-FPN (evolution) @{c}", f"opa_evolution_at{c}", evolved, c))
    return result


def network_key(arm: Arm) -> tuple:
    """What makes two arms one network: the canonical architecture (``OPANASSpace.canonical``: the edges
    of dead nodes never run, so encodings that differ only there compute the same thing), the neck's
    options and the width. Torchvision's FPN is keyed apart from every OPA-FPN."""
    if arm.neck is None:
        return ("fpn", arm.out_channels)
    space = OPANASSpace(num_nodes=arm.neck["num_nodes"])
    canonical = space.canonical(space.from_config(arm.neck["arch"]))
    options = json.dumps({key: value for key, value in arm.neck.items() if key != "arch"}, sort_keys=True)
    return ("opa_fpn", options, canonical.edges, arm.out_channels)


def merge_identical(plan: list[Arm]) -> list[Arm]:
    """One arm per network, in the plan's order, named by every arm that is that network (``a = b``) and run
    under the first one's folders: the same network trained twice would be reported as two results."""
    groups: dict[tuple, list[Arm]] = {}
    for arm in plan:
        groups.setdefault(network_key(arm), []).append(arm)
    return [replace(members[0], label=SAME.join(arm.label for arm in members)) for members in groups.values()]


def recipe_config(supernet: SupernetConfig, settings: EvidenceSettings) -> TrainConfig:
    """The one recipe of every arm: the super-net's data and model, ``--epochs`` with decay in the last."""
    return standalone_recipe(supernet, settings.epochs, settings.kind)


def run_config(recipe: TrainConfig, arm: Arm, seed: int, settings: EvidenceSettings) -> TrainConfig:
    """The run of ``arm`` at ``seed`` under ``settings.out``."""
    return arm_config(
        recipe, arm, seed, settings.out, workers=settings.train_workers, use_gpu=settings.gpu,
        address=settings.address,
    )  # fmt: skip


def summarize_evidence(rows: pd.DataFrame) -> pd.DataFrame:
    """Per arm: mean and std of each metric over seeds, and the AP difference to the FPN with its 95 %
    interval, Welch's p and Holm's p over the arms of the table (``raynas.studies.with_tests``)."""
    return per_arm_summary(rows, METRICS, ("params", "flops"), BASELINE).reset_index()


def is_random_arch(label: str) -> bool:
    """A random architecture's row (alone, or one of the names of a merged network)."""
    return any(name.startswith("random arch") for name in label.split(SAME))


def random_summary(rows: pd.DataFrame) -> dict[str, float]:
    """Table 6's random baseline: the mean and the best of the random architectures' mean APs."""
    per_arch = rows[rows["arm"].map(is_random_arch)].groupby("arm")["AP"].mean()
    return {"random_archs_mean_AP": float(per_arch.mean()), "random_archs_best_AP": float(per_arch.max())}


def markdown(table: pd.DataFrame, extra: dict) -> str:
    lines = [
        f"| arm | AP (mean +/- std) | AP50 | APs | APm | neck+head params | neck FLOPs | {TEST_HEADER} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, row in table.iterrows():
        cells = [
            str(row["arm"]),
            f"{100 * row['AP_mean']:.1f} +/- {100 * row['AP_std']:.1f}",
            f"{100 * row['AP50_mean']:.1f}",
            f"{100 * row['APs_mean']:.1f}",
            f"{100 * row['APm_mean']:.1f}",
            f"{row['params'] / 1e6:.2f} M",
            f"{row['flops'] / 1e9:.3f} G",
            *verdict_cells(row, scale=100, digits=1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", verdict_note(table), ""]
    if np.isfinite(extra.get("random_archs_mean_AP", np.nan)):
        lines.append(
            f"Random architectures (Table 6's baseline): mean AP {100 * extra['random_archs_mean_AP']:.1f}, "
            f"best {100 * extra['random_archs_best_AP']:.1f}."
        )
    if extra.get("fpn_neck_flops"):
        lines.append(
            f"Cost-matched arms: the FLOPs-matched evolution searched under the FPN's neck FLOPs, "
            f"{extra['fpn_neck_flops'] / 1e9:.4f} G (the search's own constraint); the NSGA-II arm is the "
            "member of its front nearest that."
        )
    merged = [label for label in table["arm"] if SAME in label]
    if merged:
        lines.append(
            "Identical networks (one canonical architecture at one width), trained once and shown once: "
            + "; ".join(merged)
            + "."
        )
    split = extra.get("split", "val")
    lines.append(f"Seeds per arm: {int(table['seeds'].min())}; metrics on the {split} split.")
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path: Path, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(table))
    bars.bar(x, 100 * table["AP_mean"], yerr=100 * table["AP_std"].fillna(0), capsize=3)
    bars.set_xticks(x, table["arm"], rotation=45, ha="right", fontsize=8)
    bars.set_ylabel(f"AP on {split} (%)")
    scatter.scatter(table["flops"] / 1e9, 100 * table["AP_mean"])
    for _, row in table.iterrows():
        scatter.annotate(row["arm"], (row["flops"] / 1e9, 100 * row["AP_mean"]), fontsize=7)
    scatter.set_xlabel("neck GFLOPs")
    scatter.set_ylabel(f"AP on {split} (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def smoke_search_dir(out: Path, settings: EvidenceSettings) -> Path:
    """A smoke run of the main job (no reference) whose search the smoke evidence reads."""
    from raynas.jobs.main_job import MainJob, check_main_job, run_main_job

    search_dir = out / "search_run"
    job = MainJob(
        data=str(out / "data"),
        out=str(search_dir),
        smoke=True,
        reference=False,
        train_workers=settings.train_workers,
        address=settings.address,
        out_given=True,
        train_workers_given=True,
    )
    run_main_job(job, check_main_job(job))
    return search_dir


def write_outputs(
    rows: list[dict], out: Path, launched: int, started: float, fpn_neck_flops: int | None
) -> dict:
    """``evidence.csv`` / ``.md`` / ``.png`` / ``.json`` from the rows so far (rewritten after every run, so
    an interrupted experiment leaves its partial table)."""
    frame = pd.DataFrame(rows)
    for metric in METRICS:
        frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    table = summarize_evidence(frame)
    has_random = frame["arm"].map(is_random_arch).any()
    nan = float("nan")
    extra = (
        random_summary(frame) if has_random else {"random_archs_mean_AP": nan, "random_archs_best_AP": nan}
    )
    extra["fpn_neck_flops"] = fpn_neck_flops
    extra["split"] = "/".join(sorted(set(frame["split"].dropna()))) if "split" in frame else ""
    extra["split"] = extra["split"] or "val"
    atomic_write_text(out / "evidence.csv", frame.to_csv(index=False))
    atomic_write_text(out / "evidence.md", markdown(table, extra))
    plot(table, out / "evidence.png", extra["split"])
    record = {
        **extra,
        "runs_started": launched,
        "runs": len(frame),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "evidence.json", record)
    return record


@dataclass(frozen=True)
class Inputs:
    """What the experiment takes from the main job's ``--out``, every file checked."""

    supernet: SupernetConfig
    num_classes: int
    checkpoint: Path  # the super-net the cost-matched searches score on
    best: dict[str, dict]  # strategy -> its best architecture's config
    search: OPANASSearchConfig | None = None  # the main job's search settings; None: no cost-matched arms
    pareto: pd.DataFrame | None = None  # the main job's finished NSGA-II table, if it ran one
    fpn_flops: int | None = None  # the FPN's neck FLOPs as the search's constraint counts them


def search_inputs(search_dir: Path, settings: EvidenceSettings) -> Inputs:
    """What the experiment takes from the main job's ``--out``: its super-net's config and number of
    classes, each strategy's best architecture and (for the cost-matched arms) its search settings and
    NSGA-II table, every file checked (a user may have edited one)."""
    from raynas.checkpoints import load_state
    from raynas.search.pool import supernet_config

    checkpoints = sorted(p for p in (search_dir / "supernet").glob("checkpoint_*") if p.is_dir())
    if not checkpoints:
        raise ConfigError(
            f"--search-dir {str(search_dir)!r} holds no supernet/checkpoint_*; pass the main job's --out"
        )
    state = load_state(checkpoints[-1])
    supernet = supernet_config(state, checkpoints[-1])
    recipe_config(supernet, settings)  # --epochs and --kind checked on the super-net's recipe
    space = OPANASSpace(num_nodes=supernet.opanas.num_nodes)
    best = {}
    for strategy, _ in STRATEGIES:
        path = search_dir / "search" / strategy / "best_arch.json"
        if not path.is_file():
            raise ConfigError(
                f"--search-dir {str(search_dir)!r} has no search/{strategy}/best_arch.json; run the main job "
                "(opanas_ea.py) with the evolution and random strategies to the end first"
            )
        try:
            best[strategy] = space.to_config(arch_from_json(space, path.read_text()))
        except ValueError as err:
            raise ConfigError(f"{path}: {err}; restore it, or run the main job's search again") from err
    inputs = Inputs(supernet, state["num_classes"], checkpoints[-1], best)
    if not settings.cost_matched:
        return inputs
    if settings.kind is not None and settings.kind != supernet.model.kind:
        raise ConfigError(
            f"--kind {settings.kind} is not the super-net's detector ({supernet.model.kind}), on which the "
            "cost-matched arms are searched: their FLOPs limit would be another detector's FPN; pass "
            "--no-cost-matched, or leave --kind out"
        )
    search = main_search_config(search_dir)
    pareto = search_dir / "search" / "pareto"
    table = read_finished(pareto, "pareto", search.metric)[0] if (pareto / "summary.json").is_file() else None
    flops = fpn_neck_flops(supernet, inputs.num_classes)
    return replace(inputs, search=search, pareto=table, fpn_flops=flops)


def evidence_row(arm: Arm, seed: int, reported: ReportedRun, cost: tuple[int, int]) -> dict:
    """One row of ``evidence.csv``: an arm (every label of its network) at one seed, its metrics on the
    split the table reports (``split``: test where the data have one) and its val AP."""
    params, flops = cost
    metrics = reported.metrics
    return {
        "arm": arm.label,
        "seed": seed,
        "split": reported.split,
        **{k: metrics.get(k) for k in METRICS},
        "val_AP": metrics.get("val_AP"),
        "params": params,
        "flops": flops,
        "out_channels": arm.out_channels,
        "neck": json.dumps(arm.neck, sort_keys=True) if arm.neck else "fpn",
        "train_time_s": train_time_s(metrics),
    }


def run(settings: EvidenceSettings, inputs: Inputs | None) -> dict:
    """The experiment; ``inputs`` from :func:`search_inputs` (``None`` with ``--smoke``: the main job's
    smoke run makes them first)."""
    from raynas.training.cluster import ensure_ray

    out = settings.out
    ensure_ray(settings.address)
    started = time.perf_counter()
    inputs = inputs or search_inputs(smoke_search_dir(out, settings), settings)
    supernet, num_classes = inputs.supernet, inputs.num_classes
    best = dict(inputs.best)
    if inputs.search is not None:
        best.update(cost_matched_archs(inputs, settings))
    recipe = recipe_config(supernet, settings)
    plan = merge_identical(arms(supernet, best, settings, num_classes))
    for arm in plan:
        if SAME in arm.label:
            print(f"one network, trained once: {arm.label}")
    costs = {
        arm.slug: neck_params_and_flops(
            replace(recipe, model=replace(recipe.model, out_channels=arm.out_channels), neck=arm.neck),
            num_classes,
        )
        for arm in plan
    }
    rows, launched = train_arms(  # the tables written after every run: partial tables as runs finish
        plan, settings.seeds, lambda arm, seed: run_config(recipe, arm, seed, settings),
        lambda arm, seed, cfg, reported: evidence_row(arm, seed, reported, costs[arm.slug]),
        lambda rows, launched: write_outputs(rows, out, launched, started, inputs.fpn_flops),
    )  # fmt: skip
    record = write_outputs(rows, out, launched, started, inputs.fpn_flops)
    print("\n" + (out / "evidence.md").read_text())
    return record
