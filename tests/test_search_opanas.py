"""OPANAS sub-net search end to end (``search_opanas``): tables, best architecture, plots, resume.

One tiny untrained super-net checkpoint (written without Ray Train, see ``helpers_supernet``), one
Ray instance and one finished search for the module; the tests read what that search wrote.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import ray
from helpers_supernet import make_supernet_checkpoint
from ray.tune.result import EXPR_RESULT_FILE as RESULT_FILE

from raynas.search.opanas import search_opanas
from raynas.search.opanas_config import OPANASSearchConfig
from raynas.search.run import resume_search
from raynas.spaces.base import arch_from_json
from raynas.spaces.opanas import OPANASSpace

SPACE = OPANASSpace()
STRATEGIES = ("evolution", "random", "pareto")
POPULATION, GENERATIONS = 3, 1
BUDGET = POPULATION * (GENERATIONS + 1)


@pytest.fixture(scope="module")
def checkpoint(tiny_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_supernet_checkpoint(tmp_path_factory.mktemp("supernet"), tiny_digits)


def search_config(storage: Path, **changes) -> OPANASSearchConfig:
    cfg = OPANASSearchConfig(
        population_size=POPULATION, generations=GENERATIONS, top_k=2, num_scorers=2, storage_path=str(storage)
    )
    return replace(cfg, **changes)


@pytest.fixture(scope="module")
def searched(ray_session, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = search_config(tmp_path_factory.mktemp("search"), strategies=list(STRATEGIES))
    return {"cfg": cfg, **search_opanas(checkpoint, cfg, verbose=0)}


def test_search_writes_tables_best_archs_and_plots(searched: dict) -> None:
    run_dir = searched["run_dir"]
    assert run_dir == Path(searched["cfg"].storage_path).resolve() / searched["cfg"].name
    for name in ("search_curves.png", "pareto.png", "comparison.json", "run_info.json"):
        assert (run_dir / name).stat().st_size > 0, name
    for strategy in STRATEGIES:
        for name in ("results.csv", "best_arch.json", "best_arch.png", "summary.json"):
            assert (run_dir / strategy / name).stat().st_size > 0, f"{strategy}/{name}"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_results_table_has_one_row_per_candidate(searched: dict, strategy: str) -> None:
    df = searched["tables"][strategy]
    on_disk = pd.read_csv(searched["run_dir"] / strategy / "results.csv")
    assert len(df) == len(on_disk) == BUDGET
    columns = SPACE.keys + ["generation", "origin", "AP", "AP50", "neck_params", "neck_flops", "strategy"]
    assert set(columns) <= set(on_disk.columns)
    assert not on_disk[SPACE.keys].duplicated().any()  # every candidate evaluated once
    assert all(SPACE.is_valid(SPACE.from_config(row)) for row in on_disk[SPACE.keys].to_dict("records"))
    assert on_disk["AP"].notna().all() and (on_disk["neck_params"] > 0).all()
    assert sorted(on_disk["generation"]) == [0] * POPULATION + [1] * POPULATION
    assert set(on_disk.loc[on_disk["generation"] == 0, "origin"]) == {"random"}
    origins = set(on_disk["origin"])
    assert origins <= ({"random"} if strategy == "random" else {"random", "mutation", "crossover"})
    assert list(on_disk["evaluation"]) == list(range(1, BUDGET + 1))
    assert set(on_disk["strategy"]) == {strategy}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_best_arch_json_loads_back_and_is_the_best_row(searched: dict, strategy: str) -> None:
    payload = json.loads((searched["run_dir"] / strategy / "best_arch.json").read_text())
    arch = arch_from_json(SPACE, json.dumps(payload))
    df = searched["tables"][strategy]
    best = df["AP"].astype(float).max()
    best_archs = {SPACE.from_config(row) for row in df.loc[df["AP"] == best, SPACE.keys].to_dict("records")}
    assert arch in best_archs


def test_strategies_get_the_same_number_of_evaluations(searched: dict) -> None:
    comparison = json.loads((searched["run_dir"] / "comparison.json").read_text())
    assert [row["strategy"] for row in comparison] == list(STRATEGIES)
    assert [row["evaluations"] for row in comparison] == [BUDGET] * 3
    assert list(searched["summary"]["evaluations"]) == [BUDGET] * 3
    assert all(row["best_AP"] >= row["top5_mean_AP"] for row in comparison)
    # how the scoring super-net was trained is part of every row (Table 5's switches)
    assert all(
        (row["supernet_sampling"], row["supernet_gamma"], row["supernet_train_paths"])
        == ("fair", True, "parameterised")
        for row in comparison
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pareto_front_is_marked_in_every_table(searched: dict, strategy: str) -> None:
    df = pd.read_csv(searched["run_dir"] / strategy / "results.csv")
    front = df[df["pareto_front"]]
    assert len(front) >= 1
    for row in df.itertuples():  # no candidate beats a front member on AP at no more FLOPs
        for member in front.itertuples():
            assert not (
                row.AP >= member.AP
                and row.neck_flops <= member.neck_flops
                and (row.AP > member.AP or row.neck_flops < member.neck_flops)
            )
    best = df.loc[df["AP"].idxmax()]
    assert df.loc[(df["AP"] == best["AP"]) & df["pareto_front"]].shape[0] >= 1  # the most accurate is on it


def test_resume_of_a_finished_search_evaluates_nothing_again(searched: dict, checkpoint: Path) -> None:
    before = {s: set(t["trial_id"]) for s, t in searched["tables"].items()}
    again = search_opanas(checkpoint, searched["cfg"], resume=True, verbose=0)
    assert {s: set(t["trial_id"]) for s, t in again["tables"].items()} == before
    for strategy in before:
        assert len(pd.read_csv(again["run_dir"] / strategy / "results.csv")) == BUDGET


def test_bad_resume_path_and_bad_checkpoint_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "not_a_search").mkdir()
    for path in (tmp_path / "not_a_search", tmp_path / "missing"):
        with pytest.raises(FileNotFoundError, match="not a Tune experiment directory that can be resumed"):
            resume_search(path, scorers=None)
    with pytest.raises(FileNotFoundError, match="is not a raynas checkpoint"):
        search_opanas(tmp_path, search_config(tmp_path))


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"num_scorers": 64}, "lower num_scorers or cpus_per_scorer"),
        ({"use_gpu": True}, "set use_gpu: false"),
        ({"cpus_per_scorer": "all"}, "CPU beside them"),  # every CPU to the actors, none for Tune's trials
    ],
)
def test_scorers_the_cluster_cannot_host_are_refused_not_waited_for(
    ray_session, checkpoint: Path, tmp_path: Path, changes: dict, needle: str
) -> None:
    """A local Ray never grows, so Ray would wait for these actors forever (the search hung, silent);
    refused before the search folder is claimed."""
    if changes.get("use_gpu") and ray.cluster_resources().get("GPU", 0) >= 2:
        pytest.skip("this machine has the GPUs the search asks for")
    if changes.get("cpus_per_scorer") == "all":
        changes = {"cpus_per_scorer": ray.cluster_resources()["CPU"] / 2}
    cfg = search_config(tmp_path, **changes)
    with pytest.raises(RuntimeError, match=needle):
        search_opanas(checkpoint, cfg)
    assert not (tmp_path / cfg.name).exists()


def test_a_scorer_pool_the_cluster_cannot_host_is_refused(ray_session, checkpoint: Path) -> None:
    """rank_correlation.py, supernet_variants.py and the benchmarks build the pool directly."""
    from raynas.search.pool import ScorerPool

    with pytest.raises(RuntimeError, match="lower num_scorers or cpus_per_scorer"):
        ScorerPool(checkpoint, num_actors=64)


@pytest.mark.slow
def test_tunes_own_optuna_searcher_runs_through_the_same_scorers(
    ray_session, checkpoint: Path, tmp_path: Path
) -> None:
    """The README's recipe: OptunaSearch over one tune.choice per edge, wrapped in ConstrainedSearcher."""
    from ray.tune.search.optuna import OptunaSearch

    from raynas.search import ConstrainedSearcher, tune_param_space
    from raynas.search.pool import ScorerPool
    from raynas.search.run import results_table, run_search

    pool = ScorerPool(checkpoint, num_actors=1)
    searcher = ConstrainedSearcher(OptunaSearch(seed=0), SPACE)
    try:
        grid = run_search(
            searcher,
            pool.handles,
            "optuna",
            tmp_path,
            1,
            verbose=0,
            param_space=tune_param_space(SPACE),
            num_samples=3,
        )
    finally:  # its actor would hold a CPU of the module's Ray that the next search waits for
        pool.shutdown()
    table = results_table(grid, "optuna")
    assert len(table) == 3 and table["AP"].notna().all() and set(table["strategy"]) == {"optuna"}
    assert all(SPACE.is_valid(SPACE.from_config(row)) for row in table[list(SPACE.keys)].to_dict("records"))


@pytest.mark.slow
def test_interrupted_search_stops_and_resumes_to_the_full_budget(
    ray_session, checkpoint: Path, tmp_path: Path
) -> None:
    """Stop the evolution run like Ctrl+C (SIGUSR1) at its first result: the job stops there (the
    random search does not start); ``resume=True`` finishes evolution, then runs random."""
    cfg = search_config(tmp_path, name="interrupted")
    # Tune writes trial results to the session's driver artifacts at once, to storage_path later
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    results = f"artifacts/*/evolution/driver_artifacts/*/{RESULT_FILE}"

    def interrupt_at_the_first_result() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = [p for p in session.glob(results) if p.stat().st_size > 0]
            if done:  # the generation barrier holds generation 1 back until all of generation 0 is in
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.1)

    threading.Thread(target=interrupt_at_the_first_result, daemon=True).start()
    with pytest.raises(
        RuntimeError, match=r"evolution search was interrupted after \d of 6 evaluations"
    ) as err:
        search_opanas(checkpoint, cfg, verbose=0)
    assert 1 <= int(str(err.value).split(" after ")[1].split()[0]) < BUDGET
    assert not (tmp_path / "interrupted" / "random").exists()
    assert not (tmp_path / "interrupted" / "comparison.json").exists()

    tables = search_opanas(checkpoint, cfg, resume=True, verbose=0)["tables"]
    for strategy in ("evolution", "random"):
        df = tables[strategy]
        assert len(df) == BUDGET and df["AP"].notna().all()
        assert not df[["trial_id", "candidate"]].duplicated().any()  # no candidate reported twice
        assert not df[SPACE.keys].duplicated().any()
    assert sorted(tables["evolution"]["generation"]) == [0] * POPULATION + [1] * POPULATION


def test_a_cost_limited_search_pickled_before_the_split_still_resumes() -> None:
    """Tune's tuner.pkl of a search started before NeckCost moved to raynas.search.neck_cost names it (and
    the all-of constraint) in raynas.search.opanas: unpickling must find both there."""
    import io
    import pickle

    from raynas.search import neck_cost

    unpickler = pickle.Unpickler(io.BytesIO(b""))
    assert unpickler.find_class("raynas.search.opanas", "NeckCost") is neck_cost.NeckCost
    assert unpickler.find_class("raynas.search.opanas", "_AllOf") is neck_cost._AllOf
