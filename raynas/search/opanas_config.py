"""The settings of an OPANAS sub-net search (Sec. 3.2.2) and its strategies: one dataclass, checked when
made, shared by the search, its folder guard and the jobs that configure it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from raynas.config import ConfigError, check_local_storage, check_ranges, check_run_name

#: "pareto" is the evolution with NSGA-II selection on (metric max, neck FLOPs min); not run by default
STRATEGIES = ("evolution", "random", "pareto")
DEFAULT_STRATEGIES = ("evolution", "random")
PARETO_COST = "neck_flops"


@dataclass
class OPANASSearchConfig:
    """Search settings. Paper (Sec. 3.2.2): population 50, 12 generations, top-10, p=0.1."""

    strategies: list[Literal["evolution", "random", "pareto"]] = field(
        default_factory=lambda: list(DEFAULT_STRATEGIES)
    )
    population_size: int = 50
    generations: int = 12
    top_k: int = 10
    mutation_prob: float = 0.1
    crossover_fraction: float = 0.5
    max_evaluations: int | None = None  # default: population_size * (generations + 1)
    num_scorers: int = 1
    cpus_per_scorer: float = 0.9  # < 1 leaves room for Tune's trial processes on a 2-core machine
    # candidates scored per Tune trial (raynas.search.batches says why); None: a generation split evenly
    # over the scorers, ceil(population_size / num_scorers), so each scorer gets one trial per generation
    candidates_per_trial: int | None = None
    # the fitness: a COCO metric of the search split ("AP" = mAP@[.5:.95]; "AP50" for VOC, as the paper
    # reports VOC); each candidate is scored on at most max_search_images of the split (a seeded subset)
    metric: Literal["AP", "AP50", "AP75", "APs", "APm", "APl"] = "AP"
    max_search_images: int | None = None
    batch_size: int = 8
    use_gpu: bool = False
    cache_features: bool = True
    # per scorer, on its device; batches past the budget run the full forward (raynas.search.scorer)
    cache_gib: float = 2.0
    max_neck_params: int | None = None
    max_neck_flops: int | None = None
    # draws per candidate before a searcher gives up finding an admissible one (raynas.search.constraints):
    # a tight cost limit (e.g. the FPN's FLOPs, experiments/opanas_evidence.py) admits ~0.1 % of the space
    max_retries: int = 100
    seed: int = 0
    storage_path: str = "runs"
    name: str = "opanas_search"

    def __post_init__(self) -> None:
        check_local_storage(self.storage_path)
        check_run_name(self.name, "name")
        check_ranges(
            self,
            {"population_size": (1, None), "generations": (0, None), "top_k": (1, self.population_size),
             "mutation_prob": (0.0, 1.0), "crossover_fraction": (0.0, 1.0), "max_evaluations": (1, None),
             "num_scorers": (1, None), "cpus_per_scorer": (0.0, None, "low_open"),
             "candidates_per_trial": (1, None),
             "max_search_images": (1, None), "batch_size": (1, None), "cache_gib": (0.0, None),
             "max_neck_params": (1, None), "max_neck_flops": (1, None), "max_retries": (1, None),
             "seed": (0, None)},
        )  # fmt: skip
        if not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise ConfigError(
                f"strategies must name each search strategy once, at least one of {list(STRATEGIES)}; "
                f"got {self.strategies!r}"
            )

    @property
    def budget(self) -> int:
        return self.max_evaluations or self.population_size * (self.generations + 1)

    @property
    def trial_size(self) -> int:
        """Candidates per Tune trial: ``candidates_per_trial``, else a generation split over the scorers."""
        return self.candidates_per_trial or math.ceil(self.population_size / self.num_scorers)
