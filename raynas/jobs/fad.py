"""FAD's experiments' one recipe (``experiments/fad_evidence.py``, ``experiments/mask_fad.py``): the data,
model and schedules every search and retraining run of a table shares, the DARTS search built on it, a
retrained FAD head's spec, the presets that fill in flags, and the checks both scripts make before Ray.

Two recipes (``--proxy``): the digits proxy's (128 px, the pretrained body fine-tuned from its third
stage, batch 4, 600 training images), with which the committed FAD tables were made, and the scenes
proxy's (issue 28: the proxy calibration's 320 px scenes, its context body frozen and cached, every
training image); fad-repshare.txt Sec. 4.1 for what the paper's own settings are (``--paper`` sets its
widths and schedules).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from pathlib import Path

from raynas.config import ConfigError, apply_yaml
from raynas.studies.presets import FAD_DEFAULTS, FAD_PAPER, fill_in
from raynas.studies.recipes import SMOKE_BUDGET, scenes_smoke
from raynas.training.config import DartsConfig, FADConfig, OptimConfig, RunConfig, TrainConfig

#: the training images of a table by default: the digits tables' subset, every training image of scenes
DIGITS_TRAIN_IMAGES, SCENES_TRAIN_IMAGES = 600, 1000
#: the settings a FAD table's rows depend on (the head table adds its detector): rows of another recipe
#: are never mixed into one table
FAD_RECIPE = (
    "search_epochs",
    "search_warmup",
    "epochs",
    "train_images",
    "c_prime",
    "cells_per_group",
    "smoke",
    "paper",
    "proxy",
)
#: what a table's record written before a flag existed was made with: ``--proxy`` digits, no search warm-up
#: (so a committed table is never extended with a warm-up its genotypes were not searched with)
BEFORE_FLAGS = {"proxy": "digits", "search_warmup": 0}
#: the count flags of both FAD experiments, each >= 1
FAD_COUNTS = (
    "seeds",
    "search_epochs",
    "epochs",
    "train_images",
    "c_prime",
    "cells_per_group",
    "train_workers",
)


@dataclass(frozen=True)
class FADSettings:
    """What a FAD table is asked for: the flags of ``experiments/fad_evidence.py`` / ``mask_fad.py`` after
    their presets (:func:`with_fad_presets`), checked. Each script's own flags have defaults here."""

    out: str
    data: str
    seeds: int
    search_epochs: int
    epochs: int
    train_images: int
    c_prime: int
    cells_per_group: int
    train_workers: int = 1
    search_warmup: int = 0  # weights-only epochs before a search's alphas move (FADConfig.arch_warmup_epochs)
    proxy: str = "digits"  # the embedded data: digits (the committed tables) or scenes (issue 28)
    random_genotypes: int = 3  # fad_evidence: FAD random's genotypes, each at every seed
    gpu: bool = False
    address: str | None = None
    paper: bool = False
    smoke: bool = False
    kind: str | None = None  # fad_evidence: the detector (mask_fad trains Mask R-CNN)
    arms: tuple[str, ...] | None = None  # fad_evidence: the searched arms to run (None: all)
    matched_width: bool = True  # fad_evidence: the searched head at the default head's parameters too
    genotype: str | None = None  # mask_fad: retrain this genotype.json instead of searching
    shard: str | None = None  # fad_evidence: "I/N", this call's part of the table (raynas.jobs.head_shards)
    gather: bool = False  # fad_evidence: the shards' rows into --out's table, nothing trained


def fad_settings(args: argparse.Namespace) -> FADSettings:
    """The flags, presets filled in, as :class:`FADSettings` (a flag a script lacks keeps its default)."""
    given = {
        field.name: getattr(args, field.name) for field in fields(FADSettings) if hasattr(args, field.name)
    }
    if given.get("arms") is not None:
        given["arms"] = tuple(given["arms"])
    return FADSettings(**given)


def add_fad_flags(
    parser: argparse.ArgumentParser,
    one_search: bool = True,
    scenes_epochs: int | None = None,
    scenes_warmup: int | None = None,
) -> None:
    """The flags the FAD experiments take: data, budget, width and depth, where to run, the presets
    (``one_search=False``: without ``--search-epochs``, ``--search-warmup`` and ``--c-prime``, which the
    budget sweep varies; ``scenes_epochs`` / ``scenes_warmup``: the script's defaults on scenes, where they
    are not digits')."""
    parser.add_argument(
        "--proxy",
        default="digits",
        choices=("digits", "scenes"),
        help="embedded data: digits (one pyramid level in use; the committed tables) or scenes (every level, "
        "the frozen body's cached outputs; docs/proxy.md)",
    )
    parser.add_argument("--data", default=None, help="dataset root (default data/<proxy>)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per retrained arm (default 3)")
    if one_search:
        parser.add_argument(
            "--search-epochs", type=int, default=None, help="DARTS epochs a search (default 2)"
        )
        on_scenes = "" if scenes_warmup is None else f"; {scenes_warmup} with --proxy scenes"
        parser.add_argument(
            "--search-warmup",
            type=int,
            default=None,
            help="epochs that train the search's weights only, before its --search-epochs (default 0, "
            f"DARTS's reference: alphas move from the first batch{on_scenes})",
        )
    on_scenes = "" if scenes_epochs is None else f"; {scenes_epochs} with --proxy scenes"
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"retraining epochs, x0.1 in the last (default {FAD_DEFAULTS['epochs']}{on_scenes})",
    )
    parser.add_argument(
        "--train-images",
        type=int,
        default=None,
        help="training images, a seeded subset (default: digits 600, scenes 1000)",
    )
    if one_search:
        parser.add_argument(
            "--c-prime", type=int, default=None, help="FAD block width c' (default 24; paper 96)"
        )
    parser.add_argument(
        "--cells-per-group",
        type=int,
        default=None,
        help="cells per group of each retrained FAD head (default 2: Table 3's head parameters)",
    )
    parser.add_argument("--train-workers", type=int, default=1, help="Ray Train workers per run")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--address", default=None)
    parser.add_argument("--paper", action="store_true", help="the paper's widths and schedules")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget (CI)")


def fad_base_config(settings: FADSettings, kind: str) -> TrainConfig:
    """Data, model (detector ``kind``) and schedule shared by the search and every retraining run: on
    digits the committed tables' recipe (128 px, the pretrained body fine-tuned from its third stage, batch
    4); on scenes the proxy calibration's (320 px, the calibration's context body frozen, its outputs
    cached for FCOS and RetinaNet, batch 8, warm-up 100 steps)."""
    from raynas.data.config import DataConfig
    from raynas.models.config import ModelConfig

    if settings.proxy == "scenes":
        from raynas.jobs.proxies import scenes_parts

        data, model = scenes_parts(
            settings.data, kind, train_images=settings.train_images, body_steps=None, batch_size=8,
            search_fraction=0.0,
        )  # fmt: skip
        data = replace(data, max_val_images=200)
    else:
        data = DataConfig(
            root=settings.data, max_train_images=settings.train_images, max_val_images=200, batch_size=4
        )
        model = ModelConfig(
            kind=kind, out_channels=64, min_size=128, max_size=128, backbone_weights="proxy",
            trainable_backbone_layers=3,
        )  # fmt: skip
    warmup = 100 if settings.proxy == "scenes" else 50
    optim = OptimConfig(
        epochs=settings.epochs, lr=0.01, warmup_iters=warmup, milestones=_decay(settings.epochs)
    )
    run = RunConfig(
        name="base", storage_path=str(Path(settings.out) / "runs"), num_workers=settings.train_workers,
        use_gpu=settings.gpu, address=settings.address, eval_every=settings.epochs,
    )  # fmt: skip
    config = TrainConfig(data=data, model=model, optim=optim, run=run)
    if not settings.smoke:
        return config
    config = scenes_smoke(config) if settings.proxy == "scenes" else apply_yaml(config, SMOKE_BUDGET)
    # the smoke budget's sizes, the flags' schedule (a preset's, or one given with --smoke)
    return replace(config, optim=replace(config.optim, epochs=settings.epochs, milestones=[]))


def _decay(epochs: int) -> list[int]:
    """The learning rate x0.1 for the last epoch (none in a one-epoch run)."""
    return [epochs - 1] if epochs > 1 else []


def fad_search_config(base: TrainConfig, settings: FADSettings, name: str, **switches) -> DartsConfig:
    """First-order DARTS of the FAD head on ``base``'s data and model for ``--search-epochs`` after
    ``--search-warmup`` weights-only epochs, in run ``name`` (decay in the last epoch);
    ``switches`` are :class:`~raynas.training.config.FADConfig` fields (Table 2's ablations)."""
    epochs = settings.search_warmup + settings.search_epochs
    optim = OptimConfig(**{**vars(base.optim), "epochs": epochs, "milestones": _decay(epochs)})
    run = replace(base.run, name=name, eval_every=epochs)
    return DartsConfig(
        data=base.data,
        model=base.model,
        optim=optim,
        run=run,
        fad=FADConfig(c_prime=settings.c_prime, arch_warmup_epochs=settings.search_warmup, **switches),
    )


def search_time_s(result) -> float:
    """Wall seconds of a search: its epochs' times summed from the run's curve. A weights-only warm-up epoch
    costs about half a search epoch, so the last epoch's time x the epochs would overstate a warmed-up
    search; that product stands where the run left no whole curve."""
    from raynas.jobs.arms import train_time_s
    from raynas.training.curves import read_curve

    run_dir = getattr(result, "run_dir", None)
    if run_dir is not None and (Path(run_dir) / "tensorboard").is_dir():
        curve = read_curve(run_dir)
        times = curve.get("epoch_time_s")
        if times is not None and times.notna().all() and len(curve) == result.metrics.get("epoch"):
            return float(times.sum())
    return train_time_s(result.metrics)


def fad_head_spec(genotype: dict | str, settings: FADSettings, c_prime: int | None = None) -> dict:
    """A retrained FAD head: the genotype (a mapping or a genotype.json) at width ``c_prime`` (default
    ``--c-prime``), its cells repeated ``--cells-per-group`` times (Sec. 3.1: searched with one)."""
    return {
        "type": "fad",
        "genotype": genotype,
        "c_prime": c_prime or settings.c_prime,
        "cells_per_group": settings.cells_per_group,
    }


def with_fad_presets(args: argparse.Namespace, smoke: dict) -> argparse.Namespace:
    """``--smoke`` (the script's ``smoke`` preset) / ``--paper`` fill in the flags not given (a given flag
    wins); then the retraining depth and the data root."""
    from raynas.jobs.proxies import default_data

    fill_in(args, FAD_DEFAULTS, smoke=smoke, paper=FAD_PAPER)
    if getattr(args, "search_warmup", 0) is None:  # DARTS's reference unless the script's preset set one
        args.search_warmup = 0
    if args.cells_per_group is None:
        from raynas.spaces.fad.head import RETRAIN_CELLS_PER_GROUP

        args.cells_per_group = RETRAIN_CELLS_PER_GROUP
    args.data = args.data or default_data(args.smoke, args.proxy)
    if args.train_images is None:
        args.train_images = SCENES_TRAIN_IMAGES if args.proxy == "scenes" else DIGITS_TRAIN_IMAGES
    return args


def check_cells_per_group(before: dict, settings: FADSettings, out: Path) -> None:
    """A table made before ``--cells-per-group`` existed retrained one cell a group: extend it only so."""
    if before and before["settings"].get("cells_per_group", 1) != settings.cells_per_group:
        raise ConfigError(
            f"{out} holds a table made with cells_per_group=1 (before the flag); run with "
            "--cells-per-group 1 or choose another --out"
        )
