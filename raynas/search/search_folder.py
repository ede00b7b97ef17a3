"""A search's folder is the search: never silently reused or thrown away. What a search reads back from it
(its record, the tables of finished strategies, Tune's state of unfinished ones) is checked before it
starts anything, and a search stopped half-way is not published as finished."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, read_job_record, run_info, same_place
from raynas.search.opanas_config import PARETO_COST, STRATEGIES, OPANASSearchConfig
from raynas.search.run import check_tune_state


def check_finished(done: int, strategy: str, budget: int, experiment: Path) -> None:
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
