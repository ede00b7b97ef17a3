"""Evolutionary sub-net search (OPANAS Sec. 3.2.2, following SPOS [12]) as a Ray Tune ``Searcher``.

Generation 0 is ``population_size`` (N_S = 50) random admissible architectures. Each of the next
``generations`` (T = 12) generations is N_S *new* architectures bred from the ``top_k`` (k = 10)
best architectures evaluated so far, over **all** generations (SPOS keeps its top-k across
iterations): a ``1 - crossover_fraction`` share by mutation (one random top-k parent, every choice
resampled with probability ``mutation_prob`` = 0.1), the rest by crossover (two distinct random top-k
parents), and random architectures top the generation up when the operators cannot find enough new
admissible children within ``max_retries`` draws. The paper's "first sample N_S sub-nets, then
repeatedly generate new ones ... max iterations T" reads as T bred generations after the random one,
so a full search evaluates N_S x (T + 1) = 650 architectures (``total_evaluations``);
``max_evaluations`` caps it lower, e.g. to match another strategy's budget.

Multi-objective search: with ``objectives=[("AP", "max"), ("neck_flops", "min")]`` the parents are the
``top_k`` records in NSGA-II's order (non-dominated rank, then crowding distance; Deb et al. 2002,
:mod:`raynas.search.pareto`) instead of the ``top_k`` by one metric; Tune's ``metric`` is the first
objective. Without ``objectives`` the searcher behaves exactly as the single-objective one above.

Generation barrier: a generation is bred, all at once, only when every trial of the previous one has
completed; until then ``suggest`` returns ``None`` and Tune asks again later. Because each
generation is built in one go from a ranking that does not depend on completion order, the
suggestions depend only on the seed and the metric values, which makes ``Tuner.restore`` resume
with exactly the suggestions an uninterrupted run would have made.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher

from raynas.search.constraints import Constraint, draw_new
from raynas.search.pareto import MODES, nsga2_order, oriented
from raynas.search.searcher import ArchRecord, ArchSearcher, _finite
from raynas.spaces.base import SearchSpace

Proposal = tuple[Any, int, str, tuple[str, ...]]


class EvolutionSearcher(ArchSearcher):
    """SPOS-style evolutionary search over any ``SearchSpace``; defaults are OPANAS' N_S, T, k, p.

    ``suggest`` returns ``space.to_config(arch)`` plus ``generation``, ``origin``
    (``"random"``/``"mutation"``/``"crossover"``) and ``parents`` (comma-separated parent trial ids).
    Use ``num_samples=searcher.total_evaluations`` (or ``-1``) in ``TuneConfig``; the searcher
    returns ``Searcher.FINISHED`` when its last generation has been handed out.
    """

    def __init__(
        self,
        space: SearchSpace,
        metric: str = "AP",
        mode: str = "max",
        population_size: int = 50,
        generations: int = 12,
        top_k: int = 10,
        mutation_prob: float = 0.1,
        crossover_fraction: float = 0.5,
        constraint: Constraint | None = None,
        seed: int = 0,
        max_retries: int = 100,
        max_evaluations: int | None = None,
        objectives: list[tuple[str, str]] | None = None,
    ):
        if objectives is not None:
            objectives = [tuple(o) for o in objectives]
            if len(objectives) < 2 or any(len(o) != 2 or o[1] not in MODES for o in objectives):
                raise ValueError(
                    'objectives must be two or more (name, "max"|"min") pairs, e.g. [("AP", "max"), '
                    f'("neck_flops", "min")]; got {objectives!r}'
                )
            metric, mode = objectives[0]
        if population_size < 1 or top_k < 1 or generations < 0:
            raise ValueError(
                "population_size and top_k must be >= 1 and generations >= 0, got "
                f"{population_size}, {top_k}, {generations}"
            )
        if not 0.0 <= mutation_prob <= 1.0 or not 0.0 <= crossover_fraction <= 1.0:
            raise ValueError(
                f"mutation_prob and crossover_fraction must lie in [0, 1], got {mutation_prob}, "
                f"{crossover_fraction}"
            )
        super().__init__(space, metric, mode, constraint, seed, max_retries, max_evaluations)
        self.population_size = population_size
        self.generations = generations
        self.top_k = top_k
        self.mutation_prob = mutation_prob
        self.crossover_fraction = crossover_fraction
        self._generation = -1  # the generation being handed out; -1 before the first suggest
        self._queue: list[Proposal] = []  # bred but not yet suggested, in order
        self.objectives = objectives
        self._objective_values: dict[int, tuple[float, ...] | None] = {}  # record index -> oriented

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result, error)
        record = next((r for r in reversed(self._records) if r.trial_id == trial_id and r.done), None)
        if self.objectives and record is not None:
            values = [
                None if error or not result else _finite(result.get(name)) for name, _ in self.objectives
            ]
            self._objective_values[record.index] = oriented(values, [mode for _, mode in self.objectives])

    def top(self, k: int) -> list[ArchRecord]:
        """The ``k`` best completed trials: by the metric, or in NSGA-II order with ``objectives``."""
        if not self.objectives:
            return super().top(k)
        done = self.history
        order = nsga2_order([self._objective_values.get(r.index) for r in done])
        return [done[i] for i in order[:k]]

    @property
    def total_evaluations(self) -> int:
        """Evaluations of a complete search: N_S x (T + 1), or ``max_evaluations`` if lower."""
        total = self.population_size * (self.generations + 1)
        return total if self.max_evaluations is None else min(total, self.max_evaluations)

    @property
    def generation(self) -> int:
        """Index of the generation currently handed out (-1 before the first suggestion)."""
        return self._generation

    def _propose(self) -> Proposal | str | None:
        if not self._queue:
            if self._generation >= self.generations:
                return Searcher.FINISHED
            if self._pending:
                return None  # barrier: the next generation needs every result of this one
            self._generation += 1
            self._queue = self._breed(self._generation)
        return self._queue.pop(0)

    def _breed(self, generation: int) -> list[Proposal]:
        """All proposals of ``generation``; marks them visited so none is ever proposed again."""
        proposals: list[Proposal] = []
        if generation > 0:
            parents = self.top(self.top_k)
            num_crossover = round(self.population_size * self.crossover_fraction)
            if len(parents) < 2:
                num_crossover = 0
            operators = [
                ("mutation", self.population_size - num_crossover, lambda: self._mutant(parents)),
                ("crossover", num_crossover, lambda: self._crossover(parents)),
            ]
            for origin, count, make in operators:
                for _ in range(count):
                    drawn = draw_new(make, self.space, self.constraint, self._visited, self.max_retries)
                    if drawn is None:
                        break  # this operator is out of new children; random ones top up below
                    arch, parent_ids = drawn
                    self._visited.add(arch)
                    proposals.append((arch, generation, origin, parent_ids))
        while len(proposals) < self.population_size:
            arch = self._draw_random(self._visited)
            self._visited.add(arch)
            proposals.append((arch, generation, "random", ()))
        return proposals

    def _mutant(self, parents: list[ArchRecord]) -> tuple[Any, tuple[str, ...]]:
        parent = self._rng.choice(parents)
        return self.space.mutate(parent.arch, self.mutation_prob, self._rng), (parent.trial_id,)

    def _crossover(self, parents: list[ArchRecord]) -> tuple[Any, tuple[str, ...]]:
        a, b = self._rng.sample(parents, 2)
        return self.space.crossover(a.arch, b.arch, self._rng), (a.trial_id, b.trial_id)
