"""Architecture search on Ray Tune: evolutionary and random searchers over any ``SearchSpace``."""

from raynas.search.constraints import CostLimit
from raynas.search.evolution import EvolutionSearcher
from raynas.search.random import RandomSearcher
from raynas.search.searcher import ArchRecord, ArchSearcher
from raynas.search.tune_interop import ConstrainedSearcher, arch_from_tune_config, tune_param_space

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
