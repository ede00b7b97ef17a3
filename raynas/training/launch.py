"""Driver side of a training job: attach to Ray, launch a ``TorchTrainer``, translate failures.

The same function serves the CLI, the experiment scripts and the tests; only the ``Task`` differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchTrainer

from raynas.checkpoints import STATE_FILE, load_state
from raynas.config import to_dict
from raynas.io import atomic_write_json, run_info
from raynas.training.data import ensure_dataset


@dataclass
class TrainResult:
    """What a finished training job leaves behind."""

    run_dir: Path
    checkpoint_dir: Path
    metrics: dict[str, Any]

    def load_state(self) -> dict[str, Any]:
        return load_state(self.checkpoint_dir)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Attach to ``address`` (a running cluster) or start a local Ray once; errors say how to fix."""
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise RuntimeError(
            f"could not connect to the Ray cluster at {address!r}: {err}. Start it with `ray up "
            "cluster.yaml` (or `ray start --head`) and pass its address, or omit --address to run locally."
        ) from err


def check_resources(num_workers: int, use_gpu: bool, cpus_per_worker: int) -> None:
    """Fail fast (before Ray waits forever for resources) when the cluster cannot host the job."""
    available = ray.cluster_resources()
    if use_gpu and available.get("GPU", 0) < num_workers:
        raise RuntimeError(
            f"use_gpu=True asks for {num_workers} GPU worker(s) but the Ray cluster has "
            f"{int(available.get('GPU', 0))} GPU(s); set run.use_gpu: false or add GPU nodes"
        )
    if available.get("CPU", 0) < num_workers * cpus_per_worker:
        raise RuntimeError(
            f"the job asks for {num_workers} worker(s) x {cpus_per_worker} CPU but the Ray cluster has "
            f"{available.get('CPU', 0):g} CPU(s); lower run.num_workers / run.cpus_per_worker"
        )


def fit(task: str, cfg: Any, resume_from: str | Path | None = None) -> TrainResult:
    """Run ``task`` (``"module.TaskClass"``) with ``cfg`` on Ray Train and return its final state.

    ``resume_from``: a checkpoint directory of an earlier run; the run continues at its next epoch.
    Within a run, ``run.max_failures`` restarts dead workers from the last checkpoint.
    """
    run = cfg.run
    ensure_ray(run.address)
    check_resources(run.num_workers, run.use_gpu, run.cpus_per_worker)
    ensure_dataset(cfg.data)
    resume = None
    if resume_from is not None:
        if not (Path(resume_from) / STATE_FILE).is_file():
            raise FileNotFoundError(
                f"cannot resume: {str(resume_from)!r} is not a raynas checkpoint (no {STATE_FILE})"
            )
        resume = ray.train.Checkpoint.from_directory(str(Path(resume_from).resolve()))
    storage = Path(run.storage_path).resolve()
    # written first, so that a run that fails still says what it was
    atomic_write_json(
        storage / run.name / "run_info.json",
        run_info(cfg, task=task, resume_from=str(resume_from) if resume_from is not None else None),
    )
    trainer = TorchTrainer(
        _worker_entry,
        # Ray Train V2 rejects TorchTrainer(resume_from_checkpoint=...): the worker loop takes the
        # starting checkpoint from its config instead (ray-project/ray#49454)
        train_loop_config={"task": task, "config": to_dict(cfg), "resume_from": resume},
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
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        text = str(err)
        if "NonFiniteLossError" in text:
            raise RuntimeError(
                "training stopped on a non-finite loss. "
                + _first_line_with(text, "non-finite loss")
                + f" Checkpoints are intact under {storage / run.name}."
            ) from err
        raise
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run.name!r} finished without a checkpoint")
    return TrainResult(Path(result.path), Path(result.checkpoint.path), dict(result.metrics or {}))


def _worker_entry(loop_config: dict[str, Any]) -> None:
    from raynas.training.engine import worker_loop

    worker_loop(loop_config)


def _first_line_with(text: str, needle: str) -> str:
    for line in text.splitlines():
        if needle in line:
            return line.strip()
    return ""
