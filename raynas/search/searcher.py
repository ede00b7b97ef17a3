"""The bookkeeping every raynas searcher shares: :class:`ArchSearcher`, a Ray Tune ``Searcher``.

:class:`ArchSearcher` works over any :class:`~raynas.spaces.base.SearchSpace`:
it turns architectures into trial configs (``space.to_config(arch)`` plus the bookkeeping keys
``generation``, ``origin`` and ``parents``, so the result table shows lineage), scores completed
trials, never suggests an architecture twice, enforces an evaluation budget and pickles its whole
state (``save``/``restore``) so that ``Tuner.restore`` resumes a search with the suggestions it
would have made without the interruption. The strategies subclass it:
:class:`~raynas.search.random.RandomSearcher` and :class:`~raynas.search.evolution.EvolutionSearcher`.

Scoring: a trial that errored, reported no ``metric`` or a non-finite value (NaN) counts as done
and scores worst. Internally higher is better (``score = value`` for ``mode="max"``, ``-value`` for
``"min"``); ties are broken by suggestion order, so rankings do not depend on completion order.
:func:`worst_value` is the value an invalid architecture is reported with wherever one is scored
without being run (``score_trial``, ``ConstrainedSearcher``).
"""

from __future__ import annotations

import abc
import logging
import math
import pickle
import random
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.sample import Domain

from raynas.io import atomic_write_bytes
from raynas.search.constraints import Constraint, draw_new_or_raise
from raynas.search.pareto import MODES
from raynas.spaces.base import SearchSpace

logger = logging.getLogger(__name__)

BOOKKEEPING_KEYS = ("generation", "origin", "parents")
# Attributes not pickled by ``save``: the caller rebuilds the searcher with the same space and
# constraint (``Tuner.restore`` does so from its own pickle of the searcher).
_NOT_SAVED = ("space", "constraint")


def worst_value(mode: str) -> float:
    """The value that ranks last under ``mode`` (``-inf`` for ``"max"``, ``+inf`` for ``"min"``).

    What an invalid architecture is reported with, wherever one is scored without being run, so it ranks
    below every real result of any metric (a fixed 0.0 ties with a real AP of 0 and is the best value
    under ``"min"``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    return -math.inf if mode == "max" else math.inf


@dataclass
class ArchRecord:
    """One suggested architecture and, once its trial is done, its result."""

    index: int  # suggestion order, 0-based
    trial_id: str
    arch: Any
    config: dict[str, Any]  # exactly what ``suggest`` returned
    generation: int
    origin: str  # "random" | "mutation" | "crossover"
    parents: tuple[str, ...]  # trial ids of the parents
    metric: float | None = None  # reported value; None when failed, missing or NaN
    score: float = -math.inf  # higher is better; -inf for failed trials
    done: bool = False
    error: bool = False


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _has_search_domains(config: Any) -> bool:
    if isinstance(config, Domain):
        return True
    if isinstance(config, dict):
        return "grid_search" in config or any(_has_search_domains(v) for v in config.values())
    return False


def _config_of_result(result: dict | None) -> dict[str, Any]:
    """The trial config inside a Tune result (nested ``config`` or flattened ``config/<key>``)."""
    if not result:
        return {}
    if isinstance(result.get("config"), dict):
        return result["config"]
    return {key[len("config/") :]: value for key, value in result.items() if key.startswith("config/")}


class VisitedArchs:
    """The architectures already suggested, compared in the space's canonical form.

    Two encodings can compute the same network (in OPANAS, an edge leaving a dead node never runs); a
    space that knows this offers ``canonical(arch)``, and a candidate whose canonical form was seen is a
    duplicate, so no evaluation is spent on a network already scored. Other spaces compare as is.
    """

    def __init__(self, space: SearchSpace) -> None:
        self._canonical = getattr(space, "canonical", None)
        self._seen: set[Any] = set()

    def _key(self, arch: Any) -> Any:
        if self._canonical is None:
            return arch
        try:
            return self._canonical(arch)
        except ValueError:  # not a valid architecture: the caller rejects it; compare it as is
            return arch

    def add(self, arch: Any) -> None:
        self._seen.add(self._key(arch))

    def __contains__(self, arch: Any) -> bool:
        return self._key(arch) in self._seen

    def __len__(self) -> int:
        return len(self._seen)


class ArchSearcher(Searcher, metaclass=abc.ABCMeta):
    """Shared state and Tune plumbing of raynas' searchers; subclasses implement :meth:`_propose`.

    Args:
        space: the search space (only its protocol methods are used).
        metric, mode: what to optimise; ``set_search_properties`` (i.e. ``TuneConfig``) may override.
        constraint: ``constraint(arch) -> bool``; candidates failing it are never suggested.
        seed: seeds the searcher's own ``random.Random``: same seed, same results -> same suggestions.
        max_retries: draws allowed per candidate before giving up (see ``raynas.search.constraints``).
        max_evaluations: suggestion budget; ``suggest`` returns ``Searcher.FINISHED`` once reached.

    ``Tuner.restore``: Tune saves the searcher with :meth:`save` next to its experiment state (the
    trials in flight included) and, on restore, unpickles the searcher object from ``tuner.pkl``
    and calls :meth:`restore`. Unfinished trials are resumed under their old ids (Tune's default),
    so their results reach the records still pending here.
    """

    def __init__(
        self,
        space: SearchSpace,
        metric: str = "AP",
        mode: str = "max",
        constraint: Constraint | None = None,
        seed: int = 0,
        max_retries: int = 100,
        max_evaluations: int | None = None,
    ):
        if not isinstance(space, SearchSpace):
            raise TypeError(
                f"space must implement raynas.spaces.base.SearchSpace, got {type(space).__name__}"
            )
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if max_retries < 1:
            raise ValueError(f"max_retries must be >= 1, got {max_retries}")
        if max_evaluations is not None and max_evaluations < 1:
            raise ValueError(f"max_evaluations must be >= 1 or None, got {max_evaluations}")
        super().__init__(metric=metric, mode=mode)
        self.space = space
        self.constraint = constraint
        self.seed = seed
        self.max_retries = max_retries
        self.max_evaluations = max_evaluations
        self._space_name = space.name
        self._rng = random.Random(seed)
        self._records: list[ArchRecord] = []
        self._pending: dict[str, ArchRecord] = {}
        self._visited = VisitedArchs(space)
        self._warned_missing_metric = False

    # ---- strategy hook -------------------------------------------------------------------------
    @abc.abstractmethod
    def _propose(self) -> tuple[Any, int, str, tuple[str, ...]] | str | None:
        """Next ``(arch, generation, origin, parents)``, ``None`` (not now) or ``Searcher.FINISHED``."""

    def _draw_random(self, taken: VisitedArchs) -> Any:
        arch, _ = draw_new_or_raise(
            lambda: (self.space.sample(self._rng), None), self.space, self.constraint, taken, self.max_retries
        )
        return arch

    # ---- Tune Searcher API ---------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        """Take ``metric``/``mode`` from ``TuneConfig``. Refuses (``False``, Tune then raises) a
        ``param_space`` with search domains: the architecture choices come from the space only."""
        if _has_search_domains(config):
            return False
        if mode and mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        changes = (metric and metric != self._metric) or (mode and mode != self._mode)
        if changes and self._records:
            return False
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.max_evaluations is not None and len(self._records) >= self.max_evaluations:
            return Searcher.FINISHED
        proposal = self._propose()
        if proposal is None or proposal == Searcher.FINISHED:
            return proposal
        arch, generation, origin, parents = proposal
        arch_config = self.space.to_config(arch)
        clash = set(BOOKKEEPING_KEYS) & set(arch_config)
        if clash:
            raise ValueError(
                f"space {self.space.name!r} uses the config key(s) {sorted(clash)} that searchers reserve "
                "for bookkeeping; rename them in the space's to_config/from_config"
            )
        config = {**arch_config, "generation": generation, "origin": origin, "parents": ",".join(parents)}
        record = ArchRecord(len(self._records), trial_id, arch, config, generation, origin, tuple(parents))
        self._records.append(record)
        self._pending[trial_id] = record
        self._visited.add(arch)
        return dict(config)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        record = self._pending.pop(trial_id, None) or self._adopt(trial_id, result)
        if record is None:
            logger.warning("%s: completion of unknown trial %s ignored", type(self).__name__, trial_id)
            return
        value = None if error or not result else _finite(result.get(self._metric))
        if result and not error and self._metric not in result and not self._warned_missing_metric:
            self._warned_missing_metric = True
            logger.warning(
                "trial %s reported no %r (keys: %s); it is scored as the worst. Check the metric name.",
                trial_id,
                self._metric,
                sorted(result)[:20],
            )
        record.done, record.error, record.metric = True, error, value
        if value is None:
            record.score = -math.inf
        else:
            record.score = value if self._mode == "max" else -value

    def _adopt(self, trial_id: str, result: dict | None) -> ArchRecord | None:
        """A pending record for a trial Tune re-created under a new id (``ResumeConfig`` RESTART)."""
        try:
            arch = self.space.from_config(_config_of_result(result))
        except (KeyError, ValueError, TypeError):
            return None
        for old_id, record in self._pending.items():
            if record.arch == arch:
                del self._pending[old_id]
                record.trial_id = trial_id
                return record
        return None

    # ---- results -------------------------------------------------------------------------------
    @property
    def history(self) -> list[ArchRecord]:
        """Completed trials, in suggestion order."""
        return [record for record in self._records if record.done]

    @property
    def num_suggested(self) -> int:
        return len(self._records)

    def top(self, k: int) -> list[ArchRecord]:
        """The ``k`` best completed trials (failed ones last), best first; ties: earlier first."""
        return self._by_metric()[:k]

    def _by_metric(self) -> list[ArchRecord]:
        return sorted(self.history, key=lambda r: (-r.score, r.index))

    def best(self) -> ArchRecord:
        """The best completed trial that reported the metric."""
        scored = [record for record in self._by_metric() if record.metric is not None]
        if not scored:
            raise ValueError(f"no trial has reported {self._metric!r} yet")
        return scored[0]

    # ---- checkpointing -------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state = {key: value for key, value in vars(self).items() if key not in _NOT_SAVED}
        state["_class"] = type(self).__name__
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        saved_class = state.pop("_class", None)
        if saved_class != type(self).__name__ or state.get("_space_name") != self.space.name:
            raise ValueError(
                f"searcher checkpoint is for {saved_class} on space {state.get('_space_name')!r}, not "
                f"{type(self).__name__} on {self.space.name!r}; restore into the same kind of searcher"
            )
        vars(self).update(state)

    def save(self, checkpoint_path: str) -> None:
        """Pickle the full state (rng, records, pending trials, settings) atomically."""
        atomic_write_bytes(checkpoint_path, pickle.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        """Load a :meth:`save` file. Settings (budget, population size, ...) come from the file."""
        path = Path(checkpoint_path)
        if not path.is_file():
            raise FileNotFoundError(f"searcher checkpoint {path} does not exist")
        self.set_state(pickle.loads(path.read_bytes()))
