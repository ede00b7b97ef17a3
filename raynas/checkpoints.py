"""The raynas checkpoint format: its one writer and its readers, without Ray (training workers, scorer
actors, notebooks, the full-training phase, tests and benchmarks all go through here).

A checkpoint is a directory with ``state.pt`` (weights, optimiser state, epoch, the job's config as
a plain dict and the dotted name of its config class), ``config.yaml`` and ``metrics.json``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raynas.config import dump_yaml, from_dict, to_dict
from raynas.io import atomic_torch_save, atomic_write_json, atomic_write_text
from raynas.registry import CONFIGS, TASKS, canonical, name_of, resolve

STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"


def write_checkpoint(
    directory: str | Path,
    config: Any,
    task: str,
    model: dict[str, torch.Tensor],
    num_classes: int,
    epoch: int,
    step: int,
    optim: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of a job with typed ``config`` into ``directory``; returns ``directory``.

    ``task`` names the job's ``Task`` class (:data:`raynas.registry.TASKS`), ``model`` the unwrapped state
    dict, ``optim`` the state dicts of its optimisers and schedulers by name, ``extra`` task-specific
    values (e.g. a derived genotype). The one writer, so that what :func:`load_state`,
    :func:`config_from_state` and :func:`load_detector` read is written the same way by training, tests
    and benchmarks.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metrics = {} if metrics is None else metrics
    config_class = type(config)
    state = {
        "model": model,
        "optim": {} if optim is None else optim,
        "epoch": epoch,
        "step": step,
        "config": to_dict(config),
        "task": canonical(TASKS, task),
        "config_class": name_of(CONFIGS, config_class),
        "num_classes": num_classes,
        "metrics": metrics,
        **({} if extra is None else extra),
    }
    atomic_torch_save(state, directory / STATE_FILE)
    atomic_write_text(directory / CONFIG_FILE, dump_yaml(config))  # atomic: a full disk names the file
    atomic_write_json(directory / METRICS_FILE, metrics)
    return directory


def load_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The raw checkpoint dictionary; a clear error when the folder is not a raynas checkpoint."""
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(checkpoint_dir)!r} is not a raynas checkpoint (no {STATE_FILE}); pass the "
            "checkpoint_* folder that a training run wrote"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which
        raise ValueError(f"could not read checkpoint {str(path)!r}: {err}") from err


def check_checkpoint(checkpoint_dir: str | Path) -> None:
    """Check, cheaply, that a checkpoint folder is there and whole: its state file is a complete archive
    (``torch.save`` writes a zip, whose directory sits at the end: a copy cut short has none). No
    ``torch.load``: the state of a large detector takes seconds to read."""
    path = Path(checkpoint_dir) / STATE_FILE
    if not Path(checkpoint_dir).is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(checkpoint_dir)!r} is missing")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint folder {str(checkpoint_dir)!r} has no {STATE_FILE}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"checkpoint file {str(path)!r} is cut short or not a torch.save file")


def config_from_state(state: dict[str, Any]) -> Any:
    """The typed config object the checkpoint was trained with."""
    return from_dict(resolve(CONFIGS, state["config_class"]), state["config"], where="checkpoint config")


def load_detector(checkpoint_dir: str | Path, expect: str | None = None) -> tuple[nn.Module, Any, dict]:
    """Rebuild the detector of a checkpoint and load its weights: ``(model, config, state)``.

    ``expect`` (e.g. ``"opanas_supernet"``) checks the neck type so a checkpoint from another
    space or job is rejected with a message instead of a shape mismatch deep inside torch.
    """
    from raynas.models.build import build_model

    state = load_state(checkpoint_dir)
    cfg = config_from_state(state)
    neck = getattr(cfg, "neck", None)
    neck_type = (neck or {}).get("type", "fpn")
    if expect is not None and neck_type != expect:
        raise ValueError(
            f"checkpoint {str(checkpoint_dir)!r} holds a {neck_type!r} neck, "
            f"not {expect!r}; pass a checkpoint written by the matching training job"
        )
    model = build_model(cfg.model, state["num_classes"], neck, getattr(cfg, "head", None))
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(checkpoint_dir)!r} does not match the model its config describes "
            f"(missing keys: {missing[:5]}, unexpected keys: {unexpected[:5]})"
        )
    return model, cfg, state
