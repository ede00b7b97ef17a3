"""A Train run's folder: is it the same run, is it finished, can Ray Train continue it, and what it leaves.

Ray Train continues whatever run folder it is pointed at; these guards read the folder (``run_info.json``,
the checkpoints and Ray Train's record of them) before the driver starts Ray, so a changed config, a
finished run or a damaged checkpoint is named in one line instead of being continued or failing in a worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raynas.checkpoints import check_checkpoint, load_state
from raynas.config import ConfigError, from_dict, to_dict
from raynas.io import read_job_record, same_place

if TYPE_CHECKING:
    import ray.train

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished training job leaves behind; here because a run folder that already finished is read
    back as one (:func:`finished_run`)."""

    run_dir: Path
    checkpoint_dir: Path
    metrics: dict[str, Any]

    def load_state(self) -> dict[str, Any]:
        return load_state(self.checkpoint_dir)


#: where a run is, not what it is: the run folder itself is the run (a moved or copied one continues)
_LOCATION_KEYS = ("run.address", "run.storage_path", "run.name")
#: Ray Train V2's record of the checkpoints it registered, which it continues a run from
CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"


def _config_differences(
    old: Any, new: Any, same: Callable[[Any, Any], bool] | None = None, prefix: str = ""
) -> list[str]:
    """Dotted keys whose values differ between two config dicts (location keys aside); ``same(a, b)``
    compares two leaf values (default ``==``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _config_differences(old.get(k), new.get(k), same, f"{prefix}{k}.")]
    key = prefix.rstrip(".")
    equal = old == new if same is None else same(old, new)
    return [] if equal or key in _LOCATION_KEYS else [key]


def finished_run(run_dir: Path, epochs: int) -> TrainResult | None:
    """The result of a run in ``run_dir`` that already reached ``epochs``, else ``None``.

    Experiments are sequences of runs; re-running one after an interruption skips what finished (the
    config was checked the same by :func:`check_same_run`, so ``run_info.json`` must be there) and
    continues what did not. A checkpoint whose state does not load (a copy cut short) does not count."""
    if not (run_dir / "run_info.json").is_file():
        return None
    for directory in sorted(run_dir.glob("checkpoint_*"), reverse=True):
        try:
            metrics = json.loads((directory / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        if metrics.get("epoch") != epochs:
            continue
        try:
            load_state(directory)
        except (OSError, ValueError):
            continue
        return TrainResult(run_dir, directory, metrics)
    return None


def read_run_info(run_dir: Path) -> dict[str, Any] | None:
    """The ``run_info.json`` of ``run_dir`` (``None`` when there is none). A damaged one is an error that
    names it: read as "no record", it would turn off the check against a changed config."""
    path = run_dir / "run_info.json"
    if not path.is_file():
        return None
    return read_job_record(
        path,
        f"the config of the run in {run_dir}",
        f"restore it, or delete {run_dir} to start that run again",
    )


def input_digests(cfg: Any) -> dict[str, str]:
    """Digests of the files a run reads that its config names only by path (the pretrained body): a body
    pretrained again at the same path is another run's input, although the config reads the same."""
    import hashlib

    weights = cfg.model.backbone_weights
    if not weights or not Path(weights).is_file():
        return {}
    digest = hashlib.sha256()
    with open(weights, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return {"backbone_weights": digest.hexdigest()}


def check_same_run(
    run_dir: Path,
    config: dict[str, Any],
    config_class: type | None = None,
    inputs: dict[str, str] | None = None,
) -> None:
    """Refuse to start a run in a folder that holds checkpoints of a run with another config.

    Ray Train continues a run whose folder holds checkpoints (that is how a killed driver resumes), so
    starting a *changed* config under the same ``run.name`` would silently continue the old run's weights
    and schedule. The same config continues it, as intended. With ``config_class``, the old config is
    read through it first, so a run written before a setting existed counts as having its default.
    The folder is the run: where it lies is no difference (``run.storage_path`` and ``run.name`` are not
    compared, and recorded paths match by :func:`~raynas.io.same_place`), so a folder reached through a
    symlink, spelt otherwise, moved or copied continues. ``inputs`` (:func:`input_digests`) are compared
    with the recorded ones where the folder's record has them (runs recorded before it do not).
    """
    if not any(p.is_dir() for p in run_dir.glob("checkpoint_*")):
        return  # nothing that Ray Train would continue
    info = read_run_info(run_dir)
    if info is None:
        raise ConfigError(
            f"{run_dir} holds checkpoints but no run_info.json, the record of the config they were trained "
            f"with; restore it, or delete {run_dir} to start that run again"
        )
    old = info["config"]
    if config_class is not None:
        # a key that no longer exists fails to load: then the config is compared as written (and named)
        with contextlib.suppress(ConfigError, ValueError, TypeError):
            old = json.loads(json.dumps(to_dict(from_dict(config_class, old)), default=str))
    old_dir = info.get("run_dir") or _recorded_run_dir(old)
    changed = _config_differences(
        old, json.loads(json.dumps(config, default=str)), lambda a, b: same_place(a, b, old_dir, run_dir)
    )
    recorded = info.get("inputs") or {}
    changed += [f"the content of model.{key}" for key in sorted(set(recorded) & set(inputs or {}))
                if recorded[key] != inputs[key]]  # fmt: skip
    if changed:
        raise ConfigError(
            f"{run_dir} holds checkpoints of an earlier run whose config differs in {changed[:8]}; Ray Train "
            "would continue that run. Give this run a new run.name (or --out), delete that folder, or "
            "rerun with the earlier config to continue it (resume_from / --resume starts from a checkpoint)."
        )


def _recorded_run_dir(config: dict[str, Any]) -> str | None:
    """Where a run recorded before ``run_info.json`` named its folder ran, when its config says so."""
    run = config.get("run") or {}
    storage, name = run.get("storage_path"), run.get("name")
    if isinstance(storage, str) and isinstance(name, str) and os.path.isabs(storage):
        return str(Path(storage) / name)
    return None


def check_run_state(run_dir: Path) -> None:
    """Check what Ray Train would continue the run from, before it starts: its record of the registered
    checkpoints reads, and every checkpoint it lists is there and whole. Otherwise Ray Train fails with
    its traceback, or a worker later on a truncated state file."""
    path = run_dir / CHECKPOINT_SNAPSHOT
    if not path.is_file():
        return  # no checkpoint registered: Ray Train starts the run from its beginning
    fix = f"delete {run_dir} to start that run again, or restore what was there"
    try:
        snapshot = json.loads(path.read_text())
        names = [str(result["checkpoint_dir_name"]) for result in snapshot["checkpoint_results"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{path}, Ray Train's record of the run's checkpoints, is damaged ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:120]}); {fix}"
        ) from err
    for name in names:
        try:
            check_checkpoint(run_dir / name)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{err}, and Ray Train would continue the run from it: {fix}") from err


def remove_unregistered_checkpoints(result: ray.train.Result, keep: str | Path | None = None) -> list[Path]:
    """Delete the ``checkpoint_*`` folders of the run that Ray Train did not register.

    Ray Train copies a checkpoint straight into its final folder and registers it only once every rank
    has reported; a worker killed mid-copy leaves a folder with a truncated state file that the run
    never refers to (the restarted workers redo that epoch). Left there, it looks like the newest
    checkpoint to anyone who picks one by name. ``keep`` (the run's ``resume_from``) is never removed.
    """
    registered = {Path(checkpoint.path).resolve() for checkpoint, _ in result.best_checkpoints or []}
    registered.add(Path(result.checkpoint.path).resolve())
    if keep is not None:
        registered.add(Path(keep).resolve())
    removed = [
        directory
        for directory in sorted(Path(result.path).glob("checkpoint_*"))
        if directory.is_dir() and directory.resolve() not in registered
    ]
    for directory in removed:
        shutil.rmtree(directory, ignore_errors=True)
    if removed:
        logger.warning(
            "removed %d checkpoint folder(s) of failed attempts that Ray Train never registered: %s",
            len(removed),
            ", ".join(d.name for d in removed),
        )
    return removed
