"""Architecture search on Ray Tune: evolutionary and random searchers over any ``SearchSpace``."""

from raynas.search.constraints import (
    ConstrainedSearcher,
    CostLimit,
    arch_from_tune_config,
    tune_param_space,
)
from raynas.search.evolution import EvolutionSearcher
from raynas.search.random import ArchRecord, ArchSearcher, RandomSearcher

__all__ = [
    "ArchRecord",
    "ArchSearcher",
    "ConstrainedSearcher",
    "CostLimit",
    "EvolutionSearcher",
    "RandomSearcher",
    "arch_from_tune_config",
    "tune_param_space",
]
