"""A pool of :class:`SupernetScorer` Ray actors that Tune trials borrow one at a time.

The super-net weights go into the object store once (as numpy arrays) and every actor reads them
from there, zero-copy on its node; no trial ever sends weights. Trials call the pool's
:class:`~raynas.search.handles.ScorerLeases` actor, which hands each call to a free scorer, so N actors
serve N concurrent trials without two trials queueing on one actor. Actors
restart when they die (``max_restarts``) and Ray retries the interrupted ``score`` call
(``max_task_retries``), so a lost worker costs time, never a trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from raynas.checkpoints import config_from_state, load_state
from raynas.search.handles import ScorerHandles, ScorerLeases
from raynas.search.scorer import DEFAULT_CACHE_BYTES, SupernetScorer, state_to_numpy
from raynas.training.cluster import attached_to_cluster, check_resources
from raynas.training.config import SupernetConfig

#: the search config keys a shortfall of scorer actors is fixed with (named in check_resources' message)
SCORER_KEYS = ("num_scorers", "cpus_per_scorer", "use_gpu")


def check_scorer_resources(
    num_actors: int, cpus_per_actor: float, use_gpu: bool, reserve_cpus: float = 0.0
) -> None:
    """Refuse scorer actors the cluster cannot host (Ray would wait for them forever); a warning only on
    an attached cluster, which may autoscale. ``reserve_cpus``: what the search needs beside them."""
    check_resources(num_actors, use_gpu, cpus_per_actor, attached_to_cluster(), SCORER_KEYS, reserve_cpus)


def supernet_config(state: dict[str, Any], checkpoint_dir: str | Path) -> SupernetConfig:
    """The config of a super-net checkpoint; a clear error for a checkpoint of any other job."""
    cfg = config_from_state(state)
    if not isinstance(cfg, SupernetConfig):
        raise ValueError(
            f"checkpoint {str(checkpoint_dir)!r} was written by {state.get('task')!r}, not by "
            "OPANAS super-net training; pass the checkpoint of `raynas search opanas-supernet`"
        )
    return cfg


class ScorerPool:
    """``num_actors`` scorer actors sharing one copy of the super-net weights."""

    def __init__(
        self,
        checkpoint_dir: str | Path,
        num_actors: int = 1,
        max_images: int | None = None,
        batch_size: int = 8,
        use_gpu: bool = False,
        cpus_per_actor: float = 0.9,
        cache_features: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_restarts: int = 3,
        state: dict | None = None,
    ):
        state = state if state is not None else load_state(checkpoint_dir)  # ``state``: already loaded
        self.config = supernet_config(state, checkpoint_dir)
        check_scorer_resources(num_actors, cpus_per_actor, use_gpu)
        self.num_classes = state["num_classes"]
        self._weights = ray.put(state_to_numpy(state["model"]))
        actor_cls = ray.remote(SupernetScorer).options(
            num_cpus=cpus_per_actor,
            num_gpus=1 if use_gpu else 0,
            max_restarts=max_restarts,
            max_task_retries=max_restarts,
            scheduling_strategy="DEFAULT",
        )
        self.actors = [
            actor_cls.remote(
                self._weights,
                state["config"],
                self.num_classes,
                max_images=max_images,
                batch_size=batch_size,
                device="cuda" if use_gpu else "cpu",
                cache_features=cache_features,
                cache_bytes=cache_bytes,
                num_threads=max(1, round(cpus_per_actor)),
            )
            for _ in range(num_actors)
        ]
        self.leases = ScorerLeases.options(scheduling_strategy="DEFAULT").remote(self.actors)
        ray.get([actor.__ray_ready__.remote() for actor in self.actors])  # constructed and cached

    @property
    def handles(self) -> ScorerHandles:
        return ScorerHandles(self.leases)

    def free_count(self) -> int:
        """Scorer actors not leased to a call right now."""
        return ray.get(self.leases.free_count.remote())

    def score(self, config: dict[str, Any]) -> dict[str, Any]:
        return self.handles.score(config)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        ray.kill(self.leases)
