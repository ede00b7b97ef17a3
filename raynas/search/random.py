"""Random architecture search: the baseline strategy on top of :class:`ArchSearcher`.

Uniform admissible architectures, never repeated, with the same budget as the evolutionary search.
"""

from __future__ import annotations

from typing import Any

from raynas.search.constraints import Constraint
from raynas.search.searcher import ArchSearcher
from raynas.spaces.base import SearchSpace


class RandomSearcher(ArchSearcher):
    """Uniform random search: admissible, never-repeated architectures until the budget is spent.

    ``max_evaluations`` defaults to the evolutionary search's default budget, 50 x (12 + 1) = 650
    (OPANAS Sec. 3.2.2), so both strategies get the same number of evaluations. ``generation`` is
    ``index // batch_size`` so that search curves share an x axis with the evolutionary search.
    """

    def __init__(
        self,
        space: SearchSpace,
        metric: str = "AP",
        mode: str = "max",
        max_evaluations: int = 650,
        constraint: Constraint | None = None,
        seed: int = 0,
        max_retries: int = 100,
        batch_size: int = 50,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(space, metric, mode, constraint, seed, max_retries, max_evaluations)
        self.batch_size = batch_size

    def _propose(self) -> tuple[Any, int, str, tuple[str, ...]]:
        return self._draw_random(self._visited), len(self._records) // self.batch_size, "random", ()
