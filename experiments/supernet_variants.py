"""Which super-net ranks architectures? OPANAS's Table 5 on the proxy: sampling rule x edge importance.

    python experiments/supernet_variants.py      # 5 super-nets, the main job's recipe, ~40 min on 2 cores
    python experiments/supernet_variants.py --variants fair_gamma uniform_gamma
    python experiments/supernet_variants.py --smoke --archs ARCHS.csv     # tiny data (CI)

Every variant is the main job's super-net (``experiments/opanas_ea.py``: data, body, 4 epochs) with the
switches of ``OPANASConfig`` changed:

* ``fair_gamma``: the paper (strict fair sampling, K=4, learned gamma with the L1 term);
* ``fair_nogamma``: fair sampling, no edge importance weights (Table 5, Fig. 4);
* ``uniform_gamma`` / ``uniform_nogamma``: one uniformly drawn sub-net per step (SPOS's rule on the dense
  DAG; Table 5's "w/o fair sampling"). Same number of steps, so a quarter of the sub-net updates;
* ``fair_gamma_all``: fair sampling over all six paths (K=6), so the shared body and head also train on
  sub-nets with ``skip``/``none`` edges. Not in the paper: our hypothesis for the proxy's tau of -0.07.

Each super-net scores one fixed set of architectures whose standalone AP is already measured: by
default the 10 of ``experiments/results/rank_correlation/rank_correlation.csv`` (4-epoch standalone
runs, one seed each; they were picked spread over the ``fair_gamma`` super-net's scores, which is
the only way the set depends on a variant). Reported per variant: Kendall tau and Spearman rho
between super-net score (search split) and standalone AP (val) with bootstrap 95 % intervals, the mean
score of the set, and the training time. Resumable: finished super-nets and their scores are reused.
Outputs in ``--out``: ``supernet_variants.csv`` / ``.md`` / ``.json`` / ``.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError
from raynas.errors import run_main
from raynas.io import atomic_write_json, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from raynas.studies.flags import check_counts  # noqa: E402
from raynas.studies.tables import none_as_written, read_table  # noqa: E402

METRIC = "AP"
DEFAULT_ARCHS = Path(__file__).resolve().parent / "results" / "rank_correlation" / "rank_correlation.csv"
#: name -> OPANASConfig switches
VARIANTS: dict[str, dict] = {
    "fair_gamma": {"sampling": "fair", "gamma": True},
    "fair_nogamma": {"sampling": "fair", "gamma": False},
    "uniform_gamma": {"sampling": "uniform", "gamma": True},
    "uniform_nogamma": {"sampling": "uniform", "gamma": False},
    "fair_gamma_all": {"sampling": "fair", "gamma": True, "train_paths": "all", "k": 6},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--archs",
        default=str(DEFAULT_ARCHS),
        help="CSV of architectures (e0_1 .. e4_5 columns) with their standalone_AP",
    )
    parser.add_argument("--out", default="runs/supernet_variants", help="where runs and tables go")
    parser.add_argument("--data", default=None, help="dataset root (default data/digits)")
    parser.add_argument("--search-images", type=int, default=None, help="cap on search-split images scored")
    parser.add_argument("--scorers", type=int, default=2, help="scorer actors")
    parser.add_argument("--train-workers", type=int, default=2, help="Ray Train workers per super-net")
    parser.add_argument("--gpu", action="store_true", help="train and score on GPUs")
    parser.add_argument("--address", default=None, help="attach to a Ray cluster (e.g. auto)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget (CI)")
    return parser


def load_archs(path: str) -> pd.DataFrame:
    """The fixed architectures and their measured standalone AP."""
    from raynas.spaces.opanas import OPANASSpace

    if not Path(path).is_file():
        raise ConfigError(f"--archs {path!r} is not a file; give a rank_correlation.csv")
    try:
        table = pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        why = " ".join(str(err).split())[:160]
        raise ConfigError(f"--archs {path!r} is not a CSV table ({why}); give rank_correlation.csv") from err
    space = OPANASSpace(5)
    missing = sorted((set(space.choices()) | {"standalone_" + METRIC}) - set(table.columns))
    if missing:
        raise ConfigError(f"--archs {path!r} lacks the column(s) {missing}; give a rank_correlation.csv")
    if len(table) < 3:
        raise ConfigError(f"--archs {path!r} has {len(table)} architectures; a rank correlation needs >= 3")
    scores = pd.to_numeric(table["standalone_" + METRIC], errors="coerce")
    if scores.isna().any():
        lines = [index + 2 for index in table.index[scores.isna()]][:5]
        raise ConfigError(
            f"--archs {path!r} has no number as standalone_{METRIC} on line(s) {lines}; give a "
            "rank_correlation.csv whose architectures all have a measured AP"
        )
    for line, row in enumerate(table.to_dict("records"), start=2):
        try:
            space.from_config(row)
        except ValueError as err:
            raise ConfigError(
                f"--archs {path!r} line {line} is not an OPANAS architecture ({err}); "
                "give a rank_correlation.csv"
            ) from err
    return table


def kept_scores(path: Path) -> pd.DataFrame | None:
    """Scores of an earlier run (``None`` if none), each row a whole architecture with its score and key:
    a damaged copy is refused (also before Ray starts), not half reused."""
    from raynas.spaces.opanas import OPANASSpace

    if not path.is_file():
        return None
    fix = "restore it, or delete it to score the architectures again"
    space = OPANASSpace(5)
    # a row cut short in its key (checkpoint, search_images) matches no key: it is scored again
    table = read_table(path, fix, space.keys, ("supernet_" + METRIC,), dtype={"search_images": str})
    for line, row in enumerate(table.to_dict("records"), start=2):
        try:
            space.from_config(row)
        except ValueError as err:
            raise ConfigError(f"{path} line {line} is not an OPANAS architecture ({err}); {fix}") from err
    return none_as_written(table)


def variant_config(name: str, args: argparse.Namespace):
    """The main job's super-net with the variant's switches, in its own run folder."""
    from opanas_ea import default_configs, parse_args

    flags = ["--out", args.out, "--train-workers", str(args.train_workers)]
    flags += ["--data", args.data] if args.data else []
    flags += ["--smoke"] if args.smoke else []
    flags += ["--gpu"] if args.gpu else []
    flags += ["--address", args.address] if args.address else []
    cfg, _ = default_configs(parse_args(flags))
    return replace(
        cfg,
        opanas=replace(cfg.opanas, **VARIANTS[name]),
        run=replace(cfg.run, name=f"supernet_{name}"),
        neck=None,
    )


def score_archs(checkpoint: str, archs: pd.DataFrame, args: argparse.Namespace, path: Path) -> pd.DataFrame:
    """Super-net scores of the fixed architectures (kept in ``path``; reused on re-run)."""
    from ray.util import ActorPool

    from raynas.search.pool import ScorerPool
    from raynas.spaces.opanas import OPANASSpace

    space = OPANASSpace(5)
    configs = [space.to_config(space.from_config(row)) for row in archs.to_dict("records")]
    key = {"checkpoint": str(Path(checkpoint).resolve()), "search_images": str(args.search_images)}
    table = kept_scores(path)
    if table is not None:
        same_archs = (
            len(table) == len(configs)
            and [space.to_config(space.from_config(row)) for row in table.to_dict("records")] == configs
        )
        if same_archs and all(k in table and table[k].astype(str).eq(v).all() for k, v in key.items()):
            return table
    scorers = ScorerPool(checkpoint, num_actors=args.scorers, max_images=args.search_images, use_gpu=args.gpu)
    try:
        results = list(ActorPool(scorers.actors).map(lambda actor, c: actor.score.remote(c), configs))
    finally:
        scorers.shutdown()
    table = archs.copy()
    table["supernet_" + METRIC] = [r[METRIC] for r in results]
    for name, value in key.items():
        table[name] = value
    atomic_write_text(path, table.to_csv(index=False))
    return table


def run_variant(name: str, archs: pd.DataFrame, args: argparse.Namespace) -> dict:
    from raynas.evaluation import rank_agreement
    from raynas.training.supernet import train_supernet

    cfg = variant_config(name, args)
    started = time.perf_counter()
    result = train_supernet(cfg)
    train_s = time.perf_counter() - started
    scored = score_archs(str(result.checkpoint_dir), archs, args, Path(args.out) / f"scores_{name}.csv")
    stats = rank_agreement(scored["supernet_" + METRIC], scored["standalone_" + METRIC])
    opanas = cfg.opanas
    return {
        "variant": name,
        "sampling": opanas.sampling,
        "gamma": opanas.gamma,
        "train_paths": opanas.train_paths,
        "subnets_per_step": opanas.subnets_per_step(),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()},
        "mean_supernet_AP": round(float(scored["supernet_" + METRIC].mean()), 4),
        "eval_subnets_AP": round(float(result.metrics.get("AP", float("nan"))), 4),
        "epoch_time_s": round(float(result.metrics.get("epoch_time_s", float("nan"))), 1),
        "epochs": cfg.optim.epochs,
        "this_call_s": round(train_s, 1),
        "checkpoint": str(result.checkpoint_dir),
    }


def markdown(table: pd.DataFrame, archs_path: str) -> str:
    lines = [
        "| super-net | sampling | gamma | paths trained | sub-nets/step | Kendall tau [95 % CI] | "
        "Spearman rho | mean super-net AP | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):
        lines.append(
            f"| {row['variant']} | {row['sampling']} | {'yes' if row['gamma'] else 'no'} | "
            f"{row['train_paths']} | {row['subnets_per_step']} | {row['kendall_tau']:.2f} "
            f"[{row['kendall_tau_low']:.2f}, {row['kendall_tau_high']:.2f}] | {row['spearman_rho']:.2f} | "
            f"{100 * row['mean_supernet_AP']:.1f} | {row['epoch_time_s']:.0f} |"
        )
    shown = os.path.relpath(archs_path) if Path(archs_path).is_absolute() else archs_path
    lines.append(
        f"\n{int(table['n'].iloc[0])} architectures with measured standalone AP from `{shown}`; "
        "super-net scores on the search split, standalone AP on val; s/epoch is the last epoch's."
    )
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    y = range(len(table))
    low = table["kendall_tau"] - table["kendall_tau_low"]
    high = table["kendall_tau_high"] - table["kendall_tau"]
    ax.errorbar(table["kendall_tau"], list(y), xerr=[low, high], fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(list(y), table["variant"])
    ax.set_xlabel("Kendall tau, super-net score vs standalone AP (95 % CI)")
    ax.set_xlim(-1, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> pd.DataFrame:
    out = Path(args.out)
    archs = load_archs(args.archs)  # checked again: the file may change while Ray starts
    started = time.perf_counter()
    from opanas_ea import prepare_inputs

    prepare_inputs(variant_config(args.variants[0], args), smoke=args.smoke)
    rows = []
    for name in args.variants:
        print(f"== super-net variant {name}: {VARIANTS[name]} ==", flush=True)
        rows.append(run_variant(name, archs, args))
    table = pd.DataFrame(rows)
    atomic_write_text(out / "supernet_variants.csv", table.to_csv(index=False))
    atomic_write_text(out / "supernet_variants.md", markdown(table, args.archs))
    atomic_write_json(
        out / "supernet_variants.json",
        {"rows": rows, "archs": args.archs, "wall_time_s": round(time.perf_counter() - started, 1)},
    )
    plot(table, out / "supernet_variants.png")
    return table


def report(args: argparse.Namespace) -> int:
    """Every flag and every file the run reads checked first, before Ray starts."""
    from raynas.config import check_writable_folder
    from raynas.training.launch import ray_session

    check_counts(args, {"search_images": 1, "scorers": 1, "train_workers": 1})
    repeated = sorted({name for name in args.variants if args.variants.count(name) > 1})
    if repeated:
        raise ConfigError(f"--variants names {repeated} more than once; name each variant once")
    check_writable_folder(args.out, "--out")
    load_archs(args.archs)  # a bad --archs fails before Ray starts
    for name in args.variants:
        variant_config(name, args)
        kept_scores(Path(args.out) / f"scores_{name}.csv")
    with ray_session(args.address):
        table = run(args)
    columns = ["variant", "kendall_tau", "kendall_tau_low", "kendall_tau_high", "spearman_rho"]
    print("\n" + table[columns + ["mean_supernet_AP", "epoch_time_s"]].to_string(index=False))
    print(f"results: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("supernet_variants", lambda: report(args))


if __name__ == "__main__":
    sys.exit(main())
