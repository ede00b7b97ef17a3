"""The proxy's calibration (issue 26): does the scenes proxy make the neck matter, repeatably? Standalone
necks under one recipe, seeds, random necks and the context rules switched off, scored on the test split,
with the goals of issue 26 measured (``experiments/proxy_calibration.py`` parses its flags into
:class:`CalibrationSettings` and runs :func:`run`; what each group is: its docstring).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from raynas.config import apply_yaml, load_yaml
from raynas.data.scene_layout import DEFAULT_LAYOUT
from raynas.io import atomic_write_json
from raynas.jobs.arms import train_and_report
from raynas.jobs.calibration_tables import write_outputs
from raynas.jobs.proxies import SMOKE_PRETRAIN_STEPS
from raynas.jobs.shards import read_kept_rows, shard_of, shard_runs, unmatched_kept_note
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
    note = unmatched_kept_note(kept, [identity for _, _, identity in to_train])
    if note:
        print(note, file=sys.stderr, flush=True)
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
