"""Compare search strategies: existing result folders, or a full side-by-side run (OPANAS Tables 5/6).

    python experiments/compare_strategies.py runs/opanas_ea/search [more/search/dirs ...] [--out cmp.png]
    python experiments/compare_strategies.py --run                 # ~25 min, super-nets reused
    python experiments/compare_strategies.py --run --retrain       # + 3-seed standalone training of each best
    python experiments/compare_strategies.py --run --smoke         # tiny data (CI)

Folder mode: a result folder is what ``search_opanas`` writes (one sub-folder per strategy with
results.csv); prints the summary table and plots best-so-far curves.

``--run`` mode runs every strategy with the main job's data, pretrained body and 4-epoch budget
(``experiments/opanas_ea.py``):

* ``OPANAS``: fair sampling + gamma super-net, evolutionary search;
* ``random``: random search on the same super-net, same number of evaluations;
* ``Pareto``: NSGA-II evolution on the same super-net (AP max, neck FLOPs min);
* ``SPOS``: uniformly sampled super-net (one sub-net per step), evolutionary search;
* ``OPANAS, all paths trained``: fair sampling over all six paths (K=6; skip/none trained too, our
  deviation, see ``experiments/supernet_variants.py``) + gamma, evolutionary search;
* ``DARTS`` / ``Fair DARTS``: the dense DAG relaxed (softmax / sigmoids + zero-one loss), bilevel on
  Ray Train with the alphas on the search split, derived to one architecture.

One budget: every strategy gets the same training epochs and, for the one-shot ones, the same number
of scored candidates. The wall seconds each one actually spent on this machine are measured and reported
as its search cost (the super-net's training is charged to every strategy that searches it), not
equalised. Per strategy the table gives that cost, the best architecture, its score on the common
yardstick (the OPANAS fair+gamma super-net on the search split), its score under the strategy's own
super-net, and that super-net's Kendall tau on the fixed architectures with measured standalone AP
(``experiments/supernet_variants.py``). ``--retrain`` trains each best architecture and the FPN
standalone with the evidence experiment's recipe, ``--seeds`` seeds each, and adds their val AP.
Resumable: finished trainings, searches and scorings are reused. Outputs in ``--out``:
``strategies.csv`` / ``.md`` / ``.json`` and ``strategies.png`` (best-so-far vs search cost).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError, check_writable_folder
from raynas.errors import run_main
from raynas.jobs.arms import Arm, arch_id, arm_config, standalone_recipe
from raynas.jobs.main_job import MainJob, default_data, main_job_configs
from raynas.jobs.supernet_scores import METRIC, kept_scores, load_archs, score_archs, variant_config
from raynas.search.run import summarize
from raynas.studies.flags import check_counts
from raynas.studies.tables import check_table, read_table
from raynas.viz import plot_search_curves

#: the architectures with measured standalone AP the super-nets' Kendall tau is computed on
DEFAULT_ARCHS = Path(__file__).resolve().parent / "results" / "rank_correlation" / "rank_correlation.csv"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directories", nargs="*", help="search result folders to compare (folder mode)")
    parser.add_argument("--metric", default=METRIC)
    parser.add_argument("--run", action="store_true", help="run every strategy side by side")
    parser.add_argument(
        "--out",
        default=None,
        help="folder mode: the PNG (strategies.png); --run: the folder (runs/strategies)",
    )
    parser.add_argument(
        "--supernets", default=None, help="--run: folder of super-net runs to reuse (default: --out)"
    )
    parser.add_argument("--data", default=None, help="--run: dataset root (default data/digits)")
    parser.add_argument("--retrain", action="store_true", help="--run: train each best architecture")
    parser.add_argument("--seeds", type=int, default=3, help="--retrain: seeds per architecture")
    parser.add_argument("--epochs", type=int, default=3, help="--retrain: epochs of the one recipe")
    parser.add_argument("--search-images", type=int, default=None, help="cap on search-split images scored")
    parser.add_argument("--scorers", type=int, default=2, help="scorer actors")
    parser.add_argument("--train-workers", type=int, default=2, help="Ray Train workers per run")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--address", default=None)
    parser.add_argument("--smoke", action="store_true", help="--run: tiny data and budget (CI)")
    return parser


#: the flags of one mode only
RUN_ONLY = ("supernets", "data", "retrain", "seeds", "epochs", "search_images", "scorers", "train_workers",
            "gpu", "address", "smoke")  # fmt: skip
FOLDERS_ONLY = ("metric",)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.out = args.out or ("runs/strategies" if args.run else "strategies.png")
    return run_main("compare_strategies", lambda: run_or_compare(parser, args))


def run_or_compare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--run`` or folder mode, after refusing a flag of the other mode (``--retrain`` without ``--run``
    would be ignored without a word)."""
    given = [
        name
        for name in (FOLDERS_ONLY if args.run else RUN_ONLY)
        if getattr(args, name) != parser.get_default(name)
    ]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        mode, fix = ("--run", "drop --run") if args.run else ("comparing folders (no --run)", "add --run")
        raise ConfigError(
            f"{mode} does not use {flags}; leave {'it' if len(given) == 1 else 'them'} out, or {fix}"
        )
    return run_strategies(args) if args.run else compare(args)


def compare(args: argparse.Namespace) -> int:
    if not args.directories:
        raise ConfigError("give one or more search result folders, or --run to run the strategies")
    if Path(args.out).is_dir():
        raise ConfigError(
            f"--out {args.out!r} is a folder; without --run, --out is the plot to write, e.g. "
            f"{Path(args.out) / 'strategies.png'}"
        )
    check_writable_folder(str(Path(args.out).parent), "--out's folder")
    tables = load_tables(args.directories, args.metric)
    rows = []
    for label, df in tables.items():
        wall = float(df["time_total_s"].sum()) if "time_total_s" in df else float("nan")
        rows.append({"strategy": label, **summarize(df, wall, args.metric)})
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"plot: {plot_search_curves(tables, args.out, args.metric)}")
    return 0


# ---- --run mode -----------------------------------------------------------------------------------


def main_job(args: argparse.Namespace, out: str | None = None) -> MainJob:
    """The main job whose super-nets and search budget the strategies share, in ``out`` (default
    ``--supernets``, else ``--out``)."""
    return MainJob(
        data=args.data or default_data(args.smoke),
        out=out or args.supernets or args.out,
        smoke=args.smoke,
        gpu=args.gpu,
        address=args.address,
        train_workers=args.train_workers,
        out_given=True,
        train_workers_given=True,
    )


def search_config(args: argparse.Namespace, name: str, strategies: list[str]):
    _, search = main_job_configs(main_job(args, out=args.out))
    return replace(
        search,
        name=name,
        strategies=strategies,
        num_scorers=args.scorers,
        max_search_images=args.search_images or search.max_search_images,
    )


def darts_config(supernet_cfg, relaxation: str, args: argparse.Namespace):
    """DARTS on the OPANAS DAG with the super-net's data, model, schedule and neck options."""
    from raynas.training.config import OPANASDartsConfig, OPANASDartsSettings

    opanas = supernet_cfg.opanas
    return OPANASDartsConfig(
        data=supernet_cfg.data,
        model=supernet_cfg.model,
        optim=supernet_cfg.optim,
        run=replace(supernet_cfg.run, name=f"darts_{relaxation}", storage_path=args.out),
        darts=OPANASDartsSettings(
            relaxation=relaxation, num_nodes=opanas.num_nodes, deformable=opanas.deformable, norm=opanas.norm
        ),
    )


def train_cost_s(metrics: dict) -> float:
    """Training wall seconds of a run (every epoch, also when the run was finished earlier and reused)."""
    return float(metrics.get("epoch_time_s", 0.0)) * float(metrics.get("epoch", 0))


def scores_of(checkpoint: str, archs: pd.DataFrame, args: argparse.Namespace, path: Path) -> pd.DataFrame:
    return score_archs(
        checkpoint, archs, path, scorers=args.scorers, search_images=args.search_images, use_gpu=args.gpu
    )


def yardstick_scores(checkpoint: str, archs: dict[str, dict], args, path: Path) -> dict[str, float]:
    """The common-yardstick super-net's score of each strategy's best architecture (cached in ``path``)."""
    frame = pd.DataFrame([{"strategy": s, **a} for s, a in archs.items()])
    scored = scores_of(checkpoint, frame, args, path)
    return dict(zip(scored["strategy"], scored["supernet_" + METRIC]))


def run_strategies(args: argparse.Namespace) -> int:
    from raynas.training.cluster import ray_session

    if args.directories:
        raise ConfigError("--run takes no result folders; drop them, or drop --run to compare folders")
    check_counts(args, {"seeds": 1, "epochs": 1, "search_images": 1, "scorers": 1, "train_workers": 1})
    if args.smoke:  # the given values were checked, and give way to the smoke budget
        args.seeds, args.epochs, args.train_workers = 1, 1, 1
    check_run_inputs(args)
    with ray_session(args.address):
        run(args)
    print("\n" + (Path(args.out) / "strategies.md").read_text())
    return 0


def check_run_inputs(args: argparse.Namespace) -> None:
    """What ``--run`` would find wrong only after super-nets trained, checked before Ray starts: the
    folders, every config it builds and the scores it kept from an earlier run."""
    check_writable_folder(args.out, "--out")
    if args.supernets:
        check_writable_folder(args.supernets, "--supernets")
    for variant in dict.fromkeys(v for _, v, _ in ONE_SHOT):
        variant_config(variant, main_job(args))
    search_config(args, "search", ["evolution"])
    for variant in dict.fromkeys(v for _, v, _ in ONE_SHOT):
        kept_scores(Path(args.out) / f"tau_scores_{variant}.csv")
    load_archs(str(DEFAULT_ARCHS))
    kept_scores(Path(args.out) / "yardstick_scores.csv")


def run(args: argparse.Namespace) -> pd.DataFrame:
    from raynas.evaluation import rank_agreement
    from raynas.io import atomic_write_json, atomic_write_text
    from raynas.jobs.main_job import prepare_inputs
    from raynas.search.opanas import search_opanas
    from raynas.spaces.opanas import OPANASSpace
    from raynas.training.darts import search_opanas_darts
    from raynas.training.supernet import train_supernet

    out = Path(args.out)
    started = time.perf_counter()
    space = OPANASSpace(5)
    prepare_inputs(variant_config(YARDSTICK, main_job(args)), smoke=args.smoke)
    fixed = load_archs(str(DEFAULT_ARCHS))
    supernets, taus, curves, rows = {}, {}, {}, []
    for variant in dict.fromkeys(v for _, v, _ in ONE_SHOT):
        print(f"== super-net {variant} ==", flush=True)
        result = train_supernet(variant_config(variant, main_job(args)))
        supernets[variant] = (str(result.checkpoint_dir), train_cost_s(result.metrics), result)
        scored = scores_of(supernets[variant][0], fixed, args, out / f"tau_scores_{variant}.csv")
        taus[variant] = rank_agreement(scored["supernet_" + METRIC], scored["standalone_" + METRIC])
    base_cfg = variant_config(YARDSTICK, main_job(args))
    best_archs: dict[str, dict] = {}
    for variant in dict.fromkeys(v for _, v, _ in ONE_SHOT):
        labels = [(label, strategy) for label, v, strategy in ONE_SHOT if v == variant]
        cfg = search_config(args, f"search_{variant}", [s for _, s in labels])
        print(f"== search on {variant}: {cfg.strategies} ==", flush=True)
        outcome = search_opanas(supernets[variant][0], cfg, verbose=0, address=args.address)
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
        result = search_opanas_darts(darts_config(base_cfg, relaxation, args))
        best_archs[label] = space.to_config(result.genotype)
        rows.append(
            {"strategy": label, "supernet": "-", "search": f"darts ({relaxation})",
             "cost_s": round(train_cost_s(result.metrics), 1), "evaluations": 1,
             "own_score_AP": float(result.metrics.get(METRIC, float("nan"))), "kendall_tau": float("nan"),
             "kendall_tau_low": float("nan"), "kendall_tau_high": float("nan")}
        )  # fmt: skip
    yardstick = yardstick_scores(supernets[YARDSTICK][0], best_archs, args, out / "yardstick_scores.csv")
    for row in rows:
        row["yardstick_AP"] = float(yardstick[row["strategy"]])
        row["best_arch"] = json.dumps(best_archs[row["strategy"]], sort_keys=True)
    table = pd.DataFrame(rows)
    if args.retrain:
        retrained = retrain(best_archs, base_cfg, args, out)
        table = pd.concat(
            [table, pd.DataFrame([{"strategy": "FPN", "supernet": "-", "search": "hand-made"}])]
        )
        table = table.merge(retrained, on="strategy", how="left").reset_index(drop=True)
    atomic_write_text(out / "strategies.csv", table.to_csv(index=False))
    atomic_write_text(out / "strategies.md", markdown(table))
    atomic_write_json(
        out / "strategies.json",
        {"rows": table.to_dict("records"), "wall_time_s": round(time.perf_counter() - started, 1)},
    )
    plot_costs(curves, table, out / "strategies.png")
    return table


def retrain(best_archs: dict[str, dict], supernet_cfg, args: argparse.Namespace, out: Path) -> pd.DataFrame:
    """Each best architecture and the FPN trained standalone, ``--seeds`` seeds, the evidence recipe."""
    from raynas.models.build import searched_neck_spec
    from raynas.training.standalone import train

    recipe = standalone_recipe(supernet_cfg, args.epochs)
    width = supernet_cfg.model.out_channels
    # runs are named by architecture: strategies that found the same one share its runs
    arms = [Arm("FPN", "fpn", None, width)] + [
        Arm(label, "arch_" + arch_id(a), searched_neck_spec(a, supernet_cfg.opanas), width)
        for label, a in best_archs.items()
    ]
    rows = []
    for seed in range(args.seeds):
        for arm in arms:
            print(f"== retrain {arm.label} ({arm.slug}), seed {seed} ==", flush=True)
            cfg = arm_config(
                recipe, arm, seed, out, workers=args.train_workers, use_gpu=args.gpu, address=args.address
            )
            result = train(cfg)
            rows.append({"strategy": arm.label, "seed": seed, "AP": result.metrics.get(METRIC)})
    frame = pd.DataFrame(rows)
    frame["AP"] = pd.to_numeric(frame["AP"], errors="coerce")
    grouped = frame.groupby("strategy")["AP"]
    summary = pd.DataFrame({"standalone_AP_mean": grouped.mean(), "standalone_AP_std": grouped.std(ddof=1)})
    summary["seeds"] = grouped.size()
    return summary.reset_index()


def markdown(table: pd.DataFrame) -> str:
    retrained = "standalone_AP_mean" in table
    head = (
        "| strategy | super-net | search cost (s) | evaluations | score, common yardstick | own score "
        "| tau [95 % CI] |"
    )
    lines = [
        head + (" standalone AP (mean +/- std) |" if retrained else ""),
        "|---" * (8 if retrained else 7) + "|",
    ]
    for row in table.to_dict("records"):
        tau = (
            "-"
            if pd.isna(row["kendall_tau"])
            else (f"{row['kendall_tau']:.2f} [{row['kendall_tau_low']:.2f}, {row['kendall_tau_high']:.2f}]")
        )
        cells = [row["strategy"], row["supernet"], _fmt(row["cost_s"], 1, ".0f"),
                 _fmt(row["evaluations"], 1, ".0f"), _fmt(row["yardstick_AP"]), _fmt(row["own_score_AP"]),
                 tau]  # fmt: skip
        if retrained:
            cells.append(f"{_fmt(row['standalone_AP_mean'])} +/- {_fmt(row['standalone_AP_std'])}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "\nScores are COCO AP (%) of sub-nets with super-net weights on the search split; the common "
        f"yardstick is the {YARDSTICK} super-net. DARTS rows: own score = the relaxed network's val AP."
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
        if row["supernet"] == "-":
            ax.scatter([row["cost_s"]], [100 * row["yardstick_AP"]], marker="s", label=row["strategy"])
    ax.set_xlabel("search cost (wall seconds on this machine)")
    ax.set_ylabel(f"best {METRIC} so far (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
