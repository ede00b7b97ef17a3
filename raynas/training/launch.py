"""Driver side of a training job: attach to Ray, launch a ``TorchTrainer``, translate failures.

The same function serves the CLI, the experiment scripts and the tests; only the ``Task`` differs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchTrainer

from raynas.checkpoints import STATE_FILE, check_checkpoint, load_state
from raynas.config import ConfigError, check_writable_folder, from_dict, to_dict
from raynas.errors import (
    DiskFullError,
    WorkerUserError,
    is_disk_full,
    reclaim_stop_signals,
    unwrap,
    user_message,
)
from raynas.io import atomic_write_json, claim_folder, read_job_record, run_info, same_place
from raynas.training.inputs import ensure_inputs
from raynas.training.ray_hooks import RUNTIME_ENV, train_stops_on_signals

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished training job leaves behind."""

    run_dir: Path
    checkpoint_dir: Path
    metrics: dict[str, Any]

    def load_state(self) -> dict[str, Any]:
        return load_state(self.checkpoint_dir)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connect to ``host:port`` (or ``ray://host:port``) first: ``ray.init`` retries an unreachable
    GCS for minutes before it gives up, which looks like a hang. ``auto`` and ``local`` are Ray's to
    resolve."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address in ("auto", "local") or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise RuntimeError(
            f"cannot reach the Ray cluster at {address!r} ({err}). Check that it is running (`ray status` on "
            "its head), the address and port (GCS 6379, Ray Client 10001), and the firewall; or omit "
            "--address (and unset RAY_ADDRESS) to run on a local Ray."
        ) from err


def attach_address(address: str | None) -> str | None:
    """The cluster a driver attaches to: ``address``, else ``RAY_ADDRESS``; None for a Ray of its own."""
    address = address or os.environ.get("RAY_ADDRESS")
    return None if address in (None, "", "local") else address


_attached = False  # set by ensure_ray: this process's Ray is a cluster started elsewhere


def attached_to_cluster() -> bool:
    """Whether :func:`ensure_ray` attached this process to a cluster started elsewhere (which may
    autoscale), rather than starting a Ray of its own (which never grows)."""
    return _attached


def ensure_ray(address: str | None = None) -> None:
    """Attach to ``address`` (a running cluster) or start a local Ray once; errors say how to fix.

    No ``address`` means a Ray of this process's own (``address="local"``), as the flags promise ("omit
    --address to run locally"), also when a cluster started with ``ray start`` runs on this machine: Ray's
    own default would attach to that one silently, share its CPUs with whatever runs there, and inherit its
    settings (a driver of another Ray version or auth mode fails deep inside Ray Train). ``RAY_ADDRESS``
    (which ``ray job submit`` sets for the job it starts) still names the cluster to attach to.
    """
    global _attached
    if ray.is_initialized():
        return
    address = attach_address(address)
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=True)  # keeps the job's own runtime_env
        else:
            ray.init(address="local", include_dashboard=False, log_to_driver=True, runtime_env=RUNTIME_ENV)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise RuntimeError(
            f"could not connect to the Ray cluster at {address!r}: {err}. Start it with `ray up "
            "cluster.yaml` (or `ray start --head`) and pass its address, or omit --address to run locally."
        ) from err
    reclaim_stop_signals()  # ray.init installs Ray's SIGTERM handler (it exits 1 with tracebacks)
    _attached = address is not None


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Ray for one entry point: attached or started (:func:`ensure_ray`) and, when started here, shut down
    in order on the way out. Left to the interpreter's exit, Ray kills its trial actors mid-teardown: they
    print noise and the process can exit non-zero after a successful run."""
    started_here = not ray.is_initialized()
    ensure_ray(address)
    try:
        yield
    finally:
        if started_here and ray.is_initialized():
            ray.shutdown()


#: the config keys a resource shortfall is fixed with: Ray Train's workers, or the search's scorer actors
TRAIN_KEYS = ("run.num_workers", "run.cpus_per_worker", "run.use_gpu")
SCORER_KEYS = ("num_scorers", "cpus_per_scorer", "use_gpu")


def check_resources(
    num_workers: int,
    use_gpu: bool,
    cpus_per_worker: float,
    attached: bool = False,
    keys: tuple[str, str, str] = TRAIN_KEYS,
    reserve_cpus: float = 0.0,
) -> None:
    """Fail fast (before Ray waits forever for resources) when the cluster cannot host the job.

    ``attached``: a cluster started elsewhere (``--address``) may autoscale, so that a shortfall now is
    only a warning there (Ray waits for the autoscaler); a local Ray never grows, so it is an error.
    ``keys``: the config fields that set the count, the CPUs each and the GPU flag, named in the message.
    ``reserve_cpus``: CPUs the job needs beside its workers (a search's Tune trials).
    """
    count, cpus, gpu = keys
    beside = f" + {reserve_cpus:g} CPU beside them" if reserve_cpus else ""
    available = ray.cluster_resources()
    problems = []
    if use_gpu and available.get("GPU", 0) < num_workers:
        problems.append(
            f"{gpu}: true asks for {num_workers} GPU(s) ({count}) but the Ray cluster has "
            f"{int(available.get('GPU', 0))} GPU(s); set {gpu}: false or add GPU nodes"
        )
    if available.get("CPU", 0) < num_workers * cpus_per_worker + reserve_cpus - 1e-9:
        problems.append(
            f"the job asks for {num_workers} x {cpus_per_worker:g} CPU ({count} x {cpus}){beside} but the "
            f"Ray cluster has {available.get('CPU', 0):g} CPU(s); lower {count} or {cpus}"
        )
    for problem in problems:
        if not attached:
            raise RuntimeError(problem)
        logger.warning("%s; waiting for the autoscaler to add nodes", problem)


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
    from raynas.training.engine import _resolve_task

    visible = cfg.data.format == "digits" or Path(cfg.data.train_annotations or cfg.data.root).exists()
    num_classes = 91  # only used to build the model when the driver cannot see the data
    if visible or attach_address(cfg.run.address) is None:
        for split in ("train", "val"):
            num_classes = base_dataset(build_dataset(cfg.data, split)).num_classes
    task_cls = _resolve_task(task)
    model = task_cls(cfg).build_model(num_classes)
    if resume_from is None:
        return
    if not (Path(resume_from) / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"cannot resume: {str(resume_from)!r} is not a raynas checkpoint (no {STATE_FILE})"
        )
    state = load_state(resume_from)
    where = f"cannot resume from {str(resume_from)!r}"
    if state.get("task") != task:
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
    """Run ``task`` (``"module.TaskClass"``) with ``cfg`` on Ray Train and return its final state.

    ``resume_from``: a checkpoint directory of an earlier run; the run continues at its next epoch.
    Within a run, ``run.max_failures`` restarts dead workers from the last checkpoint.
    """
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
        resume_from=str(resume_from) if resume_from is not None else None,
        run_dir=str(storage / run.name),  # where it ran: a moved run folder maps the paths it records
    )
    check_same_run(storage / run.name, info["config"], type(cfg))
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
    _remove_unregistered_checkpoints(result, keep=resume_from)
    return TrainResult(Path(result.path), Path(result.checkpoint.path), dict(result.metrics or {}))


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


def check_same_run(run_dir: Path, config: dict[str, Any], config_class: type | None = None) -> None:
    """Refuse to start a run in a folder that holds checkpoints of a run with another config.

    Ray Train continues a run whose folder holds checkpoints (that is how a killed driver resumes), so
    starting a *changed* config under the same ``run.name`` would silently continue the old run's weights
    and schedule. The same config continues it, as intended. With ``config_class``, the old config is
    read through it first, so a run written before a setting existed counts as having its default.
    The folder is the run: where it lies is no difference (``run.storage_path`` and ``run.name`` are not
    compared, and recorded paths match by :func:`~raynas.io.same_place`), so a folder reached through a
    symlink, spelt otherwise, moved or copied continues.
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


def _remove_unregistered_checkpoints(result: ray.train.Result, keep: str | Path | None = None) -> list[Path]:
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


def _worker_entry(loop_config: dict[str, Any]) -> None:
    from raynas.training.engine import worker_loop

    try:
        worker_loop(loop_config)
    except Exception as err:  # noqa: BLE001 (a bug is re-raised as it is, with its traceback)
        message = user_message(err)
        if message is None:
            raise
        raise WorkerUserError(message, type(err).__name__) from None
