"""What a Tune trial holds to borrow a scorer actor.

Kept apart from :mod:`raynas.search.pool` (which imports torch and the scorer) because every Tune trial
process unpickles it: Tune restarts trial processes at each generation barrier of the evolutionary
search, and importing torch there cost several seconds of CPU per process, taken from the actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray
from ray.util.queue import Queue


@dataclass
class ScorerHandles:
    """The picklable part of a pool: the actors and the queue of free actor indices (the leases)."""

    actors: list[Any]
    free: Queue

    def score(self, config: dict[str, Any]) -> dict[str, Any]:
        index = self.free.get()
        try:
            return ray.get(self.actors[index].score.remote(config))
        finally:
            self.free.put(index)
