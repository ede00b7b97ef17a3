"""Tune's own searchers (Optuna, HyperOpt, ...) on raynas' search spaces.

They search the flat choice space :func:`tune_param_space` and are wrapped in
:class:`ConstrainedSearcher`, which turns each config back into an architecture and scores invalid or
disallowed ones (:func:`~raynas.search.constraints.is_admissible`) as the worst value without running
them.

``tune_param_space`` relies on an *optional* method of a search space, beyond the
``SearchSpace`` protocol: ``space.choices() -> dict[str, list[str]]``, the allowed values of each
``to_config`` key.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search import Searcher

from raynas.io import atomic_write_bytes
from raynas.search.constraints import Constraint, is_admissible
from raynas.search.searcher import worst_value
from raynas.spaces.base import SearchSpace

logger = logging.getLogger(__name__)


def tune_param_space(space: SearchSpace) -> dict[str, Any]:
    """Tune search space ``{key: tune.choice(values)}`` over the space's ``to_config`` keys.

    Needs the optional ``space.choices() -> dict[str, list[str]]``; the resulting configs are
    turned back into architectures with :func:`arch_from_tune_config` or :class:`ConstrainedSearcher`.
    """
    choices = getattr(space, "choices", None)
    if not callable(choices):
        raise TypeError(
            f"search space {getattr(space, 'name', type(space).__name__)!r} has no choices() method; "
            "add `choices() -> dict[str, list[str]]` (allowed values of each to_config key) to use "
            "Tune's own searchers on it"
        )
    return {key: tune.choice(list(values)) for key, values in choices().items()}


def arch_from_tune_config(
    space: SearchSpace, config: dict[str, Any], constraint: Constraint | None = None
) -> Any | None:
    """The architecture a trial config encodes, or ``None`` when it is invalid / not allowed.

    For trainables fed by a searcher that cannot be wrapped (e.g. Tune's ``BasicVariantGenerator``):
    report :func:`~raynas.search.searcher.worst_value` for ``None``.
    """
    try:
        arch = space.from_config(config)
    except (KeyError, ValueError, TypeError):
        return None
    return arch if is_admissible(space, arch, constraint) else None


class ConstrainedSearcher(Searcher):
    """Wrap a Tune ``Searcher`` so that only valid, constraint-satisfying architectures are run.

    Each inner suggestion is decoded with ``space.from_config``; an invalid one is reported back to
    the inner searcher at once as the worst value (``invalid_value``; default
    :func:`~raynas.search.searcher.worst_value` of the search's mode, ``-inf`` for ``mode="max"``,
    ``+inf`` for ``"min"``; pass e.g. ``0.0`` for AP when the inner searcher dislikes infinities) and
    the next inner suggestion is tried, at most ``max_retries`` times in a row.
    Suggested configs carry the same bookkeeping keys as raynas' searchers: ``generation``
    (``index // batch_size``), ``origin`` (the inner searcher's class name) and ``parents`` (``""``).
    Duplicates proposed by the inner searcher are evaluated again (no de-duplication here).

    Checkpoints: like ``ConcurrencyLimiter`` this is a wrapper to Tune (it has ``.searcher``), so a
    ``Tuner`` saves :meth:`get_state` and the inner searcher's own ``save`` file; :meth:`save` /
    :meth:`restore` bundle both for direct use.
    """

    def __init__(
        self,
        searcher: Searcher,
        space: SearchSpace,
        constraint: Constraint | None = None,
        invalid_value: float | None = None,
        max_retries: int = 100,
        batch_size: int = 50,
    ):
        if max_retries < 1 or batch_size < 1:
            raise ValueError(f"max_retries and batch_size must be >= 1, got {max_retries}, {batch_size}")
        self.searcher = searcher
        self.space = space
        self.constraint = constraint
        self.invalid_value = invalid_value
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.num_suggested = 0
        self.num_invalid = 0
        self._inner_ids: dict[str, str] = {}
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    @property
    def metric(self) -> str:
        return self.searcher.metric

    @property
    def mode(self) -> str:
        return self.searcher.mode

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def _worst(self) -> float:
        return worst_value(self.mode) if self.invalid_value is None else self.invalid_value

    def suggest(self, trial_id: str) -> dict | str | None:
        for attempt in range(self.max_retries):
            inner_id = trial_id if attempt == 0 else f"{trial_id}_invalid{attempt}"
            config = self.searcher.suggest(inner_id)
            if config is None or config == Searcher.FINISHED:
                return config
            arch = arch_from_tune_config(self.space, config, self.constraint)
            if arch is None:
                self.num_invalid += 1
                self.searcher.on_trial_complete(inner_id, result={self.metric: self._worst()})
                continue
            self._inner_ids[trial_id] = inner_id
            index = self.num_suggested
            self.num_suggested += 1
            return {
                **config,
                **self.space.to_config(arch),
                "generation": index // self.batch_size,
                "origin": type(self.searcher).__name__,
                "parents": "",
            }
        raise RuntimeError(
            f"{type(self.searcher).__name__} proposed {self.max_retries} invalid or disallowed "
            f"architectures of space {self.space.name!r} in a row; loosen the constraint or raise max_retries"
        )

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._inner_ids:
            self.searcher.on_trial_result(self._inner_ids[trial_id], result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        inner_id = self._inner_ids.pop(trial_id, None)
        if inner_id is None:
            logger.warning("ConstrainedSearcher: completion of unknown trial %s ignored", trial_id)
            return
        self.searcher.on_trial_complete(inner_id, result=result, error=error)

    def get_state(self) -> dict:
        """The wrapper's own state; Tune's ``SearchGenerator`` saves the inner searcher separately."""
        return {
            "num_suggested": self.num_suggested,
            "num_invalid": self.num_invalid,
            "inner_ids": dict(self._inner_ids),
        }

    def set_state(self, state: dict) -> None:
        self.num_suggested = state["num_suggested"]
        self.num_invalid = state["num_invalid"]
        self._inner_ids = dict(state["inner_ids"])

    def save(self, checkpoint_path: str) -> None:
        """Wrapper state and inner searcher in one file (for direct use; Tune uses get_state)."""
        with tempfile.TemporaryDirectory() as tmp:
            inner_path = os.path.join(tmp, "inner.pkl")
            self.searcher.save(inner_path)
            inner = Path(inner_path).read_bytes()
        atomic_write_bytes(checkpoint_path, pickle.dumps({"inner": inner, **self.get_state()}))

    def restore(self, checkpoint_path: str) -> None:
        state = pickle.loads(Path(checkpoint_path).read_bytes())
        with tempfile.TemporaryDirectory() as tmp:
            inner_path = os.path.join(tmp, "inner.pkl")
            Path(inner_path).write_bytes(state.pop("inner"))
            self.searcher.restore(inner_path)
        self.set_state(state)
