"""OPANAS's rank correlation, v2 protocol (issue 27): does the super-net rank the architectures evolution
chooses between? A fresh pool scored on the super-net, picks stratified by rank, each trained standalone
with several seeds, Kendall tau and Spearman rho with a bootstrap over architectures and seeds
(``experiments/rank_correlation.py`` parses its flags into :class:`RankSettings` and runs :func:`run`;
the protocol in full: its docstring).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from raynas.checkpoints import load_state
from raynas.config import ConfigError
from raynas.evaluation.ranking import rank_agreement, rank_agreement_over_seeds
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.arms import (
    Arm,
    ReportedRun,
    arch_id,
    arm_config,
    standalone_recipe,
    train_arms,
    train_time_s,
)
from raynas.jobs.supernet_scores import kept_scores, seed_aps
from raynas.models.build import searched_neck_spec
from raynas.spaces.opanas import OPANASSpace
from raynas.studies import stratified_by_rank
from raynas.studies.picks import TOP_FRACTION
from raynas.studies.tables import not_yet_reached, read_table
from raynas.training.config import SupernetConfig, TrainConfig

METRIC = "AP"
#: the seed that drew v1's pool (experiments/results/rank_correlation/pool.csv): not a fresh pool
V1_POOL_SEED = 0
DEFAULT_POOL_SEED = 27
MIN_M = 20
#: share of the picks from the pool's top quarter of ranks (``stratified_by_rank``)
TOP_SHARE = 0.5
BOOTSTRAP = 2000
STANDALONE = ("AP", "AP50", "AP75")
SEEDS_FILE = "rank_correlation_seeds.csv"
#: what a kept (architecture, seed) row must match to be reused: the recipe it was trained with
RECIPE_KEYS = ("epochs", "supernet_checkpoint")


@dataclass(frozen=True)
class RankSettings:
    """What a rank correlation is asked for: the flags of ``experiments/rank_correlation.py``, checked
    (the smoke budget laid over them)."""

    out: Path  # where runs, tables and plots go
    checkpoint: str | None  # the super-net's checkpoint_* folder (None: the smoke run trains its own)
    pool: int = 80  # random architectures scored on the super-net
    pool_seed: int = DEFAULT_POOL_SEED  # of the pool draw and of the picks
    m: int = MIN_M  # architectures trained standalone, stratified by rank
    standalone_seeds: int = 2
    epochs: int | None = None  # standalone epochs (None: the super-net's)
    search_images: int | None = None  # cap on search-split images scored
    scorers: int = 2
    train_workers: int | None = None  # per standalone run (None: the super-net's)
    gpu: bool = False
    address: str | None = None
    smoke: bool = False


def draw_pool(space: OPANASSpace, size: int, seed: int) -> list[dict]:
    """``size`` random architectures, distinct as networks (compared after ``canonical``), in draw order."""
    rng = random.Random(seed)
    archs: list = []
    while len(archs) < size:
        arch = space.canonical(space.sample(rng))
        if arch not in archs:
            archs.append(arch)
    return [space.to_config(arch) for arch in archs]


def score_pool(checkpoint: str, space: OPANASSpace, settings: RankSettings, out: Path) -> pd.DataFrame:
    """Super-net scores of the pool (kept in ``pool.csv``; reused on re-run by the same super-net, images
    and pool seed)."""
    path = out / "pool.csv"
    key = {
        "pool_seed": settings.pool_seed,
        "checkpoint": str(Path(checkpoint).resolve()),
        "search_images": settings.search_images,
    }
    table = kept_pool(path)
    same = table is not None and len(table) == settings.pool and set(key) <= set(table)
    if same and all(table[k].astype(str).eq(str(v)).all() for k, v in key.items()):
        return table  # scored by this super-net on these images, drawn with this seed: reused
    from ray.util import ActorPool

    from raynas.search.pool import ScorerPool

    configs = draw_pool(space, settings.pool, settings.pool_seed)
    scorers = ScorerPool(
        checkpoint, num_actors=settings.scorers, max_images=settings.search_images, use_gpu=settings.gpu
    )
    try:
        started = time.perf_counter()
        results = list(ActorPool(scorers.actors).map(lambda actor, c: actor.score.remote(c), configs))
        print(
            f"scored {len(configs)} architectures on the super-net in {time.perf_counter() - started:.0f} s"
        )
    finally:
        scorers.shutdown()
    rows = [
        {"arch_id": arch_id(c), **c, "supernet_" + METRIC: r[METRIC], "supernet_AP50": r["AP50"],
         "neck_params": r["neck_params"], "neck_flops": r["neck_flops"], **key}
        for c, r in zip(configs, results)
    ]  # fmt: skip
    table = pd.DataFrame(rows)
    atomic_write_text(path, table.to_csv(index=False))
    return table


def pick(pool: pd.DataFrame, m: int, seed: int) -> pd.DataFrame:
    """The ``m`` architectures trained standalone, best super-net rank first, with their rank in the pool
    (1 = best) and whether they are in the top half of the picks."""
    scores = pool["supernet_" + METRIC].astype(float).to_numpy()
    rank = np.empty(len(scores), dtype=int)
    rank[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    chosen = stratified_by_rank(scores, m, top_share=TOP_SHARE, seed=seed)
    picked = pool.iloc[chosen].reset_index(drop=True)
    picked.insert(1, "pool_rank", rank[chosen])
    picked.insert(2, "top_half", picked.index < m // 2)
    return picked


def kept_seed_rows(path: Path, key: dict | None) -> pd.DataFrame:
    """The (architecture, seed) rows of an earlier run (empty if none), each whole; with ``key`` (the
    recipe: standalone epochs and super-net checkpoint) rows of another recipe are refused, since their
    APs are not comparable and re-running would drop them."""
    if not path.is_file():
        return pd.DataFrame(columns=["arch_id", "seed"])
    fix = "restore it, or delete it (and the runs/ folder beside it) to train the architectures again"
    complete = ("arch_id", "seed", "standalone_" + METRIC, *RECIPE_KEYS, "checkpoint")
    table = read_table(
        path, fix, complete, ("seed", "epochs", "standalone_" + METRIC), dtype={"arch_id": str}
    )
    if not table["seed"].astype(float).map(float.is_integer).all():
        raise ConfigError(f"{path} has a seed that is not a whole number; {fix}")
    table = table.astype({"seed": int, "epochs": int})
    if key is not None:
        differing = sorted({k for k in RECIPE_KEYS if not table[k].astype(str).eq(str(key[k])).all()})
        if differing:
            was = ", ".join(f"{k}={table[k].iloc[0]}" for k in differing)
            raise ConfigError(
                f"{path} holds standalone runs of another recipe ({was}); run with the same --epochs and "
                "--checkpoint, or choose another --out"
            )
    return table


def standalone_runs(
    picked: pd.DataFrame, supernet: SupernetConfig, checkpoint: str, settings: RankSettings, out: Path
) -> tuple[pd.DataFrame, int]:
    """Every picked architecture trained at every seed, seed by seed (an interrupted run leaves every
    architecture at some seeds); kept rows are reused. Returns the rows and how many runs trained now."""
    epochs = supernet.optim.epochs if settings.epochs is None else settings.epochs
    key = {"epochs": epochs, "supernet_checkpoint": str(Path(checkpoint).resolve())}
    kept = kept_seed_rows(out / SEEDS_FILE, key)
    recipe = standalone_recipe(supernet, epochs)
    space = OPANASSpace(num_nodes=supernet.opanas.num_nodes)
    planned = {(arch, seed) for arch in picked["arch_id"] for seed in range(settings.standalone_seeds)}
    kept = (
        kept[[(arch, seed) in planned for arch, seed in zip(kept["arch_id"], kept["seed"])]]
        if len(kept)
        else kept
    )
    earlier = {(row["arch_id"], row["seed"]): row for row in kept.to_dict("records")}
    keys = ("arch_id", "seed")
    picks = []
    for row in picked.to_dict("records"):
        neck = searched_neck_spec(space.to_config(space.from_config(row)), supernet.opanas)
        picks.append(
            (row, Arm(f"arch {row['arch_id']}", f"arch_{row['arch_id']}", neck, supernet.model.out_channels))
        )
    total = len(picks) * settings.standalone_seeds

    def config(pick: tuple[dict, Arm], seed: int) -> TrainConfig:
        workers = settings.train_workers or supernet.run.num_workers
        return arm_config(recipe, pick[1], seed, out, workers=workers, use_gpu=settings.gpu,
                          address=settings.address)  # fmt: skip

    def title(pick: tuple[dict, Arm], seed: int) -> str:
        row, number = pick[0], seed * len(picks) + picks.index(pick) + 1
        return (f"standalone {number}/{total}: arch {row['arch_id']} seed {seed} (pool rank "
                f"{row['pool_rank']}, super-net {METRIC} {100 * row['supernet_' + METRIC]:.1f})")  # fmt: skip

    def seed_row(pick: tuple[dict, Arm], seed: int, cfg: TrainConfig, reported: ReportedRun) -> dict:
        metrics = reported.metrics
        return {"arch_id": pick[0]["arch_id"], "seed": seed, "split": reported.split,
                **{f"standalone_{k}": metrics.get(k) for k in STANDALONE},
                "train_time_s": train_time_s(metrics), **key,
                "checkpoint": str(reported.checkpoint_dir)}  # fmt: skip

    rows, trained = train_arms(
        picks, settings.standalone_seeds, config, seed_row,
        lambda rows, _: atomic_write_text(  # kept rows not reached yet stay: a stop loses no row
            out / SEEDS_FILE, pd.DataFrame(rows + not_yet_reached(kept, rows, keys)).to_csv(index=False)
        ),
        lambda pick, seed, cfg: earlier.get((pick[0]["arch_id"], seed)), title,
    )  # fmt: skip
    return pd.DataFrame(rows), trained


def per_arch(picked: pd.DataFrame, seed_rows: pd.DataFrame, space: OPANASSpace) -> pd.DataFrame:
    """One row per picked architecture: encoding, score, the mean standalone AP and each seed's."""
    aps = seed_rows.pivot(index="arch_id", columns="seed", values="standalone_" + METRIC)
    columns = ["arch_id", "pool_rank", "top_half", *space.keys, "supernet_" + METRIC, "supernet_AP50",
               "neck_params", "neck_flops", "pool_seed"]  # fmt: skip
    table = picked[columns].copy()
    per_seed = {f"standalone_{METRIC}_seed{s}": table["arch_id"].map(aps[s]).astype(float) for s in aps}
    table.insert(len(columns) - 1, "standalone_" + METRIC, pd.DataFrame(per_seed).mean(axis=1))
    for name, values in per_seed.items():
        table.insert(len(table.columns) - 1, name, values)
    return table


def nan_stats(n: int) -> dict:
    keys = ("kendall_tau", "kendall_tau_low", "kendall_tau_high", "spearman_rho", "spearman_rho_low",
            "spearman_rho_high")  # fmt: skip
    return {"n": n, **dict.fromkeys(keys, math.nan)}


def agreement(table: pd.DataFrame) -> dict:
    """Super-net score vs mean standalone AP, the interval over architectures and their seeds."""
    if len(table) < 3:
        return nan_stats(len(table))
    return rank_agreement_over_seeds(table["supernet_" + METRIC], seed_aps(table), BOOTSTRAP)


def seed_to_seed(table: pd.DataFrame) -> dict:
    """Standalone AP of seed 0 vs seed 1 (the interval over architectures): the noise ceiling."""
    first, second = f"standalone_{METRIC}_seed0", f"standalone_{METRIC}_seed1"
    if second not in table or len(table) < 3:
        return nan_stats(len(table))
    return rank_agreement(table[first], table[second], BOOTSTRAP)


def cell(stats: dict, name: str) -> str:
    if math.isnan(stats[name]):
        return "n/a"
    return f"{stats[name]:+.2f} [{stats[name + '_low']:+.2f}, {stats[name + '_high']:+.2f}]"


def markdown(record: dict) -> str:
    rows = [("all picked architectures", record["all"]),
            ("top half by super-net score", record["top_half"]),
            ("standalone seed 0 vs seed 1 (the ceiling)", record["seed_to_seed"])]  # fmt: skip
    lines = [
        "| architectures | n | Kendall tau [95 % CI] | Spearman rho [95 % CI] |",
        "|---|---|---|---|",
        *(
            f"| {name} | {s['n']} | {cell(s, 'kendall_tau')} | {cell(s, 'spearman_rho')} |"
            for name, s in rows
        ),
        "",
        f"Method: a fresh pool of {record['pool']} distinct random architectures (pool seed "
        f"{record['pool_seed']}) scored on the super-net (AP on the search split); {record['m']} picked "
        f"stratified by rank, {record['pick']['from_top_quarter']} from the pool's top quarter, each trained "
        f"standalone for {record['standalone_epochs']} epoch(s) with {record['standalone_seeds']} seed(s) "
        "(a seed sets initialisation and data order), AP on "
        f"{record.get('standalone_split', 'val')} averaged over seeds.",
        f"Intervals: percentile bootstrap ({BOOTSTRAP} resamples) over the architectures and, within each, "
        "over its seeds; the seed row's over the architectures. n/a: fewer than 3 architectures, one seed, "
        "or a side without spread.",
    ]
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_seed = [100 * np.asarray(values) for values in seed_aps(table)]
    x = 100 * table["supernet_" + METRIC].to_numpy()
    y = 100 * table["standalone_" + METRIC].to_numpy()
    spread = np.array([[mean - v.min(), v.max() - mean] for mean, v in zip(y, per_seed)]).T
    fig, ax = plt.subplots(figsize=(5, 4))
    for half, colour, label in ((True, "tab:blue", "top half"), (False, "tab:grey", "bottom half")):
        chosen = table["top_half"].to_numpy() == half
        ax.errorbar(
            x[chosen], y[chosen], yerr=spread[:, chosen], fmt="o", color=colour, capsize=2, label=label
        )
    ax.set_xlabel(f"super-net {METRIC} on the search split (%)")
    ax.set_ylabel(f"standalone {METRIC} on {record.get('standalone_split', 'val')} (%), seed range")
    tau_all, tau_top = record["all"]["kendall_tau"], record["top_half"]["kendall_tau"]
    ax.set_title(f"Kendall tau {tau_all:.2f} (all, n={len(table)}), {tau_top:.2f} (top half)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def smoke_checkpoint(out: Path, settings: RankSettings) -> str:
    """A tiny super-net for the smoke mode (the same one opanas_ea.py --smoke trains)."""
    from raynas.jobs.main_job import smoke_supernet_config
    from raynas.jobs.proxies import prepare_inputs
    from raynas.training.supernet import train_supernet

    cfg = smoke_supernet_config(data=str(out / "data"), out=str(out), workers=1, address=settings.address)
    prepare_inputs(cfg, smoke=True)  # a pretrained body of a few steps, not the 2-minute one
    return str(train_supernet(cfg).checkpoint_dir)


def json_ready(value):
    """NaN as ``null``: the record is JSON a strict reader takes."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def run(settings: RankSettings) -> dict:
    from raynas.search.pool import supernet_config
    from raynas.training.cluster import ensure_ray

    out = settings.out
    ensure_ray(settings.address)
    started = time.perf_counter()
    checkpoint = settings.checkpoint or smoke_checkpoint(out, settings)
    supernet = supernet_config(load_state(checkpoint), checkpoint)
    space = OPANASSpace(num_nodes=supernet.opanas.num_nodes)
    picked = pick(score_pool(checkpoint, space, settings, out), settings.m, settings.pool_seed)
    seed_rows, trained = standalone_runs(picked, supernet, checkpoint, settings, out)
    table = per_arch(picked, seed_rows, space)
    record = {
        "all": agreement(table),
        "top_half": agreement(table[table["top_half"]]),
        "seed_to_seed": seed_to_seed(table),
        "metric": METRIC,
        "pool": settings.pool,
        "pool_seed": settings.pool_seed,
        "m": settings.m,
        "pick": {
            "rule": "stratified_by_rank",
            "top_share": TOP_SHARE,
            "seed": settings.pool_seed,
            "from_top_quarter": int((table["pool_rank"] <= math.ceil(TOP_FRACTION * settings.pool)).sum()),
        },
        "standalone_seeds": settings.standalone_seeds,
        "standalone_split": "/".join(sorted(set(seed_rows["split"].dropna().astype(str)))) or "val"
        if "split" in seed_rows
        else "val",
        "standalone_epochs": int(seed_rows["epochs"].iloc[0]),
        "bootstrap": BOOTSTRAP,
        "supernet_checkpoint": str(checkpoint),
        "runs": len(seed_rows),
        "runs_trained_now": trained,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(out / "rank_correlation.csv", table.to_csv(index=False))
    atomic_write_text(out / "rank_correlation.md", markdown(record))
    atomic_write_json(out / "rank_correlation.json", json_ready(record))
    plot(table, record, out / "rank_correlation.png")
    return record


def kept_pool(path: Path) -> pd.DataFrame | None:
    """The pool scored by an earlier run (``None`` if none): :func:`kept_scores` with each row's name."""
    return kept_scores(path, ("arch_id",), "restore it, or delete it to score the pool again")
