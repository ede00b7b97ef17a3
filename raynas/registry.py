"""Names for the classes that a checkpoint or a Ray Train run refers to by string.

A checkpoint records which config class to rebuild its config with, and a Train run which ``Task`` its
workers run. Both are named here, once: a class that moves is one edit of this table, and a checkpoint
written before the names existed (it recorded the dotted path) still loads, because every dotted path of
the table is accepted too. Ray-free and import-light: the classes are imported only when resolved.
"""

from __future__ import annotations

import importlib
from typing import Any

#: name -> the config class of a job (what :func:`raynas.checkpoints.config_from_state` rebuilds)
CONFIGS = {
    "train": "raynas.training.config.TrainConfig",
    "supernet": "raynas.training.config.SupernetConfig",
    "darts": "raynas.training.config.DartsConfig",
    "opanas_darts": "raynas.training.config.OPANASDartsConfig",
}
#: name -> the ``Task`` a Ray Train run's workers run (``raynas.training.launch.fit``)
TASKS = {
    "standalone": "raynas.training.standalone.StandaloneTask",
    "supernet": "raynas.training.supernet.SupernetTask",
    "darts": "raynas.training.darts.DartsTask",
    "opanas_darts": "raynas.training.darts.OPANASDartsTask",
}
#: the detectors raynas builds (``model.kind``; :mod:`raynas.models.detector` builds them), named once here
#: so every layer can check a kind without importing the models
DETECTORS = ("fcos", "retinanet", "faster_rcnn", "cascade_rcnn", "mask_rcnn")
#: the one-stage ones: a dense head on every level (FAD's heads) and no RoI stage (cached body features)
ONE_STAGE = ("fcos", "retinanet")


def canonical(table: dict[str, str], name: str) -> str:
    """The registered name of ``name``: a name of ``table``, or a dotted path in it (older checkpoints).
    A dotted path of a class the table does not hold (a user's own ``Task``) names itself."""
    if not isinstance(name, str):
        raise TypeError(f"a registered name is a string, got {type(name).__name__}")
    if name in table:
        return name
    for key, path in table.items():
        if path == name:
            return key
    if "." in name:
        return name
    raise ValueError(f"{name!r} is not one of {sorted(table)}, nor a dotted path module.Class")


def resolve(table: dict[str, str], name: str) -> type:
    """The class that ``name`` (a registered name or a dotted path) stands for."""
    key = canonical(table, name)
    module, _, attribute = table.get(key, key).rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{name!r} names no importable class ({err})") from err


def name_of(table: dict[str, str], cls: type) -> str:
    """The registered name of ``cls``; the dotted path of a class the table does not hold."""
    return canonical(table, f"{cls.__module__}.{cls.__qualname__}")


def same_entry(table: dict[str, str], a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` name the same class of ``table`` (either spelling); False for anything else,
    e.g. a checkpoint written by a job this library does not know."""
    try:
        return canonical(table, a) == canonical(table, b)
    except (TypeError, ValueError):
        return False
