"""The proxy's calibration (issue 26): does the scenes proxy make the neck matter, repeatably? Standalone
necks under one recipe, seeds, random necks and the context rules switched off, scored on the test split,
with the goals of issue 26 measured (``experiments/proxy_calibration.py`` parses its flags into
:class:`CalibrationSettings` and runs :func:`run`; what each group is: its docstring).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from raynas.config import ConfigError, apply_yaml, load_yaml
from raynas.data.scene_layout import DEFAULT_LAYOUT
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.arms import train_and_report
from raynas.jobs.proxies import SMOKE_PRETRAIN_STEPS
from raynas.studies.recipes import SMOKE_BUDGET
from raynas.training.config import TrainConfig

METRICS = ("AP", "AP50", "APs", "APm", "APl")
TAGGED = ("small", "large")  # the roles a context rule names: zone type, mark
LATERAL = {"e0_1": "skip"}
TOP_DOWN = {"e0_1": "top_down"}
FPN_GN = {"type": "fpn", "norm": "gn"}
NAMED_SLUGS = (
    "fpn",
    "lateral",
    "topdown",
    "panet",
    "allskip",
    "fpn_gn",
)  # torchvision's FPN with GroupNorm after its convs, as the paths have
PANET = {"e0_1": "top_down", "e1_2": "bottom_up"}
#: the goals of issue 26, measured on the test split
GOAL_GAP_AP, GOAL_GAP_STD, GOAL_PANET_STD, GOAL_SPREAD, GOAL_TAU, GOAL_CONTROL_STD = (
    3.0,
    5.0,
    3.0,
    3.0,
    0.6,
    2.0,
)


@dataclass(frozen=True)
class Run:
    group: str  # named | random | control
    arm: str
    slug: str
    neck: dict | None  # None: torchvision's FPN
    seed: int


@dataclass(frozen=True)
class CalibrationSettings:
    """What a calibration is asked for: the flags of ``experiments/proxy_calibration.py``, checked, the
    defaults that depend on others filled in."""

    recipe_file: Path  # the one recipe (experiments/configs/scenes_calibration.yaml)
    data: str  # the scenes data root (generated if absent)
    out: str  # where runs and tables go
    groups: tuple[str, ...] = ("named", "random", "control")  # in order
    body: str = "context"  # the frozen body: glyphs, or context too
    layout: str = DEFAULT_LAYOUT  # the scenes layout
    seeds: int = 3  # per named and control neck
    random_necks: int = 16
    random_seeds: int = 2
    epochs: int | None = None  # None: the recipe's
    named: str | None = None  # only these named necks, comma-separated
    train_workers: int = 1
    gpu: bool = False
    address: str | None = None
    shard: str | None = None  # "I/N": runs I, I+N, ... of the plan's runs that kept rows do not cover
    gather: bool = False  # tables from the finished runs only
    kept_rows: str | None = None  # a calibration.csv of runs finished elsewhere
    smoke: bool = False


#: what a kept row must hold to stand for a run: which run, and what it was computed from
KEPT_KEYS = ("group", "arm", "seed", "neck", "recipe", "body")


def read_kept_rows(path: str) -> dict[tuple, dict]:
    """``--kept-rows``: the rows of an earlier calibration by :data:`KEPT_KEYS`, checked (one line for a
    missing or unreadable file or one without those columns)."""
    fix = "give a calibration.csv written by this script (with recipe and body columns), or drop --kept-rows"
    try:
        table = pd.read_csv(path, dtype={"recipe": str, "body": str})
    except FileNotFoundError:
        raise ConfigError(f"--kept-rows {path!r}: no such file; {fix}") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"--kept-rows {path!r} cannot be read as CSV ({error}); {fix}") from None
    missing = [key for key in KEPT_KEYS if key not in table.columns]
    if missing:
        raise ConfigError(f"--kept-rows {path!r} has no column(s) {missing}; {fix}")
    table[["recipe", "body"]] = table[["recipe", "body"]].fillna("")  # a run without a pretrained body
    return {tuple(row[key] for key in KEPT_KEYS): row for row in table.to_dict("records")}


def run_identity(item: Run, cfg: TrainConfig, body: str) -> dict:
    """The columns that say which run a row is and what it was computed from: the recipe without where the
    run lives (:func:`raynas.jobs.arms.recipe_key`) and ``body``, the pretrained body's digest
    (:func:`body_digest`: a body pretrained again elsewhere is the same input only if it came out byte for
    byte the same)."""
    from raynas.jobs.arms import recipe_key

    return {"group": item.group, "arm": item.arm, "seed": item.seed,
            "neck": json.dumps(item.neck, sort_keys=True) if item.neck else "fpn",
            "recipe": recipe_key(cfg), "body": body}  # fmt: skip


def split_kept(runs: list[Run], base: TrainConfig, kept: dict[tuple, dict], body: str) -> tuple[list, list]:
    """The kept rows that stand for runs of the plan; the rest as (run, config, identity) to train."""
    rows, to_train = [], []
    for item in runs:
        cfg = run_config(base, item)
        identity = run_identity(item, cfg, body)
        if tuple(identity.values()) in kept:
            rows.append(kept[tuple(identity.values())])
        else:
            to_train.append((item, cfg, identity))
    return rows, to_train


def body_digest(base: TrainConfig) -> str:
    """The short digest of the body every run of the calibration starts from (the control's too), read
    once: the body file is tens of MB."""
    from raynas.training.run_folder import input_digests

    return input_digests(base).get("backbone_weights", "")[:12]


def shard_of(text: str) -> tuple[int, int]:
    """``"I/N"`` as (I, N), checked."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise ConfigError(f"--shard takes I/N with 0 <= I < N (e.g. 0/2), got {text!r}")
    return int(index), int(count)


def shard_runs(runs: list, shard: str) -> list:
    """The runs of shard ``I/N``: every N-th from the I-th, so that shards side by side share the plan's
    order (what finishes together in the plan finishes together across shards) and together cover it once.
    Shards started with the same kept rows deal the same runs."""
    index, count = shard_of(shard)
    return runs[index::count]


def recipe(settings: CalibrationSettings) -> TrainConfig:
    """The one recipe: the YAML, the data root, the proxy's anchor sizes, ``--epochs`` (decay in the last
    quarter), the smoke budget over it all with ``--smoke``."""
    from raynas.data.scenes import scenes_anchor_sizes
    from raynas.models.config import proxy_weights_path

    cfg = load_yaml(TrainConfig, settings.recipe_file)
    if settings.smoke:
        cfg = apply_yaml(cfg, SMOKE_BUDGET)
        cfg = replace(cfg, data=replace(cfg.data, num_test=8, image_size=128, max_test_images=None),
                      model=replace(cfg.model, min_size=128, max_size=128))  # fmt: skip
    data = replace(cfg.data, root=settings.data, scenes_layout=settings.layout)
    model = replace(
        cfg.model,
        anchor_sizes=list(scenes_anchor_sizes(data.image_size)),
        backbone_weights=proxy_weights_path(settings.data, cfg.model.backbone, settings.body),
    )
    optim = cfg.optim
    if settings.epochs is not None:
        optim = replace(
            optim,
            epochs=settings.epochs,
            milestones=[max(1, settings.epochs * 3 // 4)] if settings.epochs > 1 else [],
        )
    run = replace(
        cfg.run,
        storage_path=str(Path(settings.out) / "runs"),
        num_workers=settings.train_workers,
        use_gpu=settings.gpu,
        address=settings.address,
        eval_every=optim.epochs,
    )
    return TrainConfig(data=data, model=model, optim=optim, run=run)


def neck_spec(edges: dict[str, str] | None) -> dict | None:
    """The ``opa_fpn`` spec of a DAG neck (edges left out are ``none``), with the main job's path options."""
    if edges is None:
        return None
    from raynas.models.build import searched_neck_spec
    from raynas.spaces.opanas import OPANASSpace
    from raynas.training.config import OPANASConfig

    space = OPANASSpace()
    arch = space.from_edges({tuple(int(n) for n in k[1:].split("_")): v for k, v in edges.items()})
    return searched_neck_spec(space.to_config(arch), OPANASConfig(norm="gn"))


def random_necks(count: int, seed: int = 2026) -> list[dict]:
    """``count`` distinct random OPANAS networks (distinct after canonicalisation), from a fixed seed."""
    from raynas.spaces.opanas import OPANASSpace

    space, rng, seen, necks = OPANASSpace(), random.Random(seed), set(), []
    while len(necks) < count:
        arch = space.sample(rng)
        if space.canonical(arch) in seen:
            continue
        seen.add(space.canonical(arch))
        necks.append(space.to_config(arch))
    return necks


def plan(settings: CalibrationSettings) -> list[Run]:
    """The runs in order: the named and control necks seed by seed (an interrupted calibration leaves every
    neck of the group at some seeds, so their means compare), the random necks neck by neck (their goals
    compare a neck's seeds, so an interrupted calibration leaves pairs to measure them on). ``--smoke``:
    two named necks, one random, one control, one seed each."""
    named = [("FPN", "fpn", None), ("lateral-only", "lateral", neck_spec(LATERAL)),
             ("top-down", "topdown", neck_spec(TOP_DOWN)), ("PANet-like", "panet", neck_spec(PANET)),
             ("all-skip", "allskip", neck_spec({key: "skip" for key in _all_keys()})),
             ("FPN (GN)", "fpn_gn", FPN_GN)]  # fmt: skip
    if settings.smoke:
        named = named[:2]
    control = named[:2]  # FPN and lateral-only
    if settings.named:
        named = [entry for entry in named if entry[1] in settings.named.split(",")]
    runs: list[Run] = []
    for group in settings.groups:
        if group == "named":
            for seed in range(settings.seeds):
                runs += [Run("named", arm, slug, spec, seed) for arm, slug, spec in named]
        elif group == "random":
            for k, edges in enumerate(random_necks(settings.random_necks)):
                for seed in range(settings.random_seeds):
                    runs.append(Run("random", f"random {k + 1}", f"random{k + 1}", neck_spec(edges), seed))
        else:
            for seed in range(settings.seeds):
                for arm, slug, spec in control[: 1 if settings.smoke else 2]:
                    runs.append(Run("control", f"{arm} (context off)", f"{slug}_off", spec, seed))
    return runs


def _all_keys() -> list[str]:
    from raynas.spaces.opanas import OPANASSpace

    return list(OPANASSpace().keys)


def run_config(base: TrainConfig, run: Run) -> TrainConfig:
    data = base.data
    if run.group == "control":  # the same images, labelled by local cues; the main data's pretrained body
        data = replace(data, root=f"{base.data.root.rstrip('/')}_context_off", context_small=False,
                       context_large=False)  # fmt: skip
    return replace(
        base,
        data=data,
        neck=run.neck,
        run=replace(base.run, name=f"{run.slug}_seed{run.seed}", seed=run.seed),
    )


def _pooled(stds: pd.Series) -> float:
    """The pooled seed std of arms (root mean square of their stds); NaN where no arm has two seeds."""
    values = stds.dropna().to_numpy()
    return float(np.sqrt(np.mean(values**2))) if len(values) else float("nan")


def goals(frame: pd.DataFrame) -> dict:
    """The acceptance of issue 26, measured (None where its runs are not there yet). APs in points. The
    random necks' goals compare seeds 0 and 1 (the issue's two seeds; a third is left out of them)."""
    from raynas.evaluation.ranking import rank_agreement

    ap = frame.assign(AP=100 * frame["AP"], APl=100 * frame["APl"])
    named = ap[ap["group"] == "named"].groupby("arm")
    out: dict = {}
    stds = named["AP"].std(ddof=1)
    means, large = named["AP"].mean(), named["APl"].mean()
    if {"FPN", "lateral-only"} <= set(means.index):
        pooled = _pooled(stds)
        gap = float(means["FPN"] - means["lateral-only"])
        out["fpn_minus_lateral_AP"] = gap
        out["pooled_seed_std_AP"] = pooled
        out["goal_fpn_gap"] = bool(gap >= max(GOAL_GAP_AP, GOAL_GAP_STD * pooled))
    for arm, key in (("top-down", "top_down"), ("FPN (GN)", "fpn_gn")):  # the path, apart from the FPN's code
        if {arm, "lateral-only"} <= set(means.index):
            out[f"{key}_minus_lateral_AP"] = float(means[arm] - means["lateral-only"])
    if {"FPN", "PANet-like"} <= set(means.index):
        std_l = float(named["APl"].std(ddof=1).get("FPN", np.nan))
        out["panet_minus_fpn_APl"] = float(large["PANet-like"] - large["FPN"])
        out["fpn_APl_seed_std"] = std_l
        out["goal_panet_large"] = bool(out["panet_minus_fpn_APl"] >= GOAL_PANET_STD * std_l)
    rand = ap[ap["group"] == "random"]
    # both goals compare a neck's two seeds: measured on the necks that have both (a stop leaves pairs)
    wide = rand.pivot_table(index="arm", columns="seed", values="AP").reindex(columns=[0, 1]).dropna()
    if len(wide) >= 3:
        between = float(wide.mean(axis=1).std(ddof=1))
        within = _pooled(wide.std(axis=1, ddof=1))
        agreement = rank_agreement(wide[0].to_numpy(), wide[1].to_numpy())
        out.update(random_pairs=len(wide), random_between_arch_std=between, random_within_arch_std=within)
        out.update(random_seed_tau=agreement["kendall_tau"], random_seed_tau_low=agreement["kendall_tau_low"],
                   random_seed_tau_high=agreement["kendall_tau_high"])  # fmt: skip
        out["goal_spread"] = bool(between >= GOAL_SPREAD * within)
        out["goal_tau"] = bool(agreement["kendall_tau"] >= GOAL_TAU)
    control = ap[ap["group"] == "control"].groupby("arm")["AP"]
    if {"FPN (context off)", "lateral-only (context off)"} <= set(control.groups):
        gap = float(control.mean()["FPN (context off)"] - control.mean()["lateral-only (context off)"])
        std = _pooled(control.std(ddof=1))
        out.update(
            control_gap_AP=gap, control_pooled_std=std, goal_control=bool(abs(gap) < GOAL_CONTROL_STD * std)
        )
    times = frame["epoch_time_s"].dropna()
    if len(times):
        out["median_epoch_time_s"] = float(times.median())
        out["goal_epoch_time"] = bool(out["median_epoch_time_s"] <= 60)
    return out


def markdown(frame: pd.DataFrame, measured: dict, missing: list[str] | None = None) -> str:
    from raynas.studies import arms_markdown, compare_arms

    lines = ["# Proxy calibration (test split, AP in %)", ""]
    named = frame[frame["group"].isin(["named", "control"])]
    for group, baseline in (("named", "FPN"), ("control", "FPN (context off)")):
        rows = named[named["group"] == group]
        if baseline in set(rows["arm"]):
            table = compare_arms(rows, "AP", baseline=baseline)
            lines += [f"## {group}", "", arms_markdown(table, scale=100, digits=1, metric="AP"), ""]
    rand = frame[frame["group"] == "random"]
    if len(rand):
        per = rand.assign(AP=100 * rand["AP"]).pivot_table(index="arm", columns="seed", values="AP")
        per = per.reindex(sorted(per.index, key=lambda arm: int(arm.split()[-1])))
        header = "| neck | " + " | ".join(f"seed {s}" for s in per.columns) + " |"
        lines += ["## random necks (AP per seed)", "", header, "|---" * (len(per.columns) + 1) + "|"]
        lines += [f"| {arm} | " + " | ".join(f"{v:.1f}" for v in row) + " |" for arm, row in per.iterrows()]
        lines.append("")
    if {"small_tag_right", "large_tag_right"} <= set(frame.columns):
        tags = frame.groupby(["group", "arm"], sort=False)[["small_tag_right", "large_tag_right"]].mean()
        lines += [
            "## tags right where the glyph is found (test, %, mean over seeds; chance 50)",
            "",
            "| group | arm | small glyphs (zone type) | large glyphs (mark) |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {group} | {arm} | {100 * row.small_tag_right:.1f} | {100 * row.large_tag_right:.1f} |"
            for (group, arm), row in tags.iterrows()
        ]
        lines.append("")
    lines += ["## goals (issue 26)", ""]
    lines += [f"- {key}: {value:.3g}" if isinstance(value, float) else f"- {key}: {value}"
              for key, value in measured.items()]  # fmt: skip
    if missing:
        lines += [
            "",
            f"Not finished yet ({len(missing)} runs of the plan, left out above): " + ", ".join(missing),
        ]
    return "\n".join(lines) + "\n"


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = frame.assign(AP=100 * frame["AP"]).groupby("arm", sort=False)["AP"]
    means, stds = grouped.mean(), grouped.std(ddof=1).fillna(0)
    fig, axis = plt.subplots(figsize=(max(6, 0.45 * len(means)), 4))
    axis.bar(range(len(means)), means, yerr=stds, capsize=3)
    axis.set_xticks(range(len(means)), means.index, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("AP on test (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(settings: CalibrationSettings, base: TrainConfig) -> dict:
    from raynas.training.inputs import ensure_inputs
    from raynas.training.pretrain import ensure_proxy_weights

    out, started = Path(settings.out), time.perf_counter()
    runs = plan(settings)
    if settings.shard is not None:
        out = out / "shard-{}-of-{}".format(*shard_of(settings.shard))
    # a seconds-scale body exercises every part with --smoke; one writer when shards start together
    steps = SMOKE_PRETRAIN_STEPS if settings.smoke else None
    ensure_proxy_weights(
        base.model.backbone_weights,
        base.model.backbone,
        "scenes",
        settings.body,
        steps,
        settings.layout,
        smoke=settings.smoke,
    )
    # the data, the body and its cached outputs once, before the runs (the control runs reuse this body), so
    # that shards started side by side after this point never make the same file
    ensure_inputs(base)
    if "control" in settings.groups:
        ensure_inputs(run_config(base, Run("control", "", "", None, 0)))
    from raynas.training.run_folder import finished_run

    kept = read_kept_rows(settings.kept_rows) if settings.kept_rows else {}
    body = body_digest(base)
    rows, to_train = split_kept(runs, base, kept, body)
    trained, missing = 0, []
    if settings.shard is not None:  # shards deal the runs left to train, so none idles on kept ones
        to_train = shard_runs(to_train, settings.shard)
    for item, cfg, identity in to_train:
        run_dir = Path(cfg.run.storage_path).resolve() / cfg.run.name
        if settings.gather and finished_run(run_dir, cfg.optim.epochs) is None:
            missing.append(f"{item.arm} seed {item.seed}")
            continue
        print(f"== {item.arm}, seed {item.seed} ==", flush=True)
        reported = train_and_report(cfg)  # scored on the test split, kept beside the run
        metrics, trained = reported.metrics, trained + reported.trained_now
        tags = kept_tag_accuracy(reported.checkpoint_dir)
        rows.append({**identity, **{k: metrics.get(k) for k in (*METRICS, "val_AP", "epoch_time_s")},
                     **{f"{role}_tag_right": tags[role]["tag_right"] for role in TAGGED}})  # fmt: skip
        write_outputs(out, rows, trained, missing, started)  # after every run: partial tables
    return write_outputs(out, rows, trained, missing, started)


def kept_tag_accuracy(checkpoint_dir: Path) -> dict:
    """:func:`raynas.studies.context_probe.tag_accuracy` on test, kept beside the run (``tag_accuracy.json``,
    keyed by the checkpoint it scored) and read back on re-run."""
    from raynas.studies.context_probe import tag_accuracy

    kept = checkpoint_dir.parent / "tag_accuracy.json"
    roles = _kept_roles(kept, checkpoint_dir.name)
    if roles is not None:
        return roles
    roles = tag_accuracy(checkpoint_dir, "test")
    atomic_write_json(kept, {"checkpoint": checkpoint_dir.name, "roles": roles})
    return roles


def _kept_roles(kept: Path, checkpoint: str) -> dict | None:
    """The tag accuracy kept for ``checkpoint``; None where there is none yet or it is damaged (then it is
    scored again)."""
    try:
        record = json.loads(kept.read_text())
        return record["roles"] if record["checkpoint"] == checkpoint else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_outputs(out: Path, rows: list[dict], trained: int, missing: list[str], started: float) -> dict:
    """``calibration.csv`` / ``.md`` / ``.json`` / ``.png`` from the rows so far; returns the record."""
    record = {"runs": len(rows), "runs_trained_now": trained, "missing_runs": missing,
              "wall_time_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    if not rows:
        atomic_write_json(out / "calibration.json", record)
        return record
    frame = pd.DataFrame(rows)
    measured = goals(frame)
    atomic_write_text(out / "calibration.csv", frame.to_csv(index=False))
    atomic_write_text(out / "calibration.md", markdown(frame, measured, missing))
    record = {**measured, **record}
    atomic_write_json(out / "calibration.json", record)
    plot(frame, out / "calibration.png")
    return record
