"""Driver side of a training job: launch a ``TorchTrainer`` on a checked run folder, translate failures.

The same function serves the CLI, the experiment scripts and the tests; only the ``Task`` differs. Which
Ray it runs on is :mod:`raynas.training.cluster`'s; whether the run folder may be continued is
:mod:`raynas.training.run_folder`'s.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchTrainer

from raynas.checkpoints import STATE_FILE, load_state
from raynas.config import ConfigError, check_writable_folder, to_dict
from raynas.errors import DiskFullError, WorkerUserError, is_disk_full, unwrap, user_message
from raynas.io import atomic_write_json, claim_folder, run_info
from raynas.registry import TASKS, canonical, resolve, same_entry
from raynas.training.cluster import attach_address, attached_to_cluster, check_resources, ensure_ray
from raynas.training.inputs import ensure_inputs
from raynas.training.ray_hooks import train_stops_on_signals
from raynas.training.run_folder import (
    TrainResult,
    check_run_state,
    check_same_run,
    finished_run,
    input_digests,
    remove_unregistered_checkpoints,
)

logger = logging.getLogger(__name__)


def with_absolute_paths(cfg: Any) -> Any:
    """A copy of ``cfg`` whose data and weight paths are absolute (resolved on the driver).

    Ray Train workers run in a folder of their own (``<session>/artifacts/<run>``), so a relative
    ``data.root`` would make every worker generate (or miss) its own copy of the data there."""
    cfg = copy.deepcopy(cfg)
    data = cfg.data
    for name in ("root", "train_images", "train_annotations", "val_images", "val_annotations"):
        value = getattr(data, name)
        if value is not None:
            setattr(data, name, str(Path(value).expanduser().resolve()))
    weights = cfg.model.backbone_weights
    if weights is not None and (Path(weights).exists() or weights.endswith((".pt", ".pth"))):
        cfg.model.backbone_weights = str(Path(weights).expanduser().resolve())
    return cfg


def preflight(task: str, cfg: Any, resume_from: str | Path | None = None) -> None:
    """Check on the driver what would otherwise fail inside a Ray Train worker, where the error reaches
    the user wrapped in Ray's traceback: the annotation files parse, the model builds (neck and head
    specs, genotype, backbone weights), and a resume checkpoint was written by this kind of job for this
    model. Data the driver cannot see (on a cluster) is left to the workers."""
    from raynas.data.loaders import base_dataset, build_dataset

    visible = cfg.data.format == "digits" or Path(cfg.data.train_annotations or cfg.data.root).exists()
    num_classes = 91  # only used to build the model when the driver cannot see the data
    if visible or attach_address(cfg.run.address) is None:
        for split in ("train", "val"):
            num_classes = base_dataset(build_dataset(cfg.data, split)).num_classes
    task_cls = resolve(TASKS, task)
    model = task_cls(cfg).build_model(num_classes)
    if resume_from is None:
        return
    if not (Path(resume_from) / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"cannot resume: {str(resume_from)!r} is not a raynas checkpoint (no {STATE_FILE})"
        )
    state = load_state(resume_from)
    where = f"cannot resume from {str(resume_from)!r}"
    if not same_entry(TASKS, state.get("task"), task):
        raise ConfigError(
            f"{where}: it was written by {state.get('task')!r}, not {task!r}; "
            "pass a checkpoint of this kind of job"
        )
    try:
        result = model.load_state_dict(state["model"], strict=False)
        problems = result.missing_keys[:3] + result.unexpected_keys[:3]
    except RuntimeError as err:  # tensors of other shapes
        problems = [" ".join(str(err).split())[:200]]
    if problems or state.get("num_classes") != num_classes:
        raise ConfigError(
            f"{where}: its model does not match this config's ({problems}, {state.get('num_classes')} vs "
            f"{num_classes} classes); resume with the config it was trained with"
        )


def fit(task: str, cfg: Any, resume_from: str | Path | None = None) -> TrainResult:
    """Run ``task`` (a name of :data:`raynas.registry.TASKS`: ``"standalone"``, ``"supernet"``, ``"darts"``,
    ``"opanas_darts"``) with ``cfg`` on Ray Train and return its final state.

    ``resume_from``: a checkpoint directory of an earlier run; the run continues at its next epoch.
    Within a run, ``run.max_failures`` restarts dead workers from the last checkpoint.
    """
    task = canonical(TASKS, task)
    cfg = with_absolute_paths(cfg)
    run = cfg.run
    check_writable_folder(run.storage_path, "run.storage_path")
    # one job per run folder, claimed before anything is checked against it or written into it
    with claim_folder(Path(run.storage_path).resolve() / run.name, "run folder"):
        return _fit_claimed(task, cfg, resume_from)


def _fit_claimed(task: str, cfg: Any, resume_from: str | Path | None) -> TrainResult:
    """:func:`fit` once this job holds its run folder."""
    run = cfg.run
    ensure_inputs(cfg)
    preflight(task, cfg, resume_from)
    resume = None
    if resume_from is not None:
        resume = ray.train.Checkpoint.from_directory(str(Path(resume_from).resolve()))
    storage = Path(run.storage_path).resolve()
    info = run_info(
        cfg,
        task=task,
        inputs=input_digests(cfg),
        resume_from=str(resume_from) if resume_from is not None else None,
        run_dir=str(storage / run.name),  # where it ran: a moved run folder maps the paths it records
    )
    check_same_run(storage / run.name, info["config"], type(cfg), info["inputs"])
    own = [p for p in (storage / run.name).glob("checkpoint_*") if p.is_dir()]
    if (
        resume_from is not None
        and own
        and Path(resume_from).resolve().parent != (storage / run.name).resolve()
    ):
        raise ConfigError(
            f"{storage / run.name} already holds checkpoints of its own run, which Ray Train would continue "
            f"instead of {str(resume_from)!r}; give this run a new run.name (or --out), or drop --resume"
        )
    if resume_from is None:
        done = finished_run(storage / run.name, cfg.optim.epochs)
        if done is not None:
            logger.warning(
                "run %r already finished (%s); not training it again", run.name, done.checkpoint_dir
            )
            return done
    check_run_state(storage / run.name)
    # the run folder was checked (and a finished run returned) without Ray; now it starts
    ensure_ray(run.address)
    check_resources(
        run.num_workers,
        run.use_gpu,
        run.cpus_per_worker,
        attached=attached_to_cluster() or attach_address(run.address) is not None,
    )
    # written first, so that a run that fails still says what it was
    atomic_write_json(storage / run.name / "run_info.json", info)
    trainer = TorchTrainer(
        _worker_entry,
        # Ray Train V2 rejects TorchTrainer(resume_from_checkpoint=...): the worker loop takes the
        # starting checkpoint from its config instead (ray-project/ray#49454)
        train_loop_config={
            "task": task,
            "config": to_dict(cfg),
            "resume_from": resume,
            "run_dir": str(storage / run.name),  # TensorBoard curves go to <run_dir>/tensorboard
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=run.num_workers,
            use_gpu=run.use_gpu,
            resources_per_worker={"CPU": run.cpus_per_worker, **({"GPU": 1} if run.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=run.num_to_keep),
        ),
    )
    try:
        with train_stops_on_signals(trainer):  # Ctrl+C / SIGTERM: the run aborts, the job ends with 130 / 143
            result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        inner = unwrap(err)
        if isinstance(inner, WorkerUserError) and inner.kind == "NonFiniteLossError":
            raise RuntimeError(
                f"training stopped on a non-finite loss. {inner} Checkpoints are intact under "
                f"{storage / run.name}."
            ) from err
        if is_disk_full(inner):  # Ray Train's copy of a checkpoint into storage names no file
            raise DiskFullError(storage / run.name, "; its finished checkpoints are intact") from err
        raise
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run.name!r} finished without a checkpoint")
    remove_unregistered_checkpoints(result, keep=resume_from)
    return TrainResult(Path(result.path), Path(result.checkpoint.path), dict(result.metrics or {}))


def _worker_entry(loop_config: dict[str, Any]) -> None:
    from raynas.training.engine import worker_loop

    try:
        worker_loop(loop_config)
    except Exception as err:  # noqa: BLE001 (a bug is re-raised as it is, with its traceback)
        message = user_message(err)
        if message is None:
            raise
        raise WorkerUserError(message, type(err).__name__) from None
