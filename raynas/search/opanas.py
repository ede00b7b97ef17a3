"""OPANAS sub-net search (Sec. 3.2.2): one Tune experiment per strategy over the same scorers.

Evolution and random search get the same number of evaluations and the same scorer actors (so
the same super-net weights and validation images); their result tables are comparable row for row.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from raynas.checkpoints import config_from_state, load_state
from raynas.config import (
    ConfigError,
    check_local_storage,
    check_ranges,
    check_run_name,
    check_writable_folder,
)
from raynas.io import atomic_write_json, claim_folder, read_job_record, run_info, same_place
from raynas.models.build import build_model
from raynas.search.constraints import CostLimit
from raynas.search.evolution import EvolutionSearcher
from raynas.search.neck_cost import neck_cost, reference_features
from raynas.search.pareto import oriented, pareto_mask
from raynas.search.pool import ScorerPool, check_scorer_resources, supernet_config
from raynas.search.random import RandomSearcher
from raynas.search.run import (
    TRIAL_CPUS,
    check_tune_state,
    evaluations_ended,
    results_table,
    resume_search,
    run_search,
    summarize,
    write_results,
)
from raynas.spaces.base import arch_to_json
from raynas.spaces.opanas import PARAMETERISED_PATHS, OPANASSpace, active_edges

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


class NeckCost:
    """Params or FLOPs of the discrete OPA-FPN of an architecture (runs on the driver), as the result table
    counts them (:mod:`raynas.search.neck_cost`).

    Counted by parts, so that a tight limit (the FPN's FLOPs refuse ~99 % of random candidates) costs the
    driver microseconds per candidate, not a network built and run: a discrete neck is a fixed part
    (laterals, extra blocks) plus one module per live edge with a parameterised path, whose parameters and
    FLOPs are the same on every edge (every node holds a pyramid of the input's shapes). The fixed part and
    each path are counted once, with :func:`neck_cost` on one-edge networks."""

    def __init__(
        self, checkpoint_dir: str | Path, what: Literal["params", "flops"], state: dict | None = None
    ):
        state = state if state is not None else load_state(checkpoint_dir)  # a search loads it once
        cfg = config_from_state(state)
        model = build_model(cfg.model, state["num_classes"], cfg.neck, cfg.head).eval()
        self.supernet = model.backbone.neck
        self.features = reference_features(model, cfg.model.min_size)
        self.what = what
        self._parts: tuple[int, dict[str, int]] | None = None  # counted on the first call

    def __call__(self, arch) -> int:
        fixed, per_path = self._counted_parts()
        return fixed + sum(per_path[name] for _, _, _, name in active_edges(arch) if name in per_path)

    def _counted_parts(self) -> tuple[int, dict[str, int]]:
        if self._parts is None:
            space, index = self.supernet.space, 0 if self.what == "params" else 1

            def one_edge(path: str) -> int:
                return neck_cost(self.supernet, space.from_edges({(0, 1): path}), self.features)[index]

            fixed = one_edge("skip")
            self._parts = fixed, {path: one_edge(path) - fixed for path in PARAMETERISED_PATHS}
        return self._parts


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


def _constraint(checkpoint_dir, cfg: OPANASSearchConfig, state: dict | None = None):
    limits = []
    if cfg.max_neck_params is not None:
        limits.append(CostLimit(NeckCost(checkpoint_dir, "params", state), cfg.max_neck_params))
    if cfg.max_neck_flops is not None:
        limits.append(CostLimit(NeckCost(checkpoint_dir, "flops", state), cfg.max_neck_flops))
    if not limits:
        return None
    return limits[0] if len(limits) == 1 else _AllOf(tuple(limits))


@dataclass(frozen=True)
class _AllOf:
    limits: tuple

    def __call__(self, arch) -> bool:
        return all(limit(arch) for limit in self.limits)


def _check_finished(done: int, strategy: str, budget: int, experiment: Path) -> None:
    """Tune returns normally when Ctrl+C (SIGINT, or SIGUSR1) stops a run; stop the job there too,
    rather than publishing a truncated search as a finished one and starting the next strategy."""
    if done < budget:
        raise RuntimeError(
            f"the {strategy} search was interrupted after {done} of {budget} evaluations; its state is "
            f"saved in {str(experiment)!r}: run it again with resume=True (--resume) to finish it"
        )


#: settings that change how a search runs, not what it finds (may differ when a search is resumed;
#: max_retries too: a resumed search keeps its pickled searcher, and a folder written before it has none)
_RUNTIME_KEYS = {
    "num_scorers", "cpus_per_scorer", "use_gpu", "batch_size", "cache_features", "cache_gib",
    "storage_path", "name", "max_retries",
}  # fmt: skip


def guard_search_folder(
    run_dir: Path, cfg: OPANASSearchConfig, checkpoint_dir: str, resume: bool
) -> dict[str, tuple[pd.DataFrame, dict[str, Any]]]:
    """Never silently reuse or throw away a search: a folder of another search (other settings or another
    super-net) is refused, an unfinished strategy is continued only with ``resume`` and otherwise
    refused with the command that continues it. What the search reads back is checked here, before it
    starts anything: its record, the tables of the strategies that finished (returned by strategy) and
    the Tune state of those it continues. Writes ``run_info.json`` on the first start.

    The folder is the search: where it lies is no difference, and the super-net checkpoint matches by
    :func:`~raynas.io.same_place` (a symlink, another spelling, or a folder moved along with it)."""
    info_path = run_dir / "run_info.json"
    info = run_info(cfg, supernet_checkpoint=checkpoint_dir, run_dir=str(run_dir))
    new = json.loads(json.dumps(info, default=str))
    if info_path.is_file():
        old = read_search_info(info_path)
        changed = sorted(
            key
            for key in set(old["config"]) | set(new["config"])
            if key not in _RUNTIME_KEYS and old["config"].get(key) != new["config"].get(key)
        )
        if not same_place(old.get("supernet_checkpoint"), checkpoint_dir, old.get("run_dir"), run_dir):
            changed.append("supernet checkpoint")
        if changed:
            raise ConfigError(
                f"{run_dir} holds a search with other settings ({changed[:8]}); give this search a new "
                "--out (or name), or delete that folder"
            )
    elif any((run_dir / s / f).is_file() for s in STRATEGIES for f in ("tuner.pkl", "summary.json")):
        raise ConfigError(
            f"{run_dir} holds a search but no run_info.json, the record of its settings; restore it, or "
            f"delete {run_dir} to search again"
        )
    finished = {}
    for strategy in cfg.strategies:
        experiment = run_dir / strategy
        if (experiment / "summary.json").is_file():
            finished[strategy] = read_finished(experiment, strategy, cfg.metric)
        elif (experiment / "tuner.pkl").is_file():
            if not resume:
                raise ConfigError(
                    f"{experiment} holds an unfinished {strategy} search; run the same command with --resume "
                    "to finish it (its finished evaluations are kept), or give a new --out"
                )
            check_tune_state(experiment)
    if not info_path.is_file():
        atomic_write_json(info_path, new)
    return finished


def read_search_info(path: Path) -> dict[str, Any]:
    """A search folder's ``run_info.json``; a damaged one is an error naming it (read as "no record", it
    would let a search of other settings continue this one)."""
    return read_job_record(
        path,
        f"the settings of the search in {path.parent}",
        f"restore it, or delete {path.parent} to search again",
    )


def read_finished(experiment: Path, strategy: str, metric: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The table and summary of a strategy that finished earlier, checked: they become this run's result
    (and its plots), so a damaged or edited file is an error naming it, not a traceback or a wrong
    comparison."""
    fix = f"restore it, or delete {experiment} to run the {strategy} search again"
    path = experiment / "summary.json"
    try:
        summary = json.loads(path.read_text())
        ours = isinstance(summary, dict) and summary.get("strategy") == strategy
        problem = None if ours else f"not the summary of a {strategy} search"
    except (OSError, ValueError) as err:
        problem = " ".join(str(err).split())
    if problem is not None:
        raise ConfigError(f"{path} is damaged ({problem}); {fix}")
    path = experiment / "results.csv"
    try:
        table = pd.read_csv(path)  # pandas' parser errors are ValueErrors
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is damaged ({' '.join(str(err).split())}); {fix}") from err
    missing = [c for c in (metric, PARETO_COST, "evaluation", "pareto_front") if c not in table.columns]
    if missing:
        problem = f"no column {missing}"
    elif len(table) != summary.get("evaluations"):
        problem = f"{len(table)} rows, its summary counts {summary.get('evaluations')}"
    elif not all(pd.api.types.is_numeric_dtype(table[c]) for c in (metric, PARETO_COST)):
        problem = f"{metric} or {PARETO_COST} not numbers"
    if problem is not None:
        raise ConfigError(f"{path} is damaged ({problem}); {fix}")
    return table, summary


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
    constraint = _constraint(checkpoint_dir, cfg, state)
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
            _check_finished(evaluations_ended(grid, table), strategy, budget, experiment)
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
