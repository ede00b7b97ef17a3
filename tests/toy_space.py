"""A toy ``SearchSpace`` for searcher tests: ``n`` edges, each one of "a", "b", "c", "d".

Fitness is the number of "a" edges (optimum: all "a"); the all-"d" architecture is invalid, so
searchers must filter what mutation and crossover produce.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

VALUES = ("a", "b", "c", "d")


@dataclass(frozen=True)
class ToyArch:
    ops: tuple[str, ...]


class ToySpace:
    def __init__(self, num_edges: int = 6):
        self.num_edges = num_edges
        self.keys = tuple(f"e{i}" for i in range(num_edges))
        self.name = f"toy{num_edges}"

    @property
    def size(self) -> int:
        return len(VALUES) ** self.num_edges

    def sample(self, rng: random.Random) -> ToyArch:
        while True:
            arch = ToyArch(tuple(rng.choice(VALUES) for _ in self.keys))
            if self.is_valid(arch):
                return arch

    def mutate(self, arch: ToyArch, prob: float, rng: random.Random) -> ToyArch:
        return ToyArch(tuple(rng.choice(VALUES) if rng.random() < prob else op for op in arch.ops))

    def crossover(self, a: ToyArch, b: ToyArch, rng: random.Random) -> ToyArch:
        return ToyArch(tuple(x if rng.random() < 0.5 else y for x, y in zip(a.ops, b.ops)))

    def validate(self, arch: ToyArch) -> None:
        if not isinstance(arch, ToyArch) or len(arch.ops) != self.num_edges:
            raise ValueError(f"arch must be a ToyArch with {self.num_edges} ops, got {arch!r}")
        for key, op in zip(self.keys, arch.ops):
            if op not in VALUES:
                raise ValueError(f"{key}: {op!r} is not one of {VALUES}")
        if set(arch.ops) == {"d"}:
            raise ValueError("ops: the all-'d' architecture is invalid")

    def is_valid(self, arch: ToyArch) -> bool:
        try:
            self.validate(arch)
        except ValueError:
            return False
        return True

    def to_config(self, arch: ToyArch) -> dict[str, str]:
        return dict(zip(self.keys, arch.ops))

    def from_config(self, config: dict[str, Any]) -> ToyArch:
        missing = [key for key in self.keys if key not in config]
        if missing:
            raise ValueError(f"config lacks the architecture key(s) {missing}")
        return ToyArch(tuple(config[key] for key in self.keys))

    def choices(self) -> dict[str, list[str]]:
        return {key: list(VALUES) for key in self.keys}


def fitness(config: dict[str, Any]) -> float:
    """Number of "a" edges of a trial config (works on any ToySpace size)."""
    return float(sum(value == "a" for key, value in config.items() if key[:1] == "e" and key[1:].isdigit()))
