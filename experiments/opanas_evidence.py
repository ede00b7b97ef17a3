"""Evidence for OPANAS on the proxy: the searched neck against the FPN, random and single-path necks.

    python experiments/opanas_evidence.py --search-dir runs/opanas_ea          # after the main job
    python experiments/opanas_evidence.py --search-dir runs/opanas_ea --kind retinanet
    python experiments/opanas_evidence.py --smoke                               # tiny, for CI

The paper's Tables 2, 4 and 6 on the digits proxy. Every arm is trained standalone from the same
pretrained body with one recipe (the super-net's data and model, ``--epochs`` epochs, decay in the last
one), on Ray Train, once per seed (``--seeds``, default 3), and evaluated on val:

- ``FPN``: torchvision's FPN at the super-net's width (the hand-made baseline);
- ``OPA-FPN (evolution)`` / ``OPA-FPN (random search)``: the best architectures the main job's two
  strategies found with the same number of super-net evaluations;
- ``random arch k``: ``--random-archs`` architectures drawn uniformly and trained fully (Table 6's
  random baseline; reported each and as their mean and best);
- ``all <path>``: every edge the same parameterised path (Table 4's single-path FPNs);
- ``OPA-FPN (evolution) @c``: the evolved neck at the width whose neck + head parameters are nearest the
  FPN's (within 5 % where the detector's head allows such a width), when that width differs.

Outputs in ``--out``: ``evidence.csv`` (one row per arm and seed), ``evidence.md`` (mean +/- std, the
difference to the FPN with its 95 % interval, Welch's and Holm's p), ``evidence.png`` (AP with error
bars; AP vs FLOPs). Resumable: each finished run is skipped on re-run, an interrupted one continues.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from raynas.config import ConfigError
from raynas.errors import run_main
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.arms import Arm, arm_config, standalone_recipe
from raynas.jobs.main_job import KINDS
from raynas.spaces.base import arch_from_json
from raynas.spaces.opanas import PARAMETERISED_PATHS, OPANASSpace
from raynas.studies import TEST_HEADER, verdict_cells, verdict_note, with_tests
from raynas.studies.flags import check_counts
from raynas.training.config import SupernetConfig, TrainConfig

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
BASELINE = "FPN"
WIDTH_TOLERANCE = 0.05
#: the main job's search strategies whose best architectures are arms: (strategy, label)
STRATEGIES = (("evolution", "OPA-FPN (evolution)"), ("random", "OPA-FPN (random search)"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--search-dir", help="the main job's --out (holds supernet/ and search/)")
    parser.add_argument("--out", default="runs/opanas_evidence", help="where runs and tables go")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm")
    parser.add_argument("--random-archs", type=int, default=3, help="random architectures trained fully")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the one recipe (decay in the last)")
    parser.add_argument("--kind", default=None, choices=KINDS, help="detector (default: the super-net's)")
    parser.add_argument("--no-single-path", action="store_true", help="leave out the single-path necks")
    parser.add_argument("--train-workers", type=int, default=2, help="Ray Train workers per run")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--address", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny: runs the main job's smoke first (CI)")
    return parser


def neck_params_and_flops(cfg: TrainConfig, num_classes: int) -> tuple[int, int]:
    """Parameters and FLOPs of neck + head (what the necks change) at the recipe's image size."""
    import torch

    from raynas.evaluation import count_flops, count_params
    from raynas.models.build import build_model

    model = build_model(replace(cfg.model, backbone_weights=None), num_classes, cfg.neck, cfg.head).eval()
    size = cfg.model.min_size
    with torch.inference_mode():
        features = model.backbone.body(torch.zeros(1, 3, size, size))
    heads = [model.head] if hasattr(model, "head") else [model.rpn, model.roi_heads]  # two-stage: RPN + RoI
    params = count_params(model.backbone.neck) + sum(count_params(head) for head in heads)
    return params, count_flops(model.backbone.neck, features)


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
    supernet: SupernetConfig, best: dict[str, dict], args: argparse.Namespace, num_classes: int
) -> list[Arm]:
    """The arms, from the best architecture of each strategy (``best``: strategy -> architecture config)."""
    from raynas.models.build import searched_neck_spec

    space = OPANASSpace(num_nodes=supernet.opanas.num_nodes)
    width = supernet.model.out_channels
    result = [Arm(BASELINE, "fpn", None, width)]
    for strategy, label in STRATEGIES:
        result.append(
            Arm(label, f"opa_{strategy}", searched_neck_spec(best[strategy], supernet.opanas), width)
        )
    rng = random.Random(2021)
    for k in range(1, args.random_archs + 1):
        arch = space.sample(rng)
        result.append(
            Arm(
                f"random arch {k}",
                f"random_{k}",
                searched_neck_spec(space.to_config(arch), supernet.opanas),
                width,
            )
        )
    if args.smoke:
        return result[:2]  # the FPN and the evolved neck: every part of the experiment, in seconds
    if not args.no_single_path:
        for path in PARAMETERISED_PATHS:
            config = {key: path for key in space.keys}
            result.append(
                Arm(f"all {path}", f"all_{path}", searched_neck_spec(config, supernet.opanas), width)
            )
    recipe = recipe_config(supernet, args)
    fpn_params, _ = neck_params_and_flops(recipe, num_classes)
    evolved = result[1].neck
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


def recipe_config(supernet: SupernetConfig, args: argparse.Namespace) -> TrainConfig:
    """The one recipe of every arm: the super-net's data and model, ``--epochs`` with decay in the last."""
    return standalone_recipe(supernet, args.epochs, args.kind)


def run_config(recipe: TrainConfig, arm: Arm, seed: int, args: argparse.Namespace, out: Path) -> TrainConfig:
    return arm_config(
        recipe, arm, seed, out, workers=args.train_workers, use_gpu=args.gpu, address=args.address
    )


def summarize_evidence(rows: pd.DataFrame) -> pd.DataFrame:
    """Per arm: mean and std of each metric over seeds, and the AP difference to the FPN with its 95 %
    interval, Welch's p and Holm's p over the arms of the table (``raynas.studies.with_tests``)."""
    grouped = rows.groupby("arm", sort=False)
    table = grouped[list(METRICS)].mean().add_suffix("_mean")
    table = table.join(grouped[list(METRICS)].std(ddof=1).add_suffix("_std"))
    table = table.join(grouped[["params", "flops"]].first()).join(grouped.size().rename("seeds"))
    if BASELINE in table.index:
        table = with_tests(table, rows, "AP", BASELINE)
    return table.reset_index()


def random_summary(rows: pd.DataFrame) -> dict[str, float]:
    """Table 6's random baseline: the mean and the best of the random architectures' mean APs."""
    per_arch = rows[rows["arm"].str.startswith("random arch")].groupby("arm")["AP"].mean()
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
            f"{row['flops'] / 1e9:.2f} G",
            *verdict_cells(row, scale=100, digits=1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", verdict_note(table), ""]
    lines.append(
        f"Random architectures (Table 6's baseline): mean AP {100 * extra['random_archs_mean_AP']:.1f}, "
        f"best {100 * extra['random_archs_best_AP']:.1f}. Seeds per arm: {int(table['seeds'].min())}."
    )
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(table))
    bars.bar(x, 100 * table["AP_mean"], yerr=100 * table["AP_std"].fillna(0), capsize=3)
    bars.set_xticks(x, table["arm"], rotation=45, ha="right", fontsize=8)
    bars.set_ylabel("AP on val (%)")
    scatter.scatter(table["flops"] / 1e9, 100 * table["AP_mean"])
    for _, row in table.iterrows():
        scatter.annotate(row["arm"], (row["flops"] / 1e9, 100 * row["AP_mean"]), fontsize=7)
    scatter.set_xlabel("neck GFLOPs")
    scatter.set_ylabel("AP on val (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def smoke_search_dir(out: Path, args: argparse.Namespace) -> Path:
    """A smoke run of the main job (no reference) whose search the smoke evidence reads."""
    from raynas.jobs.main_job import MainJob, check_main_job, run_main_job

    search_dir = out / "search_run"
    job = MainJob(
        data=str(out / "data"),
        out=str(search_dir),
        smoke=True,
        reference=False,
        train_workers=args.train_workers,
        address=args.address,
        out_given=True,
        train_workers_given=True,
    )
    run_main_job(job, check_main_job(job))
    return search_dir


def write_outputs(
    rows: list[dict], args: argparse.Namespace, out: Path, launched: int, started: float
) -> dict:
    """``evidence.csv`` / ``.md`` / ``.png`` / ``.json`` from the rows so far (rewritten after every run, so
    an interrupted experiment leaves its partial table)."""
    frame = pd.DataFrame(rows)
    for metric in METRICS:
        frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    table = summarize_evidence(frame)
    has_random = frame["arm"].str.startswith("random arch").any()
    nan = float("nan")
    extra = (
        random_summary(frame) if has_random else {"random_archs_mean_AP": nan, "random_archs_best_AP": nan}
    )
    atomic_write_text(out / "evidence.csv", frame.to_csv(index=False))
    atomic_write_text(out / "evidence.md", markdown(table, extra))
    plot(table, out / "evidence.png")
    record = {
        **extra,
        "runs_started": launched,
        "runs": len(frame),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "evidence.json", record)
    return record


def search_inputs(search_dir: Path, args: argparse.Namespace) -> tuple[SupernetConfig, int, dict[str, dict]]:
    """What the experiment takes from the main job's ``--out``: its super-net's config and number of
    classes and each strategy's best architecture, every file checked (a user may have edited one)."""
    from raynas.checkpoints import load_state
    from raynas.search.pool import supernet_config

    checkpoints = sorted(p for p in (search_dir / "supernet").glob("checkpoint_*") if p.is_dir())
    if not checkpoints:
        raise ConfigError(
            f"--search-dir {str(search_dir)!r} holds no supernet/checkpoint_*; pass the main job's --out"
        )
    state = load_state(checkpoints[-1])
    supernet = supernet_config(state, checkpoints[-1])
    recipe_config(supernet, args)  # --epochs and --kind checked on the super-net's recipe
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
    return supernet, state["num_classes"], best


def run(args: argparse.Namespace, inputs: tuple[SupernetConfig, int, dict[str, dict]] | None) -> dict:
    """The experiment; ``inputs`` from :func:`search_inputs` (``None`` with ``--smoke``: the main job's
    smoke run makes them first)."""
    from raynas.training.cluster import ensure_ray
    from raynas.training.run_folder import finished_run
    from raynas.training.standalone import train

    out = Path(args.out)
    ensure_ray(args.address)
    started = time.perf_counter()
    supernet, num_classes, best = inputs or search_inputs(smoke_search_dir(out, args), args)
    recipe = recipe_config(supernet, args)
    rows, launched = [], 0
    plan = arms(supernet, best, args, num_classes)
    costs = {
        arm.slug: neck_params_and_flops(
            replace(recipe, model=replace(recipe.model, out_channels=arm.out_channels), neck=arm.neck),
            num_classes,
        )
        for arm in plan
    }
    for seed in range(args.seeds):  # seed by seed: an interrupted run leaves every arm at some seeds
        for arm in plan:
            params, flops = costs[arm.slug]
            cfg = run_config(recipe, arm, seed, args, out)
            launched += (
                finished_run(Path(cfg.run.storage_path).resolve() / cfg.run.name, cfg.optim.epochs) is None
            )
            print(f"== {arm.label}, seed {seed} ==", flush=True)
            result = train(cfg)
            rows.append(
                {
                    "arm": arm.label,
                    "seed": seed,
                    **{k: result.metrics.get(k) for k in METRICS},
                    "params": params,
                    "flops": flops,
                    "out_channels": arm.out_channels,
                    "neck": json.dumps(arm.neck, sort_keys=True) if arm.neck else "fpn",
                    "train_time_s": result.metrics.get("epoch_time_s", 0) * result.metrics.get("epoch", 0),
                }
            )
            record = write_outputs(rows, args, out, launched, started)  # after every run: partial tables
    print("\n" + (out / "evidence.md").read_text())
    return record


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("opanas_evidence", lambda: check_and_run(args))


def check_and_run(args: argparse.Namespace) -> int:
    """Every flag and every file the run reads checked here, before Ray starts."""
    from raynas.config import check_writable_folder
    from raynas.training.cluster import ray_session

    check_counts(args, {"seeds": 1, "random_archs": 0, "epochs": 1, "train_workers": 1})
    if args.smoke:  # the given values were checked, and give way to the smoke budget
        args.seeds, args.random_archs, args.epochs, args.no_single_path = 1, 0, 1, True
        args.train_workers = 1
    elif not args.search_dir:
        raise ConfigError("--search-dir is required (the main job's --out, e.g. runs/opanas_ea), or --smoke")
    check_writable_folder(args.out, "--out")
    inputs = search_inputs(Path(args.search_dir), args) if args.search_dir else None
    with ray_session(args.address):
        record = run(args, inputs)
    print(
        f"{record['runs']} runs ({record['runs_started']} trained now) in {record['wall_time_s']:.0f} s; "
        f"results: {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
