"""The arms of a standalone comparison: one recipe, a neck and a width per arm, one run per seed.

OPANAS's evidence (``experiments/opanas_evidence.py``) and the strategy comparison's retraining
(``experiments/compare_strategies.py --retrain``) train their arms with these, so an architecture found by
both is the same run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from raynas.training.config import OptimConfig, SupernetConfig, TrainConfig


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
    """The one recipe of every arm: the super-net's data and model (``kind`` another detector), ``epochs``
    with the learning rate decayed for the last."""
    optim = replace(supernet.optim, epochs=epochs, milestones=[epochs - 1] if epochs > 1 else [])
    optim = OptimConfig(**vars(optim))  # re-checked
    model = supernet.model if kind is None else replace(supernet.model, kind=kind)
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
