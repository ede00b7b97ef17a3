"""OPANAS sub-net search (Sec. 3.2.2): one Tune experiment per strategy over the same scorers.

Evolution and random search get the same number of evaluations and the same scorer actors (so
the same super-net weights and validation images); their result tables are comparable row for row.
Settings: :mod:`raynas.search.opanas_config`; the folder's guard: :mod:`raynas.search.search_folder`;
cost limits: :mod:`raynas.search.neck_cost`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from raynas.checkpoints import load_state
from raynas.config import check_writable_folder
from raynas.io import atomic_write_json, claim_folder
from raynas.search.evolution import EvolutionSearcher
from raynas.search.neck_cost import NeckCost, _AllOf, neck_constraint
from raynas.search.opanas_config import PARETO_COST, STRATEGIES, OPANASSearchConfig
from raynas.search.pareto import oriented, pareto_mask
from raynas.search.pool import ScorerPool, check_scorer_resources, supernet_config
from raynas.search.random import RandomSearcher
from raynas.search.run import (
    TRIAL_CPUS,
    evaluations_ended,
    results_table,
    resume_search,
    run_search,
    summarize,
    write_results,
)
from raynas.search.search_folder import check_finished, guard_search_folder
from raynas.spaces.base import arch_to_json
from raynas.spaces.opanas import OPANASSpace

#: named here by the pickled searchers (Tune's tuner.pkl) of cost-limited searches started before they
#: moved to :mod:`raynas.search.neck_cost`: importable here still, so that such a search resumes
PICKLED_BEFORE_THE_SPLIT = (NeckCost, _AllOf)


def make_searcher(strategy: str, space: OPANASSpace, cfg: OPANASSearchConfig, constraint=None):
    if strategy in ("evolution", "pareto"):
        objectives = [(cfg.metric, "max"), (PARETO_COST, "min")] if strategy == "pareto" else None
        return EvolutionSearcher(
            space,
            population_size=cfg.population_size,
            generations=cfg.generations,
            top_k=cfg.top_k,
            mutation_prob=cfg.mutation_prob,
            crossover_fraction=cfg.crossover_fraction,
            constraint=constraint,
            seed=cfg.seed,
            max_retries=cfg.max_retries,
            max_evaluations=cfg.budget,
            metric=cfg.metric,
            objectives=objectives,
        )
    if strategy == "random":
        return RandomSearcher(
            space,
            max_evaluations=cfg.budget,
            constraint=constraint,
            seed=cfg.seed,
            max_retries=cfg.max_retries,
            batch_size=cfg.population_size,
            metric=cfg.metric,
        )
    raise ValueError(f"unknown search strategy {strategy!r}; valid: {list(STRATEGIES)}")


def mark_pareto_front(df: pd.DataFrame, metric: str, cost: str = PARETO_COST) -> pd.DataFrame:
    """``pareto_front``: the candidates no other candidate of the table beats on ``metric`` at no more
    ``cost`` (every strategy's table gets it; the "pareto" strategy selects parents by it)."""
    values = zip(pd.to_numeric(df[metric], errors="coerce"), pd.to_numeric(df[cost], errors="coerce"))
    points = [oriented([float(m), float(c)], ["max", "min"]) for m, c in values]
    return df.assign(pareto_front=pareto_mask(points))


def supernet_variant(opanas) -> dict[str, Any]:
    """How the scoring super-net was trained (Table 5's switches), for the result tables."""
    return {
        "supernet_sampling": opanas.sampling,
        "supernet_gamma": opanas.gamma,
        "supernet_train_paths": opanas.train_paths,
    }


def search_opanas(
    checkpoint_dir: str | Path,
    cfg: OPANASSearchConfig,
    resume: bool = False,
    verbose: int = 0,
    address: str | None = None,
) -> dict[str, Any]:
    """Run each strategy of ``cfg`` against one scorer pool; write tables, best archs and plots.

    Returns ``{"tables": {strategy: DataFrame}, "summary": DataFrame, "run_dir": Path}``.
    ``resume=True`` continues interrupted strategies from their Tune directories. ``address``: the cluster
    to attach to when Ray is not running yet (:func:`~raynas.training.cluster.ensure_ray`).
    """
    from raynas.training.cluster import ensure_ray

    check_writable_folder(cfg.storage_path)
    # everything that can be refused comes before the search folder is claimed (its run_info.json)
    state = load_state(checkpoint_dir)  # once: the pool and the cost constraints share it
    supernet_config(state, checkpoint_dir)
    ensure_ray(address)
    check_scorer_resources(
        cfg.num_scorers, cfg.cpus_per_scorer, cfg.use_gpu, reserve_cpus=cfg.num_scorers * TRIAL_CPUS
    )
    run_dir = Path(cfg.storage_path).resolve() / cfg.name
    # one job per search folder, claimed before its run_info.json is read or written
    with claim_folder(run_dir, "search folder"):
        finished = guard_search_folder(run_dir, cfg, str(Path(checkpoint_dir).resolve()), resume)
        return _search(checkpoint_dir, state, cfg, run_dir, finished, resume, verbose)


def _search(
    checkpoint_dir: str | Path,
    state: dict[str, Any],
    cfg: OPANASSearchConfig,
    run_dir: Path,
    finished: dict[str, tuple[pd.DataFrame, dict[str, Any]]],
    resume: bool,
    verbose: int,
) -> dict[str, Any]:
    """:func:`search_opanas` once this job holds its search folder; ``finished``: the checked tables and
    summaries of the strategies that finished earlier (:func:`guard_search_folder`)."""
    from raynas.viz import draw_opanas_arch, plot_pareto, plot_search_curves

    pool = ScorerPool(
        checkpoint_dir,
        state=state,
        num_actors=cfg.num_scorers,
        max_images=cfg.max_search_images,
        batch_size=cfg.batch_size,
        use_gpu=cfg.use_gpu,
        cpus_per_actor=cfg.cpus_per_scorer,
        cache_features=cfg.cache_features,
        cache_bytes=int(cfg.cache_gib * 1024**3),
    )
    space = OPANASSpace(num_nodes=pool.config.opanas.num_nodes)
    constraint = neck_constraint(checkpoint_dir, cfg, state)
    del state  # the pool holds the weights in the object store; the driver's copy can go
    tables, rows = {}, []
    try:
        for strategy in cfg.strategies:
            experiment = run_dir / strategy
            if strategy in finished:  # finished earlier: its table is the result
                tables[strategy], summary = finished[strategy]
                rows.append(summary)
                print(f"[raynas] {strategy} search already finished in {experiment}; not run again")
                continue
            started = time.perf_counter()
            searcher = make_searcher(strategy, space, cfg, constraint)
            if resume and (experiment / "tuner.pkl").is_file():
                grid = resume_search(experiment, pool.handles, metric=cfg.metric)
            else:
                grid = run_search(
                    searcher,
                    pool.handles,
                    strategy,
                    run_dir,
                    cfg.num_scorers,
                    metric=cfg.metric,
                    verbose=verbose,
                    candidates_per_trial=cfg.trial_size,
                )
            table = results_table(grid, strategy)
            budget = getattr(searcher, "total_evaluations", cfg.budget)
            check_finished(evaluations_ended(grid, table), strategy, budget, experiment)
            df = mark_pareto_front(table, cfg.metric)
            summary = {
                "strategy": strategy,
                **supernet_variant(pool.config.opanas),
                **summarize(df, time.perf_counter() - started, cfg.metric),
            }
            best = df.loc[df[cfg.metric].astype(float).fillna(-1).idxmax()]
            arch = space.from_config(best.to_dict())
            write_results(experiment, df, arch_to_json(space, arch), summary)
            draw_opanas_arch(
                arch, experiment / "best_arch.png", f"best {strategy}: {cfg.metric} {best[cfg.metric]:.3f}"
            )
            tables[strategy], rows = df, rows + [summary]
    finally:
        pool.shutdown()
    summary_df = pd.DataFrame(rows)
    plot_search_curves(tables, run_dir / "search_curves.png", metric=cfg.metric)
    plot_pareto(tables, run_dir / "pareto.png", metric=cfg.metric, cost=PARETO_COST)
    atomic_write_json(run_dir / "comparison.json", rows)
    return {"tables": tables, "summary": summary_df, "run_dir": run_dir}
