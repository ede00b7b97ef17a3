"""Several candidates per Tune trial, one result row each: :class:`CandidateBatches`.

Why: a candidate is scored in one or two seconds by a scorer actor, the same order as the time Ray takes
to start a trial process. With one candidate per trial, Tune stages the next trial with a new process
while the previous one is still scoring; when the previous one finishes first, Tune hands its cached
process to the staged trial and kills the half-started one. Once in that rhythm a search runs one
trial at a time (half the scorer actors idle) and starts and kills a process per candidate
(``benchmarks/scoring.py``'s ``[tune]`` part measured both). A trial that scores a batch lasts several
candidates, longer than a process start, so every scorer actor keeps its trial process, and Tune's
per-trial bookkeeping is paid once per batch.

The wrapper asks the inner searcher (any raynas searcher, unchanged) for up to ``candidates_per_trial``
suggestions under ids ``<trial id>_<position>`` and hands Tune one config ``{"candidates": [...]}``. The
trial (:func:`raynas.search.run.score_trial`) reports each candidate as it is scored, with its position
(``candidate``) and its architecture columns, so the inner searcher sees each result at once
(``on_trial_result``) and the result table keeps one row per candidate. An evolutionary searcher that has
no more suggestions before its generation is scored (``None``) ends the batch early: batches never wait.
"""

from __future__ import annotations

import logging

from ray.tune.search import Searcher

logger = logging.getLogger(__name__)

#: the trial config key holding the batch, and the result key naming a candidate's position in it
CANDIDATES, CANDIDATE = "candidates", "candidate"


class CandidateBatches(Searcher):
    """Wrap ``searcher`` so that each Tune trial scores up to ``candidates_per_trial`` of its suggestions.

    Checkpoints: a wrapper to Tune like ``ConcurrencyLimiter`` (it has ``.searcher``): a ``Tuner`` saves
    :meth:`get_state` and the inner searcher's own file, so ``Tuner.restore`` resumes both; a resumed
    trial that reports a candidate again does not count it twice.
    """

    def __init__(self, searcher: Searcher, candidates_per_trial: int):
        if candidates_per_trial < 1:
            raise ValueError(f"candidates_per_trial must be >= 1, got {candidates_per_trial}")
        self.searcher = searcher
        self.candidates_per_trial = candidates_per_trial
        self._inner_ids: dict[str, list[str]] = {}  # trial id -> inner ids, by position
        self._reported: set[str] = set()  # inner ids whose result reached the inner searcher
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    @property
    def metric(self) -> str:
        return self.searcher.metric

    @property
    def mode(self) -> str:
        return self.searcher.mode

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | str | None:
        configs, inner_ids = [], []
        for position in range(self.candidates_per_trial):
            inner_id = f"{trial_id}_{position}"
            config = self.searcher.suggest(inner_id)
            if config is None or config == Searcher.FINISHED:
                if not configs:
                    return config
                break
            configs.append(config)
            inner_ids.append(inner_id)
        self._inner_ids[trial_id] = inner_ids
        return {CANDIDATES: configs}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._complete(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not error and result:
            self._complete(trial_id, result)
        inner_ids = self._inner_ids.pop(trial_id, None)
        if inner_ids is None:
            logger.warning("CandidateBatches: completion of unknown trial %s ignored", trial_id)
            return
        for inner_id in inner_ids:  # candidates the trial never reported (it failed): scored worst
            if inner_id not in self._reported:
                self.searcher.on_trial_complete(inner_id, None, error=True)
            self._reported.discard(inner_id)

    def _complete(self, trial_id: str, result: dict) -> None:
        inner_ids = self._inner_ids.get(trial_id)
        position = result.get(CANDIDATE)
        if inner_ids is None or not isinstance(position, int) or not 0 <= position < len(inner_ids):
            return
        inner_id = inner_ids[position]
        if inner_id not in self._reported:
            self._reported.add(inner_id)
            self.searcher.on_trial_complete(inner_id, result)

    def get_state(self) -> dict:
        """The wrapper's own state; Tune's ``SearchGenerator`` saves the inner searcher separately."""
        return {
            "candidates_per_trial": self.candidates_per_trial,
            "inner_ids": {trial: list(ids) for trial, ids in self._inner_ids.items()},
            "reported": sorted(self._reported),
        }

    def set_state(self, state: dict) -> None:
        self.candidates_per_trial = state["candidates_per_trial"]
        self._inner_ids = {trial: list(ids) for trial, ids in state["inner_ids"].items()}
        self._reported = set(state["reported"])

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
