"""What a Tune trial holds to borrow a scorer actor: a handle to :class:`ScorerLeases`.

Kept apart from :mod:`raynas.search.pool` (which imports torch and the scorer) because every Tune trial
process unpickles it. The trial must not hold the scorer actors' own handles either: unpickling a
handle makes Ray load the actor's class, i.e. import the scorer module and with it torch, torchvision
and pycocotools, about 6 s per trial process on a 2-core machine before the trial scores anything
(``benchmarks/scoring.py``'s Tune part measured it). The leases actor lives in this light module, holds
the scorer handles itself (it imports the scorer once, in its own process) and hands each call to a free
scorer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import ray


@ray.remote(num_cpus=0)
class ScorerLeases:
    """Forwards each ``score`` call to a free scorer actor; a call waits while every scorer is busy."""

    def __init__(self, actors: list[Any]) -> None:
        self._actors = actors
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(actors)):
            self._free.put_nowait(index)

    async def score(self, config: dict[str, Any]) -> dict[str, Any]:
        index = await self._free.get()
        try:
            return await self._actors[index].score.remote(config)
        finally:
            self._free.put_nowait(index)

    async def free_count(self) -> int:
        """Scorer actors not scoring right now."""
        return self._free.qsize()


@dataclass
class ScorerHandles:
    """The picklable part of a pool: the handle of its :class:`ScorerLeases` actor."""

    leases: Any

    def score(self, config: dict[str, Any]) -> dict[str, Any]:
        return ray.get(self.leases.score.remote(config))
