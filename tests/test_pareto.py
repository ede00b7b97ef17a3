"""NSGA-II selection (raynas.search.pareto) and the multi-objective evolutionary searcher."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
from test_searchers import Driver, small_ea
from toy_space import ToySpace, fitness

from raynas.search import EvolutionSearcher
from raynas.search.pareto import crowding_distances, non_dominated_fronts, nsga2_order, oriented, pareto_mask

# (AP, FLOPs) by hand; oriented: AP max, FLOPs min
POPULATION = [
    (0.30, 10.0),  # 0: front 0 (cheapest)
    (0.40, 20.0),  # 1: front 0
    (0.45, 40.0),  # 2: front 0
    (0.50, 80.0),  # 3: front 0 (most accurate)
    (0.35, 30.0),  # 4: front 1 (dominated by 1)
    (0.42, 45.0),  # 5: front 1 (dominated by 2)
    (0.20, 50.0),  # 6: front 2 (dominated by 0, 1, 4)
    None,  # 7: failed trial
]


def points() -> list:
    return [None if p is None else oriented(p, ["max", "min"]) for p in POPULATION]


def test_fronts_of_a_hand_made_population() -> None:
    assert non_dominated_fronts(points()) == [[0, 1, 2, 3], [4, 5], [6], [7]]
    assert pareto_mask(points()) == [True] * 4 + [False] * 4
    assert oriented([0.3, float("nan")], ["max", "min"]) is None


def test_crowding_order_within_a_front() -> None:
    front = [points()[i] for i in (0, 1, 2, 3)]
    distance = crowding_distances(front)
    assert distance[0] == distance[3] == math.inf  # extremes of each objective
    # point 1: AP gap (0.45-0.30)/0.2 + FLOPs gap (40-10)/70; point 2: (0.50-0.40)/0.2 + (80-20)/70
    assert distance[1] == pytest.approx(0.15 / 0.2 + 30 / 70)
    assert distance[2] == pytest.approx(0.10 / 0.2 + 60 / 70)
    # extremes first (index order), then the less crowded of the middle, then the next fronts
    assert nsga2_order(points()) == [0, 3, 2, 1, 4, 5, 6, 7]


def test_multi_objective_parents_are_the_nsga2_top_k() -> None:
    """Toy objectives: maximise the number of "a" edges, minimise the number of "a" or "b" edges (a
    real trade-off: every count of "a" with no "b" is on the front)."""

    def score(config: dict) -> dict:
        return {"AP": fitness(config), "cost": sum(config[f"e{i}"] in ("a", "b") for i in range(6))}

    searcher = small_ea(generations=3, top_k=3, objectives=[("AP", "max"), ("cost", "min")])
    suggested = Driver(searcher, concurrency=4, seed=3, score=score).run()
    assert searcher.metric == "AP"
    values = {trial_id: score(config) for trial_id, config in suggested}
    for trial_id, config in suggested:
        if config["origin"] == "random":
            continue
        earlier = [t for t, c in suggested if c["generation"] < config["generation"]]
        pts = [oriented([values[t]["AP"], values[t]["cost"]], ["max", "min"]) for t in earlier]
        allowed = {earlier[i] for i in nsga2_order(pts)[:3]}
        assert set(config["parents"].split(",")) <= allowed, (trial_id, config["parents"], allowed)
    # best() is still the best by the first objective
    assert searcher.best().metric == max(v["AP"] for v in values.values())


def test_single_objective_suggestions_are_unchanged() -> None:
    """The same seed gives the same suggestions as before objectives existed (digest of that code)."""
    suggested = Driver(small_ea(generations=5), concurrency=3, seed=5).run()
    digest = hashlib.sha256(json.dumps([c for _, c in suggested], sort_keys=True).encode()).hexdigest()
    assert digest[:16] == "673ca7eda12470b7"


@pytest.mark.parametrize("objectives", [[("AP", "max")], [("AP", "up"), ("cost", "min")], [("AP",)]])
def test_bad_objectives_are_refused(objectives: list) -> None:
    with pytest.raises(ValueError, match="objectives must be two or more"):
        EvolutionSearcher(ToySpace(), objectives=objectives)
