"""Searchers (evolutionary, random, Tune-searcher bridge) over a toy space; direct and in real Tune runs."""

from __future__ import annotations

import copy
import math
import os
import pickle
import random
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.sample import Categorical
from toy_space import ToyArch, ToySpace, fitness

from raynas.search import (
    ConstrainedSearcher,
    CostLimit,
    EvolutionSearcher,
    RandomSearcher,
    arch_from_tune_config,
    tune_param_space,
)

ARCH_COLUMNS = [f"config/e{i}" for i in range(6)]


def ap_of(config: dict[str, Any]) -> dict[str, float]:
    return {"AP": fitness(config)}


class Driver:
    """Plays Tune: keeps up to ``concurrency`` trials in flight and completes them in random order."""

    def __init__(
        self,
        searcher: Searcher,
        concurrency: int = 5,
        seed: int = 0,
        score: Callable[[dict], dict | None] = ap_of,
    ):
        self.searcher = searcher
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.score = score
        self.pending: dict[str, dict] = {}
        self.suggested: list[tuple[str, dict]] = []
        self.finished = False
        self.nones = 0

    def step(self) -> bool:
        """One suggestion or one completion; ``False`` when the search is over."""
        if not self.finished and len(self.pending) < self.concurrency:
            trial_id = f"t{len(self.suggested)}"
            config = self.searcher.suggest(trial_id)
            if config == Searcher.FINISHED:
                self.finished = True
            elif config is not None:
                self.pending[trial_id] = config
                self.suggested.append((trial_id, config))
                return True
            else:
                self.nones += 1
        if self.pending:
            trial_id = self.rng.choice(sorted(self.pending))
            self.searcher.on_trial_complete(trial_id, self.score(self.pending.pop(trial_id)))
            return True
        assert self.finished, "suggest returned None with no trial in flight: the search would hang"
        return False

    def run(self) -> list[tuple[str, dict]]:
        while self.step():
            pass
        return self.suggested


def archs(suggested: list[tuple[str, dict]]) -> list[tuple[str, ...]]:
    return [tuple(config[f"e{i}"] for i in range(6)) for _, config in suggested]


def small_ea(**kwargs: Any) -> EvolutionSearcher:
    settings = dict(population_size=8, generations=4, top_k=3, mutation_prob=0.2, seed=0)
    return EvolutionSearcher(ToySpace(), **{**settings, **kwargs})


# ---- evolutionary searcher, driven directly -----------------------------------------------------
def test_generation_barrier_with_concurrent_trials() -> None:
    searcher = small_ea(population_size=6, generations=2)
    first = {f"a{i}": searcher.suggest(f"a{i}") for i in range(6)}
    assert all(config["generation"] == 0 and config["origin"] == "random" for config in first.values())
    assert searcher.suggest("a6") is None  # all 6 in flight: generation 1 cannot be bred yet
    order = list(first)
    random.Random(1).shuffle(order)
    for trial_id in order[:-1]:
        searcher.on_trial_complete(trial_id, ap_of(first[trial_id]))
        assert searcher.suggest("waiting") is None
    searcher.on_trial_complete(order[-1], ap_of(first[order[-1]]))
    second = searcher.suggest("b0")
    assert second["generation"] == 1 and second["origin"] in ("mutation", "crossover")

    driver = Driver(searcher, concurrency=4, seed=2)
    driver.pending["b0"] = second
    generations = Counter(config["generation"] for _, config in [("b0", second), *driver.run()])
    assert generations == {1: 6, 2: 6}
    assert searcher.suggest("late") == Searcher.FINISHED
    assert len(searcher.history) == 18 == searcher.total_evaluations


def test_default_budget_is_population_times_generations_plus_one() -> None:
    searcher = EvolutionSearcher(ToySpace())  # OPANAS Sec. 3.2.2: N_S=50, T=12, k=10, p=0.1
    suggested = Driver(searcher, concurrency=7).run()
    assert len(suggested) == searcher.total_evaluations == 50 * (12 + 1)
    assert RandomSearcher(ToySpace()).max_evaluations == searcher.total_evaluations
    assert Counter(config["generation"] for _, config in suggested) == {g: 50 for g in range(13)}
    assert searcher.best().metric == 6.0
    assert len(set(archs(suggested))) == len(suggested)


def test_children_are_bred_from_the_top_k_of_all_evaluated() -> None:
    searcher = small_ea(top_k=3, generations=5)
    suggested = Driver(searcher, concurrency=3, seed=5).run()
    ap = {trial_id: fitness(config) for trial_id, config in suggested}
    index = {trial_id: i for i, (trial_id, _) in enumerate(suggested)}
    origins = Counter()
    for trial_id, config in suggested:
        origins[config["origin"]] += 1
        parents = [p for p in config["parents"].split(",") if p]
        if config["origin"] == "random":
            assert parents == []
            continue
        assert len(parents) == (1 if config["origin"] == "mutation" else 2)
        earlier = [t for t, c in suggested if c["generation"] < config["generation"]]
        top = sorted(earlier, key=lambda t: (-ap[t], index[t]))[:3]
        assert set(parents) <= set(top), (trial_id, parents, top)
    assert origins["mutation"] > 0 and origins["crossover"] > 0


def test_never_suggests_an_architecture_twice() -> None:
    space = ToySpace(num_edges=3)  # 63 valid architectures: strong duplicate pressure
    searcher = EvolutionSearcher(space, population_size=10, generations=4, top_k=3, seed=0)
    suggested = Driver(searcher, concurrency=4).run()
    seen = [tuple(config[key] for key in space.keys) for _, config in suggested]
    assert len(seen) == 50 and len(set(seen)) == 50
    assert ("d", "d", "d") not in seen


def test_no_evaluation_is_spent_on_a_network_already_evaluated() -> None:
    """Architectures that differ only on edges out of dead nodes compute the same network: the searchers
    compare canonical forms, so none of them is suggested twice."""
    from raynas.search.searcher import VisitedArchs
    from raynas.spaces.opanas import OPANASSpace

    space = OPANASSpace(num_nodes=2)  # 3 edges: e0_1, e0_2, e1_2
    visited = VisitedArchs(space)
    visited.add(space.from_edges({(0, 2): "top_down", (1, 2): "skip"}))  # node 1 dead
    assert space.from_edges({(0, 2): "top_down", (1, 2): "bottom_up"}) in visited
    assert space.from_edges({(0, 2): "top_down"}) in visited
    assert space.from_edges({(0, 1): "skip", (0, 2): "top_down"}) not in visited
    for searcher in (
        EvolutionSearcher(space, population_size=8, generations=6, top_k=3, mutation_prob=0.5, seed=0),
        RandomSearcher(space, max_evaluations=60, seed=0),
    ):
        suggested = Driver(searcher, concurrency=2).run()
        canonical = [space.canonical(space.from_config(config)) for _, config in suggested]
        assert len(canonical) == len(set(canonical)) > 20


def test_constraint_filters_every_suggestion() -> None:
    few_a = CostLimit(cost=lambda arch: arch.ops.count("a"), limit=3)
    for searcher in (
        small_ea(constraint=few_a),
        RandomSearcher(ToySpace(), max_evaluations=40, constraint=few_a),
    ):
        suggested = Driver(searcher).run()
        assert suggested and all(fitness(config) <= 3 for _, config in suggested)
        assert searcher.best().metric == 3.0


@pytest.mark.parametrize("make", [small_ea, lambda **kw: RandomSearcher(ToySpace(), max_evaluations=5, **kw)])
def test_too_tight_constraint_is_a_clear_error(make: Callable[..., Searcher]) -> None:
    searcher = make(constraint=lambda arch: False, max_retries=20)
    with pytest.raises(RuntimeError, match="20 failed the constraint.*too tight"):
        searcher.suggest("t0")


def test_same_seed_same_suggestions_whatever_the_completion_order() -> None:
    a = archs(Driver(small_ea(seed=3), concurrency=2, seed=0).run())
    b = archs(Driver(small_ea(seed=3), concurrency=8, seed=9).run())
    c = archs(Driver(small_ea(seed=4), concurrency=2, seed=0).run())
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    "make", [small_ea, lambda: RandomSearcher(ToySpace(), max_evaluations=30, seed=0, batch_size=8)]
)
@pytest.mark.parametrize("steps", [5, 23, 37])
def test_save_restore_continues_with_the_same_suggestions(
    make: Callable[[], Searcher], steps: int, tmp_path: Path
) -> None:
    original = Driver(make(), concurrency=5, seed=1)
    for _ in range(steps):
        original.step()
    checkpoint = tmp_path / "searcher.pkl"
    original.searcher.save(str(checkpoint))

    resumed = copy.deepcopy(original)  # the "Tune" side: same trials in flight, same completion order
    resumed.searcher = make()
    resumed.searcher.restore(str(checkpoint))
    assert original.run() == resumed.run()
    assert [r.metric for r in original.searcher.history] == [r.metric for r in resumed.searcher.history]


def test_restore_rejects_a_checkpoint_of_another_searcher(tmp_path: Path) -> None:
    small_ea().save(str(tmp_path / "ea.pkl"))
    with pytest.raises(ValueError, match="restore into the same kind"):
        RandomSearcher(ToySpace()).restore(str(tmp_path / "ea.pkl"))
    with pytest.raises(FileNotFoundError):
        small_ea().restore(str(tmp_path / "missing.pkl"))


def test_failed_and_nan_trials_count_as_done_and_score_worst() -> None:
    searcher = small_ea(population_size=4, top_k=2)
    ids = [f"t{i}" for i in range(4)]
    configs = [searcher.suggest(trial_id) for trial_id in ids]
    searcher.on_trial_complete("t0", None, error=True)
    searcher.on_trial_complete("t1", {"loss": 1.0})  # metric missing
    searcher.on_trial_complete("t2", {"AP": float("nan")})
    assert searcher.suggest("t4") is None  # t3 still in flight
    searcher.on_trial_complete("t3", {"AP": 0.5})
    records = {r.trial_id: r for r in searcher.history}
    assert [records[t].metric for t in ids] == [None, None, None, 0.5]
    assert all(records[t].score == -math.inf for t in ids[:3])
    assert searcher.best().trial_id == "t3"
    child = searcher.suggest("t4")  # the barrier lifted: failed trials counted as done
    assert child["generation"] == 1 and configs[3] != child
    assert "t3" in child["parents"].split(",")


def test_min_mode_and_metric_from_set_search_properties() -> None:
    searcher = small_ea(population_size=6, generations=1, top_k=1)
    assert searcher.set_search_properties("loss", "min", {"constant": 1})
    suggested = Driver(searcher, score=lambda c: {"loss": fitness(c)}).run()
    best = searcher.best()
    assert best.metric == min(fitness(c) for _, c in suggested[:6])
    assert all(c["parents"] == best.trial_id for _, c in suggested[6:] if c["origin"] == "mutation")


def test_set_search_properties_refuses_search_domains_and_late_changes() -> None:
    searcher = small_ea()
    assert not searcher.set_search_properties("AP", "max", {"e0": tune.choice(["a", "b"])})
    searcher.suggest("t0")
    assert not searcher.set_search_properties("loss", "min", {})
    assert searcher.set_search_properties("AP", "max", {})


def test_max_evaluations_caps_the_search() -> None:
    searcher = small_ea(population_size=20, generations=6, max_evaluations=30)
    assert searcher.total_evaluations == 30
    assert len(Driver(searcher).run()) == 30


def test_a_trial_restarted_under_a_new_id_is_matched_by_its_architecture() -> None:
    searcher = small_ea(population_size=2)
    config = searcher.suggest("old")
    searcher.suggest("other")
    flat = {f"config/{key}": value for key, value in config.items()}
    searcher.on_trial_complete("new", {"AP": 2.0, **flat})
    assert [r.trial_id for r in searcher.history] == ["new"] and searcher.history[0].metric == 2.0


def test_evolution_beats_random_search_on_the_same_budget() -> None:
    def evaluations_to_optimum(searcher: Searcher) -> int | None:
        suggested = Driver(searcher, concurrency=5).run()
        return next((i + 1 for i, (_, config) in enumerate(suggested) if fitness(config) == 6), None)

    budget = 20 * (6 + 1)
    ea = [
        evaluations_to_optimum(
            EvolutionSearcher(ToySpace(), population_size=20, generations=6, top_k=5, seed=s)
        )
        for s in range(10)
    ]
    rs = [
        evaluations_to_optimum(RandomSearcher(ToySpace(), max_evaluations=budget, seed=s)) for s in range(10)
    ]
    found_ea = [n for n in ea if n is not None]
    found_rs = [n for n in rs if n is not None]
    # 1 optimum among 4095 valid architectures: random search finds it in ~3% of 140-evaluation runs
    assert len(found_ea) >= 9 and len(found_rs) <= 3, (ea, rs)
    assert sum(found_ea) / len(found_ea) < budget * 0.75


# ---- random searcher --------------------------------------------------------------------------
def test_random_searcher_bookkeeping_budget_and_determinism() -> None:
    suggested = Driver(RandomSearcher(ToySpace(), max_evaluations=25, seed=7, batch_size=10)).run()
    assert len(suggested) == 25 and len(set(archs(suggested))) == 25
    assert [c["generation"] for _, c in suggested] == [i // 10 for i in range(25)]
    assert {(c["origin"], c["parents"]) for _, c in suggested} == {("random", "")}
    again = Driver(RandomSearcher(ToySpace(), max_evaluations=25, seed=7), concurrency=1).run()
    assert archs(again) == archs(suggested)


# ---- Tune's own searchers ---------------------------------------------------------------------
class ScriptedSearcher(Searcher):
    """A stand-in for OptunaSearch & co: proposes fixed configs and records what it was told."""

    def __init__(self, configs: list[dict], metric: str = "AP", mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self.configs = list(configs)
        self.told: dict[str, Any] = {}

    def suggest(self, trial_id: str) -> dict | str:
        return self.configs.pop(0) if self.configs else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.told[trial_id] = None if result is None else result.get(self.metric)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps((self.configs, self.told)))

    def restore(self, checkpoint_path: str) -> None:
        self.configs, self.told = pickle.loads(Path(checkpoint_path).read_bytes())


def test_tune_param_space_maps_choices_and_needs_them() -> None:
    space = ToySpace()
    param_space = tune_param_space(space)
    assert list(param_space) == list(space.keys)
    assert all(
        isinstance(d, Categorical) and d.categories == ["a", "b", "c", "d"] for d in param_space.values()
    )
    with pytest.raises(TypeError, match="choices"):
        tune_param_space(object())


def test_arch_from_tune_config_rejects_invalid_and_disallowed() -> None:
    space = ToySpace()
    assert arch_from_tune_config(space, dict.fromkeys(space.keys, "a")) == ToyArch(("a",) * 6)
    assert arch_from_tune_config(space, dict.fromkeys(space.keys, "d")) is None
    assert arch_from_tune_config(space, {"e0": "a"}) is None
    assert arch_from_tune_config(space, dict.fromkeys(space.keys, "a"), constraint=lambda a: False) is None


def test_constrained_searcher_scores_invalid_configs_worst_without_running_them(tmp_path: Path) -> None:
    space = ToySpace()
    valid = [dict(zip(space.keys, "abcabc")), dict(zip(space.keys, "aaaabb"))]
    inner = ScriptedSearcher([dict.fromkeys(space.keys, "d"), {"e0": "a"}, valid[0], valid[1]])
    searcher = ConstrainedSearcher(inner, space, batch_size=1)
    first = searcher.suggest("t0")
    assert first == {**valid[0], "generation": 0, "origin": "ScriptedSearcher", "parents": ""}
    assert inner.told == {"t0": -math.inf, "t0_invalid1": -math.inf}
    searcher.on_trial_complete("t0", {"AP": 3.0})
    assert inner.told["t0_invalid2"] == 3.0 and searcher.num_invalid == 2

    assert searcher.suggest("t1")["generation"] == 1
    searcher.save(str(tmp_path / "wrapped.pkl"))
    restored = ConstrainedSearcher(ScriptedSearcher([]), space)
    restored.restore(str(tmp_path / "wrapped.pkl"))
    restored.on_trial_complete("t1", {"AP": 4.0})
    assert restored.searcher.told["t1"] == 4.0 and restored.suggest("t2") == Searcher.FINISHED

    stubborn = ConstrainedSearcher(ScriptedSearcher([{"e0": "a"}] * 5), space, max_retries=3)
    with pytest.raises(RuntimeError, match="3 invalid or disallowed"):
        stubborn.suggest("t0")


class InvalidArchitectures:
    """Scorer handles whose every candidate is invalid (as ``SupernetScorer`` says of one)."""

    def score(self, config: dict[str, Any]) -> dict[str, float]:
        raise ValueError(f"{config} is not an architecture of the space")


@pytest.mark.parametrize("mode", ["max", "min"])
def test_an_invalid_architecture_scores_the_worst_value_of_the_search_mode(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """raynas' trainable (``score_trial``) and ``ConstrainedSearcher`` report an invalid architecture
    alike: the search's metric at the worst value of its mode, so it never ranks above a real result."""
    from raynas.search import run
    from raynas.search.searcher import worst_value

    worst = -math.inf if mode == "max" else math.inf
    assert worst_value(mode) == worst
    with pytest.raises(ValueError, match="mode must be one of"):
        worst_value("maximise")

    space = ToySpace()
    inner = ScriptedSearcher(
        [dict.fromkeys(space.keys, "d"), dict.fromkeys(space.keys, "a")], metric="loss", mode=mode
    )
    assert ConstrainedSearcher(inner, space).suggest("t0")["e0"] == "a"
    assert inner.told == {"t0": worst}

    reported: list[dict] = []
    monkeypatch.setattr(run.tune, "report", reported.append)
    run.score_trial(dict.fromkeys(space.keys, "d"), InvalidArchitectures(), metric="loss", mode=mode)
    assert len(reported) == 1 and reported[0]["loss"] == worst and reported[0]["valid"] is False
    assert "is not an architecture" in reported[0]["invalid_reason"] and "AP" not in reported[0]


# ---- real Tune runs ---------------------------------------------------------------------------
def toy_trainable(config: dict) -> dict:
    """The whole 'evaluation': the toy fitness of the suggested architecture."""
    return {"AP": fitness(config)}


class SampleSearcher(Searcher):
    """A minimal Tune-native searcher: samples the param_space it gets from set_search_properties."""

    def __init__(self, seed: int = 0):
        super().__init__(metric="AP", mode="max")
        self.rng = random.Random(seed)
        self.domains: dict = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        self.domains = config
        return True

    def suggest(self, trial_id: str) -> dict:
        return {key: self.rng.choice(domain.categories) for key, domain in self.domains.items()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        return None

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps(self.rng))

    def restore(self, checkpoint_path: str) -> None:
        self.rng = pickle.loads(Path(checkpoint_path).read_bytes())


class InterruptAfter(tune.Callback):
    """Stops the Tune run like Ctrl+C would (SIGUSR1: Tune saves its state and returns), once."""

    def __init__(self, completed: int, marker: Path):
        self.completed = completed
        self.marker = marker
        self.count = 0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.count += 1
        if self.count >= self.completed and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture(scope="module")
def tune_session(ray_session: None) -> None:
    """conftest's Ray, with the trainable and the toy space shipped to the trials by value."""
    import toy_space

    # Trial workers cannot import modules from tests/: ship the trainable and the toy space by value.
    for module in (toy_space, sys.modules[__name__]):
        ray.cloudpickle.register_pickle_by_value(module)


def tune_run(searcher: Searcher, tmp_path: Path, name: str, **kwargs: Any) -> tune.ResultGrid:
    num_samples = kwargs.pop("num_samples", -1)
    tuner = tune.Tuner(
        toy_trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=num_samples,
            metric="AP",
            mode="max",
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0, **kwargs),
    )
    return tuner.fit()


def test_tune_run_with_evolution_searcher(tune_session: None, tmp_path: Path) -> None:
    searcher = small_ea(population_size=4, generations=2, top_k=2)
    df = tune_run(searcher, tmp_path, "ea", num_samples=searcher.total_evaluations).get_dataframe()
    assert len(df) == 12 and not df["AP"].isna().any()
    assert set(ARCH_COLUMNS + ["config/generation", "config/origin", "config/parents"]) <= set(df.columns)
    assert len(df[ARCH_COLUMNS].drop_duplicates()) == 12
    assert df["config/generation"].value_counts().to_dict() == {0: 4, 1: 4, 2: 4}
    parents = {p for ps in df["config/parents"] for p in ps.split(",") if p}
    assert parents and parents <= set(df["trial_id"])


def test_tune_run_with_random_searcher(tune_session: None, tmp_path: Path) -> None:
    searcher = RandomSearcher(ToySpace(), max_evaluations=6, batch_size=3, seed=1)
    df = tune_run(searcher, tmp_path, "random").get_dataframe()
    assert len(df) == 6 and len(df[ARCH_COLUMNS].drop_duplicates()) == 6
    assert sorted(df["config/generation"]) == [0, 0, 0, 1, 1, 1] and set(df["config/origin"]) == {"random"}


def test_tune_run_with_a_tune_searcher_over_tune_param_space(tune_session: None, tmp_path: Path) -> None:
    space = ToySpace()
    searcher = ConstrainedSearcher(SampleSearcher(seed=0), space, batch_size=2)
    grid = tune.Tuner(
        toy_trainable,
        param_space=tune_param_space(space),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=4,
            metric="AP",
            mode="max",
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name="sample", storage_path=str(tmp_path), verbose=0),
    ).fit()
    df = grid.get_dataframe()
    assert len(df) == 4 and set(df["config/origin"]) == {"SampleSearcher"}
    assert all(
        space.is_valid(space.from_config({k[7:]: v for k, v in row.items()}))
        for row in df[ARCH_COLUMNS].to_dict("records")
    )


def test_tune_run_with_optuna(tune_session: None, tmp_path: Path) -> None:
    pytest.importorskip("optuna", reason="optuna is not installed; Tune's OptunaSearch cannot run")
    from ray.tune.search.optuna import OptunaSearch

    space = ToySpace()
    searcher = ConstrainedSearcher(OptunaSearch(seed=0), space, invalid_value=0.0)
    grid = tune.Tuner(
        toy_trainable,
        param_space=tune_param_space(space),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=6, metric="AP", mode="max", reuse_actors=True
        ),
        run_config=tune.RunConfig(name="optuna", storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert len(grid.get_dataframe()) == 6


@pytest.mark.slow
def test_tuner_restore_resumes_the_evolutionary_search(tune_session: None, tmp_path: Path) -> None:
    make = lambda: small_ea(population_size=4, generations=2, top_k=2, seed=2)  # noqa: E731
    expected = sorted(archs(Driver(make(), concurrency=2).run()))
    marker = tmp_path / "interrupted"
    grid = tune_run(make(), tmp_path, "resume", callbacks=[InterruptAfter(5, marker)])
    assert marker.exists() and 5 <= len(grid.get_dataframe()) < 12

    restored = tune.Tuner.restore(str(tmp_path / "resume"), trainable=toy_trainable)
    df = restored.fit().get_dataframe()
    assert len(df) == 12 and df["trial_id"].is_unique and df["AP"].notna().all()
    resumed = sorted(tuple(row) for row in df[ARCH_COLUMNS].itertuples(index=False))
    assert resumed == expected  # exactly the architectures of an uninterrupted search
