"""Several candidates per Tune trial (``raynas.search.batches``): each candidate reaches the inner
searcher as its own result, a generation barrier ends a batch early, a failed trial scores its unreported
candidates worst, and a Tune search keeps one result row per candidate."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ray.tune.search import Searcher

from raynas.search.batches import CANDIDATE, CANDIDATES, CandidateBatches
from raynas.search.evolution import EvolutionSearcher
from raynas.search.random import RandomSearcher
from raynas.spaces.opanas import OPANASSpace

SPACE = OPANASSpace()


def fitness(config: dict[str, Any]) -> float:
    """A deterministic score of an architecture: the share of its edges that are skips."""
    return sum(config[key] == "skip" for key in SPACE.keys) / len(SPACE.keys)


def test_each_candidate_of_a_batch_reaches_the_inner_searcher_as_its_own_result() -> None:
    inner = EvolutionSearcher(SPACE, population_size=4, generations=1, top_k=2, seed=0)
    batches = CandidateBatches(inner, candidates_per_trial=3)
    first = batches.suggest("t1")[CANDIDATES]
    second = batches.suggest("t2")[CANDIDATES]
    assert (len(first), len(second)) == (3, 1)  # the generation of 4 ends the second batch early
    assert batches.suggest("t3") is None  # generation 0 not scored yet: no batch, not an empty one

    for position, config in enumerate(first):
        batches.on_trial_result("t1", {"AP": fitness(config), CANDIDATE: position})
        batches.on_trial_result("t1", {"AP": 99.0, CANDIDATE: position})  # reported again: ignored
    batches.on_trial_complete("t1", {"AP": fitness(first[-1]), CANDIDATE: 2})
    batches.on_trial_complete("t2", {"AP": fitness(second[0]), CANDIDATE: 0})  # result only at the end
    assert [record.metric for record in inner.history] == [fitness(c) for c in first + second]

    offspring = batches.suggest("t4")[CANDIDATES]
    assert len(offspring) == 3 and {c["generation"] for c in offspring} == {1}


def test_candidates_a_failed_trial_did_not_report_score_worst() -> None:
    inner = RandomSearcher(SPACE, max_evaluations=3, seed=0, batch_size=3)
    batches = CandidateBatches(inner, candidates_per_trial=3)
    batch = batches.suggest("t1")[CANDIDATES]
    assert batches.suggest("t2") == Searcher.FINISHED
    batches.on_trial_result("t1", {"AP": 0.5, CANDIDATE: 0})
    batches.on_trial_complete("t1", None, error=True)
    assert [(r.metric, r.error) for r in inner.history] == [(0.5, False), (None, True), (None, True)]
    assert len(batch) == 3 and not batches.get_state()["inner_ids"]


def test_state_round_trips_with_trials_in_flight() -> None:
    batches = CandidateBatches(RandomSearcher(SPACE, max_evaluations=4, seed=0), candidates_per_trial=2)
    batches.suggest("t1")
    batches.on_trial_result("t1", {"AP": 0.1, CANDIDATE: 0})
    restored = CandidateBatches(RandomSearcher(SPACE, max_evaluations=4, seed=0), candidates_per_trial=9)
    restored.set_state(batches.get_state())
    assert restored.get_state() == batches.get_state() and restored.candidates_per_trial == 2
    with pytest.raises(ValueError, match="candidates_per_trial must be >= 1"):
        CandidateBatches(RandomSearcher(SPACE), candidates_per_trial=0)


def test_a_batched_tune_search_has_one_row_per_candidate(ray_session, tmp_path: Path) -> None:
    from raynas.search.run import results_table, run_search

    @dataclass
    class SleepyScorers:  # defined here so that Ray pickles it by value for the trial processes
        """Stands in for the scorer actors: a fixed time per candidate, a deterministic AP."""

        seconds: float = 0.05

        def score(self, config: dict[str, Any]) -> dict[str, float]:
            time.sleep(self.seconds)
            edges = [value for key, value in config.items() if key not in ("generation", "origin", "parents")]
            return {"AP": edges.count("skip") / len(edges)}  # fitness(config), without module globals

    searcher = EvolutionSearcher(SPACE, population_size=4, generations=1, top_k=2, seed=0)
    grid = run_search(
        searcher, SleepyScorers(), "batched", tmp_path, max_concurrent=2, candidates_per_trial=2
    )
    table = results_table(grid, "evolution")
    assert len(table) == 8 and table["trial_id"].nunique() == 4  # 2 generations of 4, 2 per trial
    assert list(table["evaluation"]) == list(range(1, 9))
    assert set(table["generation"]) == {0, 1} and set(table["origin"]) <= {"random", "mutation", "crossover"}
    for row in table.to_dict("records"):  # each row's metrics belong to its own architecture
        assert row["AP"] == fitness(row) and SPACE.is_valid(SPACE.from_config(row))
    assert len(searcher.history) == 8  # the inner searcher saw every candidate's own result
    assert all(record.metric == fitness(record.config) for record in searcher.history)
