"""Which super-net ranks architectures? OPANAS's Table 5 on the proxy: sampling rule x edge importance.

    python experiments/supernet_variants.py --proxy scenes --archs runs/rank_correlation/rank_correlation.csv
    python experiments/supernet_variants.py --variants fair_gamma uniform_gamma
    python experiments/supernet_variants.py --smoke --archs ARCHS.csv     # tiny data (CI)

Every variant is the main job's super-net (``experiments/opanas_ea.py``: data, body, 4 epochs) with the
switches of ``OPANASConfig`` changed:

* ``fair_gamma``: the paper (strict fair sampling, K=4, learned gamma with the L1 term);
* ``fair_nogamma``: fair sampling, no edge importance weights (Table 5, Fig. 4);
* ``uniform_gamma`` / ``uniform_nogamma``: one uniformly drawn sub-net per step (SPOS's rule on the dense
  DAG; Table 5's "w/o fair sampling"). Same number of steps, so a quarter of the sub-net updates;
* ``fair_gamma_all``: fair sampling over all six paths (K=6), so the shared body and head also train on
  sub-nets with ``skip``/``none`` edges. Not in the paper: a hypothesis v1 raised on the digits proxy.

Every super-net scores THE SAME architectures, the set ``rank_correlation.py`` picked and trained
standalone (``--archs``: its ``rank_correlation.csv``; by default the committed one under
``experiments/results/rank_correlation/``, v1 until v2 is committed: give v2's with ``--archs``). With
v2's table (issue 27: a fresh pool, picks stratified by rank, 2 seeds each) ``standalone_AP`` is the mean
over seeds and each seed's AP is a ``standalone_AP_seed<k>`` column; v1's has one seed.

Reported per variant: Kendall tau and Spearman rho between super-net score (search split) and standalone
AP (val), each with a bootstrap 95 % interval over the architectures and, within each, its seeds; and,
since all variants rank the same architectures, the variants are compared PAIRED: its tau minus
``fair_gamma``'s with a paired bootstrap interval (each resample scores both super-nets on the same
architectures and seeds: ``raynas.evaluation.ranking.paired_difference``); also the mean score of the
set and the training time. Resumable: finished super-nets and their scores are reused. Outputs in
``--out``: ``supernet_variants.csv`` / ``.md`` / ``.json`` / ``.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.entry import run_experiment
from raynas.jobs.main_job import MainJob
from raynas.jobs.study_flags import add_data_flags, study_job
from raynas.jobs.supernet_scores import (
    METRIC,
    VARIANTS,
    kept_scores,
    load_archs,
    score_archs,
    seed_aps,
    variant_config,
)
from raynas.studies.flags import check_counts

DEFAULT_ARCHS = Path(__file__).resolve().parent / "results" / "rank_correlation" / "rank_correlation.csv"
#: the variant every other is compared with, paired: the paper's super-net (and the main job's)
REFERENCE = "fair_gamma"
BOOTSTRAP = 2000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--archs",
        default=str(DEFAULT_ARCHS),
        help="rank_correlation.csv: architectures (e0_1 .. e4_5), their standalone_AP (v2: the seeds' mean)",
    )
    parser.add_argument("--out", default="runs/supernet_variants", help="where runs and tables go")
    add_data_flags(parser)
    parser.add_argument("--search-images", type=int, default=None, help="cap on search-split images scored")
    parser.add_argument("--scorers", type=int, default=2, help="scorer actors")
    parser.add_argument("--train-workers", type=int, default=2, help="Ray Train workers per super-net")
    parser.add_argument("--gpu", action="store_true", help="train and score on GPUs")
    parser.add_argument("--address", default=None, help="attach to a Ray cluster (e.g. auto)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget (CI)")
    return parser


def main_job(args: argparse.Namespace) -> MainJob:
    """The main job these super-nets are variants of, with this script's data, folder and workers."""
    return study_job(args, args.out)


def scores_of(checkpoint: str, archs: pd.DataFrame, args: argparse.Namespace, path: Path) -> pd.DataFrame:
    return score_archs(
        checkpoint, archs, path, scorers=args.scorers, search_images=args.search_images, use_gpu=args.gpu
    )


def run_variant(name: str, archs: pd.DataFrame, args: argparse.Namespace) -> tuple[dict, pd.DataFrame]:
    """The variant's super-net trained (or reused) and its scores of ``archs``: its table row and scores."""
    from raynas.evaluation.ranking import rank_agreement_over_seeds
    from raynas.training.supernet import train_supernet

    cfg = variant_config(name, main_job(args))
    started = time.perf_counter()
    result = train_supernet(cfg)
    train_s = time.perf_counter() - started
    scored = scores_of(str(result.checkpoint_dir), archs, args, Path(args.out) / f"scores_{name}.csv")
    stats = rank_agreement_over_seeds(scored["supernet_" + METRIC], seed_aps(archs), BOOTSTRAP)
    opanas = cfg.opanas
    row = {
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
    return row, scored


def paired_to_reference(rows: list[dict], scores: dict[str, pd.DataFrame], archs: pd.DataFrame) -> None:
    """Each row gains its tau and rho minus ``REFERENCE``'s with the paired interval (NaN without it)."""
    from raynas.evaluation.ranking import paired_difference

    per_seed = seed_aps(archs)
    for row in rows:
        if REFERENCE not in scores:
            diff = {
                f"{c}_diff{end}": float("nan")
                for c in ("kendall_tau", "spearman_rho")
                for end in ("", "_low", "_high")
            }
        else:
            diff = paired_difference(
                scores[row["variant"]]["supernet_" + METRIC],
                scores[REFERENCE]["supernet_" + METRIC],
                per_seed,
                BOOTSTRAP,
            )
        row.update({k: round(v, 3) if isinstance(v, float) else v for k, v in diff.items() if k != "n"})


def diff_cell(row: dict) -> str:
    if row["variant"] == REFERENCE:
        return "(reference)"
    if pd.isna(row["kendall_tau_diff"]):
        return "n/a"
    low, high = row["kendall_tau_diff_low"], row["kendall_tau_diff_high"]
    return f"{row['kendall_tau_diff']:+.2f} [{low:+.2f}, {high:+.2f}]"


def markdown(table: pd.DataFrame, archs_path: str, seeds: int) -> str:
    lines = [
        "| super-net | sampling | gamma | paths trained | sub-nets/step | Kendall tau [95 % CI] | "
        f"tau - {REFERENCE} [paired 95 % CI] | Spearman rho | mean super-net AP | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):
        lines.append(
            f"| {row['variant']} | {row['sampling']} | {'yes' if row['gamma'] else 'no'} | "
            f"{row['train_paths']} | {row['subnets_per_step']} | {row['kendall_tau']:.2f} "
            f"[{row['kendall_tau_low']:.2f}, {row['kendall_tau_high']:.2f}] | {diff_cell(row)} | "
            f"{row['spearman_rho']:.2f} | {100 * row['mean_supernet_AP']:.1f} | {row['epoch_time_s']:.0f} |"
        )
    shown = os.path.relpath(archs_path) if Path(archs_path).is_absolute() else archs_path
    lines.append(
        f"\n{int(table['n'].iloc[0])} architectures with measured standalone AP from `{shown}` (up to "
        f"{seeds} seed(s) each), the same for every super-net; super-net scores on the search split, "
        "standalone AP on val (mean over seeds). Intervals: bootstrap over the architectures and, within "
        f"each, its seeds; the difference to {REFERENCE} paired (both super-nets on every resample). "
        "s/epoch is the last epoch's."
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
    from raynas.jobs.main_job import prepare_inputs

    prepare_inputs(variant_config(args.variants[0], main_job(args)), smoke=args.smoke)
    rows, scores = [], {}
    for name in args.variants:
        print(f"== super-net variant {name}: {VARIANTS[name]} ==", flush=True)
        row, scores[name] = run_variant(name, archs, args)
        rows.append(row)
    paired_to_reference(rows, scores, archs)
    table = pd.DataFrame(rows)
    seeds = max(len(values) for values in seed_aps(archs))
    atomic_write_text(out / "supernet_variants.csv", table.to_csv(index=False))
    atomic_write_text(out / "supernet_variants.md", markdown(table, args.archs, seeds))
    atomic_write_json(
        out / "supernet_variants.json",
        {"rows": rows, "archs": args.archs, "proxy": args.proxy, "reference": REFERENCE,
         "bootstrap": BOOTSTRAP, "wall_time_s": round(time.perf_counter() - started, 1)},
    )  # fmt: skip
    plot(table, out / "supernet_variants.png")
    return table


def check(args: argparse.Namespace) -> None:
    """Every flag and every file the run reads checked first, before Ray starts."""
    from raynas.config import check_writable_folder

    check_counts(args, {"search_images": 1, "scorers": 1, "train_workers": 1})
    repeated = sorted({name for name in args.variants if args.variants.count(name) > 1})
    if repeated:
        raise ConfigError(f"--variants names {repeated} more than once; name each variant once")
    check_writable_folder(args.out, "--out")
    if args.proxy != "digits" and Path(args.archs).resolve() == DEFAULT_ARCHS:
        raise ConfigError(
            f"--proxy {args.proxy} with the default --archs, whose standalone APs were measured on the "
            f"digits proxy; pass the rank_correlation.csv of a {args.proxy} run with --archs"
        )
    load_archs(args.archs)  # a bad --archs fails before Ray starts
    for name in args.variants:
        variant_config(name, main_job(args))
        kept_scores(Path(args.out) / f"scores_{name}.csv")


def report(args: argparse.Namespace, _: None) -> None:
    table = run(args)
    columns = [
        "variant",
        "kendall_tau",
        "kendall_tau_low",
        "kendall_tau_high",
        "kendall_tau_diff",
        "spearman_rho",
    ]
    print("\n" + table[columns + ["mean_supernet_AP", "epoch_time_s"]].to_string(index=False))
    print(f"results: {args.out}")


def main(argv: list[str] | None = None) -> int:
    return run_experiment("supernet_variants", build_parser(), argv, check, report)


if __name__ == "__main__":
    sys.exit(main())
