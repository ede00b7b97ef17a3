"""Reading raynas checkpoints without Ray (scorer actors, notebooks, the full-training phase).

A checkpoint is a directory with ``state.pt`` (weights, optimiser state, epoch, the job's config as
a plain dict and the dotted name of its config class), ``config.yaml`` and ``metrics.json``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raynas.config import from_dict

STATE_FILE = "state.pt"


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


def config_from_state(state: dict[str, Any]) -> Any:
    """The typed config object the checkpoint was trained with."""
    module, _, name = state["config_class"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return from_dict(cls, state["config"], where="checkpoint config")


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
