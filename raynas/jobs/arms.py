"""The arms of a standalone comparison: one recipe, a neck and a width per arm, one run per seed, and the
metrics a table reports for it (the test split where the data have one).

Used by OPANAS's evidence (``experiments/opanas_evidence.py``), the strategy comparison's retraining
(``experiments/compare_strategies.py --retrain``), the rank correlation's standalone runs, the proxy
calibration and FAD's head tables (``fad_evidence.py``, ``mask_fad.py``: :func:`train_head_arms`), so
that every table is trained and scored the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from raynas.config import to_dict
from raynas.io import atomic_write_json
from raynas.training.config import OptimConfig, SupernetConfig, TrainConfig

#: where a run's test-split score is kept (keyed by its checkpoint), so a re-run reads it
TEST_METRICS_FILE = "test_metrics.json"

ArmT = TypeVar("ArmT")


@dataclass(frozen=True)
class Arm:
    label: str
    slug: str  # its run folders: ``{slug}_seed{seed}``
    neck: dict | None  # None: torchvision's FPN
    out_channels: int


def arch_id(arch_config: dict) -> str:
    """A short stable name for an architecture (its run folder)."""
    text = json.dumps(arch_config, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def standalone_recipe(supernet: SupernetConfig, epochs: int, kind: str | None = None) -> TrainConfig:
    """The one recipe of every arm: the super-net's data and model (``kind`` another detector, at its
    default anchor sizes), ``epochs`` with the learning rate decayed for the last."""
    optim = replace(supernet.optim, epochs=epochs, milestones=[epochs - 1] if epochs > 1 else [])
    optim = OptimConfig(**vars(optim))  # re-checked
    model = supernet.model
    if kind is not None and kind != model.kind:  # another detector: its own anchors, not the super-net's
        model = replace(model, kind=kind, anchor_sizes=None)
    return TrainConfig(data=supernet.data, model=model, optim=optim, run=supernet.run)


def arm_config(
    recipe: TrainConfig,
    arm: Arm,
    seed: int,
    out: Path,
    *,
    workers: int,
    use_gpu: bool = False,
    address: str | None = None,
) -> TrainConfig:
    """The run of ``arm`` at ``seed`` (the seed sets the initialisation and the data order) under
    ``out/runs``."""
    run = replace(
        recipe.run,
        name=f"{arm.slug}_seed{seed}",
        storage_path=str(out / "runs"),
        seed=seed,
        eval_every=recipe.optim.epochs,
        num_workers=workers,
        use_gpu=use_gpu,
        address=address,
    )
    return replace(recipe, model=replace(recipe.model, out_channels=arm.out_channels), neck=arm.neck, run=run)


#: config keys that say where a run is, not what it computes (a moved or renamed run is the same run)
LOCATION_KEYS = (("run", "address"), ("run", "storage_path"), ("run", "name"))


def recipe_key(cfg: TrainConfig) -> str:
    """A digest of everything a run computes from (its config, where it lives aside): a table that keeps a
    row from an earlier run reuses it only under the same key, so a row of other data, another width or
    another schedule is never mixed into a table."""
    config = to_dict(cfg)
    for section, key in LOCATION_KEYS:
        config.get(section, {}).pop(key, None)
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_time_s(metrics: dict) -> float:
    """Training wall seconds of a run, the last epoch's time x its epochs (the cost a table reports; also
    for a run finished earlier and read back); NaN where the run recorded neither."""
    time, epochs = metrics.get("epoch_time_s"), metrics.get("epoch")
    return float("nan") if time is None or epochs is None else float(time) * float(epochs)


@dataclass(frozen=True)
class ReportedRun:
    """A finished standalone run and the metrics a table reports for it."""

    metrics: dict  # COCO metrics on ``split``, plus ``val_AP``, ``epoch``, ``epoch_time_s`` of the run
    split: str  # "test" where the data have one, else "val" (the digits proxy)
    trained_now: bool  # False: the run was finished before and only read back
    checkpoint_dir: Path


def reported_split(cfg: TrainConfig) -> str:
    """The split a table reports: test where the data have one (it is never used for choices), else val."""
    from raynas.data.loaders import has_test_split

    return "test" if has_test_split(cfg.data) else "val"


def train_and_report(cfg: TrainConfig) -> ReportedRun:
    """Train (skipped when finished) and score on :func:`reported_split`. A test score is kept beside the
    run (``test_metrics.json``, keyed by the checkpoint it scored) and read back on re-run; a damaged or
    stale copy is scored again from the checkpoint."""
    from raynas.training.run_folder import finished_run
    from raynas.training.standalone import evaluate_checkpoint, train

    run_dir = Path(cfg.run.storage_path).resolve() / cfg.run.name
    trained_now = finished_run(run_dir, cfg.optim.epochs) is None
    result = train(cfg)
    split = reported_split(cfg)
    run_facts = {
        "val_AP": result.metrics.get("AP"),
        "epoch": result.metrics.get("epoch"),
        "epoch_time_s": result.metrics.get("epoch_time_s"),
    }
    if split == "val":
        return ReportedRun({**result.metrics, **run_facts}, split, trained_now, result.checkpoint_dir)
    kept = run_dir / TEST_METRICS_FILE
    scored = _checkpoint_identity(result.checkpoint_dir)
    record = None
    if kept.is_file():
        try:
            record = json.loads(kept.read_text())
        except ValueError:
            record = None
    if not _scores(record, scored, kept, result.checkpoint_dir):
        record = {
            "checkpoint": result.checkpoint_dir.name,
            "scored": scored,
            "metrics": evaluate_checkpoint(result.checkpoint_dir, "test"),
        }
        atomic_write_json(kept, record)
    return ReportedRun({**record["metrics"], **run_facts}, split, trained_now, result.checkpoint_dir)


def _checkpoint_identity(checkpoint_dir: Path) -> dict:
    """What a kept test score is keyed by: the checkpoint folder's name and its state file's size and
    modification time (a run trained again after its checkpoints were deleted reuses the folder name)."""
    from raynas.checkpoints import STATE_FILE

    stat = (checkpoint_dir / STATE_FILE).stat()
    return {"checkpoint": checkpoint_dir.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _scores(record: object, scored: dict, kept: Path, checkpoint_dir: Path) -> bool:
    """Whether a kept test score belongs to this checkpoint: its identity matches, or (a score kept before
    identities were recorded) it names the folder and was written after the checkpoint's state file."""
    from raynas.checkpoints import STATE_FILE

    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        return False
    if "scored" in record:
        return record["scored"] == scored
    written_after = kept.stat().st_mtime_ns >= (checkpoint_dir / STATE_FILE).stat().st_mtime_ns
    return record.get("checkpoint") == checkpoint_dir.name and written_after


@dataclass(frozen=True)
class HeadArm:
    """An arm of a head comparison (FAD's tables): the head spec each seed trains (None: torchvision's)."""

    label: str
    slug: str  # its run folders: ``{slug}_seed{seed}``
    head_for_seed: dict[int, dict | None]
    #: which of an arm's networks this is, where one label trains several (FAD random's genotypes), so that
    #: the table can tell the genotypes' spread from the seeds'; None for an arm of one network
    genotype: int | None = None
    #: the searched arm whose genotype this head retrains (its slug; the matched width's too), so that a
    #: shard trains the runs of the searches it made; None for a head that needs no search
    search: str | None = None


def train_arms(
    arms: Sequence[ArmT],
    seeds: int,
    config: Callable[[ArmT, int], TrainConfig],
    row: Callable[[ArmT, int, TrainConfig, ReportedRun], dict],
    on_row: Callable[[list[dict], int], object] = lambda rows, trained: None,
    kept: Callable[[ArmT, int, TrainConfig], dict | None] = lambda arm, seed, cfg: None,
    title: Callable[[ArmT, int], str] = lambda arm, seed: f"{arm.label}, seed {seed}",
    train: Callable[[TrainConfig], ReportedRun] | None = None,
    mine: Callable[[ArmT, int], bool] = lambda arm, seed: True,
) -> tuple[list[dict], int]:
    """The arms x seeds loop of every standalone table: each arm at each seed, seed by seed (a stop leaves
    every arm at some seeds), its run ``config(arm, seed)`` trained and scored by :func:`train_and_report`
    (``train``) and made a ``row``, unless ``kept(arm, seed, cfg)`` gives the row of an earlier table.
    ``on_row(rows, trained)`` runs after every run that was not kept, so a table grows as its runs finish.
    ``mine(arm, seed)``: whether this call trains a run its kept rows lack (a shard leaves the others'
    runs out).
    Returns the rows in plan order and how many runs trained now."""
    train = train or train_and_report
    rows: list[dict] = []
    trained = 0
    for seed in range(seeds):
        for arm in arms:
            cfg = config(arm, seed)
            previous = kept(arm, seed, cfg)
            if previous is not None:
                rows.append(previous)
                continue
            if not mine(arm, seed):
                continue
            print(f"== {title(arm, seed)} ==", flush=True)
            reported = train(cfg)
            trained += reported.trained_now
            rows.append(row(arm, seed, cfg, reported))
            on_row(rows, trained)
    return rows, trained


def train_head_arms(
    base: TrainConfig,
    arms: list[HeadArm],
    seeds: int,
    kept_rows: pd.DataFrame,
    metrics: tuple[str, ...],
    cost: Callable[[TrainConfig, int], dict],
    on_row: Callable[[list[dict], int], object],
    mine: Callable[[HeadArm, int], bool] = lambda arm, seed: True,
) -> tuple[list[dict], int]:
    """:func:`train_arms` over head arms (FAD's tables): a row kept from an earlier table for the same arm,
    seed and head is reused. ``cost(cfg, num_classes)`` gives an arm's cost columns; ``mine``: the runs
    this call owns (a shard's)."""
    from raynas.checkpoints import load_state
    from raynas.studies.tables import head_key, kept_row

    def config(arm: HeadArm, seed: int) -> TrainConfig:
        head = arm.head_for_seed[seed]
        return replace(base, head=head, run=replace(base.run, name=f"{arm.slug}_seed{seed}", seed=seed))

    def row(arm: HeadArm, seed: int, cfg: TrainConfig, reported: ReportedRun) -> dict[str, Any]:
        num_classes = load_state(reported.checkpoint_dir)["num_classes"]
        values = {key: pd.to_numeric(reported.metrics.get(key), errors="coerce") for key in metrics}
        genotype = {} if arm.genotype is None else {"genotype": arm.genotype}
        return {"arm": arm.label, "seed": seed, **genotype, **values, "split": reported.split,
                **cost(cfg, num_classes), "head": head_key(cfg.head)}  # fmt: skip

    def kept(arm: HeadArm, seed: int, cfg: TrainConfig) -> dict | None:
        row = kept_row(kept_rows, arm.label, seed, head_key(cfg.head))
        if row is None or arm.genotype is None:
            return row
        return {**row, "genotype": arm.genotype}  # a table before the column: genotype g was seed g's

    return train_arms(arms, seeds, config, row, on_row, kept, mine=mine)
