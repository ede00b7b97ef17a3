"""One progress line per generation of a search (raynas.search.progress.SearchProgress)."""

from __future__ import annotations

from types import SimpleNamespace

from raynas.search.progress import SearchProgress


def _feed(progress: SearchProgress, values: list) -> list[str]:
    lines: list[str] = []
    progress.printer = lambda line, flush=False: lines.append(line)
    for value in values:
        progress.on_trial_start(0, [], None)
        progress.on_trial_result(0, [], None, {} if value is None else {progress.metric: value})
    return lines


def test_one_line_per_generation_with_the_best_so_far_and_the_time_left() -> None:
    evolution = SimpleNamespace(population_size=4, total_evaluations=12)
    progress = SearchProgress("evolution", evolution)
    lines = _feed(progress, [0.1, 0.3, None, 0.2, 0.25, 0.05, 0.31, 0.0, 0.1, 0.1, 0.1, 0.1])
    assert len(lines) == 3  # 12 evaluations in generations of 4
    assert lines[0].startswith("[raynas] evolution: 4/12 evaluated, best AP 30.0 %") and "left" in lines[0]
    assert "8/12 evaluated, best AP 31.0 %" in lines[1]
    assert "12/12 evaluated" in lines[2] and "left" not in lines[2]


def test_batch_size_or_a_default_sets_the_line_rate_and_min_mode_tracks_the_lowest() -> None:
    random_search = SimpleNamespace(batch_size=2, max_evaluations=None)
    assert len(_feed(SearchProgress("random", random_search), [0.1] * 5)) == 2
    plain = SearchProgress("optuna", object(), metric="neck_flops", mode="min", total=20)
    lines = _feed(plain, [None] * 9 + [5.0])
    assert plain.best == 5.0 and lines == [lines[0]] and "10/20 evaluated, best neck_flops 5," in lines[0]
