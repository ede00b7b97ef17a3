"""One progress line per generation of a search, in place of Tune's per-trial tables.

Tune's default reporter prints a boxed table per trial result: hundreds of lines for an 80-candidate
search and nothing that says how far along it is. :class:`SearchProgress` is a Tune ``Callback`` that prints
one line each time a generation's worth of candidates (the searcher's population, or batch) has been
scored: evaluations done of the budget, the best metric so far, seconds per evaluation and the time left.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from ray import tune

DEFAULT_EVERY = 10  # evaluations per line when the searcher has no generation size


class SearchProgress(tune.Callback):
    """Prints ``[raynas] <name>: 40/80 evaluated, best AP 31.2 %, 1.4 s each, about 56 s left``.

    ``every`` defaults to the searcher's generation size (``population_size``, else ``batch_size``);
    ``total`` to its budget (``total_evaluations``, else ``max_evaluations``). A result without the
    metric (an invalid candidate) counts as evaluated and does not change the best. ``printer`` (default:
    ``print``) receives each line.
    """

    def __init__(
        self,
        name: str,
        searcher: Any,
        metric: str = "AP",
        mode: str = "max",
        every: int | None = None,
        total: int | None = None,
        printer: Callable[..., None] | None = None,
    ) -> None:
        self.name, self.metric, self.mode, self.printer = name, metric, mode, printer
        generation = getattr(searcher, "population_size", None) or getattr(searcher, "batch_size", None)
        self.every = max(1, int(every or generation or DEFAULT_EVERY))
        budget = total or getattr(searcher, "total_evaluations", None)
        budget = budget or getattr(searcher, "max_evaluations", None)
        self.total = int(budget) if budget and budget > 0 else None
        self.done = 0
        self.best: float | None = None
        self._started: float | None = None

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        if self._started is None:
            self._started = time.perf_counter()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self.done += 1
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            self.best = float(value) if better else self.best
        if self.done % self.every == 0 or self.done == self.total:
            (self.printer or print)(self.line(), flush=True)  # print itself is looked up late: Tune
            # pickles this callback with the experiment, and a patched builtin print does not pickle

    def line(self) -> str:
        """The progress line as of now."""
        elapsed = time.perf_counter() - (self._started or time.perf_counter())
        per_eval = elapsed / self.done if self.done else float("nan")
        budget = f"/{self.total}" if self.total else ""
        if self.best is None:
            best = "-"
        else:  # AP-like metrics are fractions: shown in percent, as the tables do
            best = f"{100 * self.best:.1f} %" if "AP" in self.metric else f"{self.best:.4g}"
        left = ""
        if self.total and self.done < self.total and self.done:
            left = f", about {per_eval * (self.total - self.done):.0f} s left"
        return (
            f"[raynas] {self.name}: {self.done}{budget} evaluated, best {self.metric} {best}, "
            f"{per_eval:.1f} s each{left}"
        )
