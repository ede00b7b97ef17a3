"""Run an architecture search as a Ray Tune experiment and keep its results.

The searcher suggests architectures (their ``to_config`` dicts plus lineage columns); a Tune trial
borrows a scorer actor and scores one of them, or a batch of ``candidates_per_trial`` of them
(:class:`~raynas.search.batches.CandidateBatches`, which says why), reporting each candidate as one
result; :func:`results_table` has one row per candidate either way. The trial itself needs almost no CPU
(the actor does the work), so concurrency is set by ``max_concurrent_trials`` = number of scorer actors.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pickletools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.search.batches import CANDIDATE, CANDIDATES, CandidateBatches
from raynas.search.handles import ScorerHandles
from raynas.search.progress import SearchProgress
from raynas.search.searcher import worst_value
from raynas.training.ray_hooks import tune_stops_on_signals

ARCH_PREFIX = "config/"
#: a trial only waits on a scorer actor; Tune needs a non-empty request, so it asks for a sliver
TRIAL_CPUS = 0.05
#: seconds between snapshots of the experiment (trial states + searcher state) to the storage path. The
#: snapshot is all ``--resume`` has after the driver dies without a goodbye (SIGKILL, OOM, a lost node):
#: Tune's default ("auto", >= 10 s) drops every evaluation of the last 10 s or more. The trial states of
#: a 650-candidate search are ~12 MB of JSON, ~0.05 s to write; the copy to storage runs in a thread.
EXPERIMENT_CHECKPOINT_S = 2.0


def score_trial(
    config: dict[str, Any], scorers: ScorerHandles, metric: str = "AP", mode: str = "max"
) -> None:
    """Tune function trainable: score one architecture, or each of a batch (``config["candidates"]``),
    and report each one's metrics once; a batch's results carry the candidate's position and its config.

    An invalid architecture (e.g. from an off-the-shelf searcher) is reported with the search's ``metric``
    at :func:`~raynas.search.searcher.worst_value` of its ``mode``, as ``ConstrainedSearcher`` reports one.
    """
    if CANDIDATES not in config:
        tune.report(_scored(config, scorers, metric, mode))
        return
    for position, candidate in enumerate(config[CANDIDATES]):
        tune.report({**candidate, **_scored(candidate, scorers, metric, mode), CANDIDATE: position})


def _scored(config: dict[str, Any], scorers: ScorerHandles, metric: str, mode: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        metrics = {**scorers.score(config), "valid": True}
    except ValueError as err:
        metrics = {metric: worst_value(mode), "valid": False, "invalid_reason": str(err)[:200]}
    return {**metrics, "score_time_s": time.perf_counter() - started}


def run_search(
    searcher: Any,
    scorers: ScorerHandles,
    name: str,
    storage_path: str | Path,
    max_concurrent: int,
    metric: str = "AP",
    verbose: int = 0,
    param_space: dict[str, Any] | None = None,
    num_samples: int = -1,
    mode: str = "max",
    candidates_per_trial: int = 1,
) -> tune.ResultGrid:
    """Run ``searcher`` and return Tune's ``ResultGrid``; ``candidates_per_trial`` > 1 scores that many
    suggestions per trial (:class:`~raynas.search.batches.CandidateBatches`).

    Progress is one line per generation (:class:`~raynas.search.progress.SearchProgress`); ``verbose=1``
    adds Tune's own per-trial status tables, ``2`` its per-result lines.

    raynas' searchers end the search themselves (``num_samples=-1``: until they say FINISHED). Tune's
    own searchers (Optuna, HyperOpt, wrapped in ``ConstrainedSearcher``) need ``param_space``
    (``tune_param_space(space)``) and a budget, ``num_samples``.
    """
    progress = SearchProgress(name, searcher, metric, mode, total=num_samples if num_samples > 0 else None)
    if candidates_per_trial > 1:
        searcher = CandidateBatches(searcher, candidates_per_trial)
    tuner = tune.Tuner(
        _trainable(scorers, metric, mode),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            metric=metric,
            mode=mode,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,  # a trial process per candidate would cost seconds of imports each
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            verbose=verbose,
            callbacks=[progress],
        ),
    )
    with (
        frequent_experiment_checkpoints(),
        tune_output(verbose),
        tune_stops_on_signals(Path(storage_path) / name),
    ):
        return tuner.fit()


def resume_search(
    path: str | Path, scorers: ScorerHandles, metric: str = "AP", mode: str = "max"
) -> tune.ResultGrid:
    """Continue an interrupted search from its Tune directory (the searcher state included); ``metric``
    and ``mode`` are the ones the search was started with."""
    path = Path(path)
    if not tune.Tuner.can_restore(str(path.resolve())):
        raise FileNotFoundError(
            f"{str(path)!r} is not a Tune experiment directory that can be resumed; pass the folder "
            "a search run created under its storage path (it holds tuner.pkl)"
        )
    tuner = tune.Tuner.restore(
        str(path.resolve()), trainable=_trainable(scorers, metric, mode), resume_errored=True
    )
    with frequent_experiment_checkpoints(), tune_output(0), tune_stops_on_signals(path):
        return tuner.fit()


#: what ``Tuner.restore`` continues a search from, and how Tune writes it (``search_gen_state-*.json`` is
#: a pickle too); the newest of each kind counts, as for Tune
TUNE_STATE = {
    "tuner.pkl": "pickle",
    "experiment_state-*.json": "json",
    "search_gen_state-*.json": "pickle",
    "searcher-state-*.pkl": "pickle",
}


def check_tune_state(path: str | Path) -> None:
    """Check, before resuming, the files Tune continues a search from (:data:`TUNE_STATE`): each is there
    and reads. Tune writes them all at each snapshot of a search with a searcher (raynas's always has).

    Tune takes a damaged experiment or searcher state for "nothing to resume" and starts the experiment
    over beside the old trials, and the search never reaches its budget; a damaged ``tuner.pkl`` fails
    with a pickle traceback. Pickles are walked, not loaded (nothing of them runs here).
    """
    path = Path(path)
    fix = f"restore it, or delete {path} to run that search again from its start"
    newest = {pattern: max(path.glob(pattern), default=None) for pattern in TUNE_STATE}
    if not any(newest[pattern] for pattern in list(TUNE_STATE)[1:]):
        newest = {"tuner.pkl": newest["tuner.pkl"]}  # stopped before its first snapshot: Tune starts over
    for pattern, file in newest.items():
        if file is None:  # Tune would start over without it (no searcher state: with a fresh searcher)
            raise ConfigError(f"{path / pattern} is missing, and Tune cannot continue the search; {fix}")
        try:
            data = file.read_bytes()
            if TUNE_STATE[pattern] == "pickle":
                collections.deque(pickletools.genops(data), maxlen=0)  # walk it whole, load nothing
            elif not isinstance(json.loads(data), dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            raise ConfigError(f"{file} is damaged ({' '.join(str(err).split())}); {fix}") from err


@contextlib.contextmanager
def frequent_experiment_checkpoints(period_s: float = EXPERIMENT_CHECKPOINT_S) -> Iterator[None]:
    """Snapshot the experiment every ``period_s`` during ``Tuner.fit`` (a value the user set wins).

    Ray 2.60 takes the period from ``TUNE_GLOBAL_CHECKPOINT_S`` only (``TuneController.__init__``, which
    ``fit`` runs on the driver, except under Ray Client; ``tune.run`` passes no ``checkpoint_period``).
    ``SyncConfig.sync_period`` does not help: the staged driver files (experiment state, searcher state,
    trial results) are copied to ``storage_path`` at each snapshot, local paths included, and
    ``sync_period`` only paces trial artifacts (``sync_artifacts``). Set for this call, not process-wide.
    """
    key = "TUNE_GLOBAL_CHECKPOINT_S"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(period_s)
    try:
        yield
    finally:
        os.environ.pop(key, None)


@contextlib.contextmanager
def tune_output(verbose: int) -> Iterator[None]:
    """Tune's own console output only where asked for (``verbose`` > 0; a value the user set wins).

    Ray 2.60's default output engine prints a boxed "Configuration for experiment" banner ("Number of
    trials 9223372036854775807" for a searcher that ends the search itself) and a hint to run TensorBoard
    on a folder inside Ray's session directory even at ``verbose=0``
    (``AirProgressReporter.experiment_started``); raynas prints its own progress lines
    (:class:`~raynas.search.progress.SearchProgress`) and where the results are. The legacy engine
    (``RAY_AIR_NEW_OUTPUT=0``) honours ``verbose=0``. Set for this call, not process-wide.
    """
    key = "RAY_AIR_NEW_OUTPUT"
    if verbose > 0 or key in os.environ:
        yield
        return
    os.environ[key] = "0"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _trainable(scorers: ScorerHandles, metric: str, mode: str):
    trainable = tune.with_parameters(score_trial, scorers=scorers, metric=metric, mode=mode)
    return tune.with_resources(trainable, {"cpu": TRIAL_CPUS})


def results_table(grid: tune.ResultGrid, strategy: str) -> pd.DataFrame:
    """One row per evaluated candidate: architecture columns, metrics, lineage, strategy."""
    df = grid.get_dataframe()
    if df.empty:
        return df
    if ARCH_PREFIX + CANDIDATES in df.columns:
        df = _batch_rows(grid)
    df = df.rename(columns={c: c[len(ARCH_PREFIX) :] for c in df.columns if c.startswith(ARCH_PREFIX)})
    df["strategy"] = strategy
    order = "timestamp" if "timestamp" in df.columns else df.columns[0]
    df = df.sort_values(order, kind="stable").reset_index(drop=True)
    df["evaluation"] = range(1, len(df) + 1)
    return df


def evaluations_ended(grid: tune.ResultGrid, table: pd.DataFrame) -> int:
    """Candidates whose evaluation ended: one per row of ``table`` (:func:`results_table`), plus those a
    failed trial never reported (they count as scored worst). Fewer than the budget: interrupted."""
    rows = table["trial_id"].value_counts().to_dict() if "trial_id" in table.columns else {}
    ended = len(table)
    for result in grid:
        if result.error is not None:
            size = len(result.config.get(CANDIDATES, [result.config]))
            ended += max(0, size - rows.get(result.metrics.get("trial_id"), 0))
    return ended


def _batch_rows(grid: tune.ResultGrid) -> pd.DataFrame:
    """Every candidate's result of a batched search, read from each trial's ``result.json`` (all of a
    trial's reports; a trial resumed after an interruption may report a candidate again: the last wins)."""
    rows = []
    for result in grid:
        path = Path(result.path) / "result.json"
        if path.is_file():
            try:
                lines = path.read_text().splitlines()
                rows += [_without_config(json.loads(line)) for line in lines if line.strip()]
            except ValueError as err:
                raise ConfigError(
                    f"{path} is damaged ({' '.join(str(err).split())}): restore it, or delete "
                    f"{path.parent.parent} to run that search again"
                ) from err
    df = pd.DataFrame([row for row in rows if CANDIDATE in row])
    if df.empty:
        return df
    df = df.drop_duplicates(subset=["trial_id", CANDIDATE], keep="last")
    return df.astype({"parents": str}) if "parents" in df.columns else df


def _without_config(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("config", None)
    return row


def summarize(df: pd.DataFrame, wall_time_s: float, metric: str = "AP") -> dict[str, Any]:
    """Best metric, mean of the top 5, mean of all, number of evaluations, wall time (one strategy)."""
    values = df[metric].astype(float).fillna(0.0)
    return {
        "best_" + metric: float(values.max()) if len(values) else float("nan"),
        "top5_mean_" + metric: float(values.nlargest(5).mean()) if len(values) else float("nan"),
        # for random search: the expected score of a random sub-net (the main job's ratio to standalone)
        "mean_" + metric: float(df[metric].astype(float).mean()) if len(values) else float("nan"),
        "evaluations": len(df),
        "wall_time_s": round(wall_time_s, 1),
    }


def write_results(run_dir: Path, df: pd.DataFrame, best_arch_json: str, summary: dict[str, Any]) -> None:
    """``results.csv``, ``best_arch.json`` and ``summary.json``, each written atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "results.csv", df.to_csv(index=False))
    atomic_write_text(run_dir / "best_arch.json", best_arch_json + "\n")
    atomic_write_json(run_dir / "summary.json", summary)
