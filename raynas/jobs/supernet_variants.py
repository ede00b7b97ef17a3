"""Which super-net ranks architectures? OPANAS's Table 5: super-nets trained under each sampling rule and
edge-importance setting (:data:`~raynas.jobs.supernet_scores.VARIANTS`), each scoring the same fixed
architectures with measured standalone AP, Kendall tau per super-net and its paired difference to the
paper's (``experiments/supernet_variants.py`` parses its flags into :class:`VariantSettings` and runs
:func:`run`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.main_job import MainJob
from raynas.jobs.supernet_scores import (
    METRIC,
    VARIANTS,
    load_archs,
    score_archs,
    scorer_options,
    seed_aps,
    variant_config,
)

#: the variant every other is compared with, paired: the paper's super-net (and the main job's)
REFERENCE = "fair_gamma"
BOOTSTRAP = 2000


@dataclass(frozen=True)
class VariantSettings:
    """What a variants table is asked for: the flags of ``experiments/supernet_variants.py``, checked."""

    out: Path  # where runs and tables go
    archs: str  # rank_correlation.csv of the architectures with measured standalone AP
    job: MainJob  # the main job these super-nets are variants of (data, folder, workers)
    variants: tuple[str, ...] = tuple(VARIANTS)
    proxy: str = "digits"
    search_images: int | None = None
    scorers: int = 2
    gpu: bool = False
    smoke: bool = False


def run_variant(name: str, archs: pd.DataFrame, settings: VariantSettings) -> tuple[dict, pd.DataFrame]:
    """The variant's super-net trained (or reused) and its scores of ``archs``: its table row and scores."""
    from raynas.evaluation.ranking import rank_agreement_over_seeds
    from raynas.training.supernet import train_supernet

    cfg = variant_config(name, settings.job)
    started = time.perf_counter()
    result = train_supernet(cfg)
    train_s = time.perf_counter() - started
    path = settings.out / f"scores_{name}.csv"
    scored = score_archs(str(result.checkpoint_dir), archs, path, **scorer_options(settings))
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
        "standalone AP as that table gives it (mean over seeds; on the split that table was scored on: "
        "val in rank_correlation.py's digits tables, test in the scenes ones). Intervals: bootstrap over "
        "the architectures and, within "
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


def run(settings: VariantSettings) -> pd.DataFrame:
    out = settings.out
    archs = load_archs(settings.archs)  # checked again: the file may change while Ray starts
    started = time.perf_counter()
    from raynas.jobs.proxies import prepare_inputs

    prepare_inputs(variant_config(settings.variants[0], settings.job), smoke=settings.smoke)
    rows, scores = [], {}
    for name in settings.variants:
        print(f"== super-net variant {name}: {VARIANTS[name]} ==", flush=True)
        row, scores[name] = run_variant(name, archs, settings)
        rows.append(row)
    paired_to_reference(rows, scores, archs)
    table = pd.DataFrame(rows)
    seeds = max(len(values) for values in seed_aps(archs))
    atomic_write_text(out / "supernet_variants.csv", table.to_csv(index=False))
    atomic_write_text(out / "supernet_variants.md", markdown(table, settings.archs, seeds))
    atomic_write_json(
        out / "supernet_variants.json",
        {"rows": rows, "archs": settings.archs, "proxy": settings.proxy, "reference": REFERENCE,
         "bootstrap": BOOTSTRAP, "wall_time_s": round(time.perf_counter() - started, 1)},
    )  # fmt: skip
    plot(table, out / "supernet_variants.png")
    return table
