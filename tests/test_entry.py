"""The one way an experiment script runs (raynas.jobs.entry): flags, checks before Ray, one error path."""

from __future__ import annotations

import argparse

import pytest

from raynas.config import ConfigError
from raynas.jobs.entry import run_experiment


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe")
    parser.add_argument("--count", type=int, default=1)
    return parser


def test_a_refused_check_is_one_line_exit_2_and_nothing_runs(capsys: pytest.CaptureFixture) -> None:
    from raynas.studies.flags import check_counts

    ran: list[int] = []

    def check(args: argparse.Namespace) -> int:
        check_counts(args, {"count": 1})  # raynas's own check: a user error, not a bug
        return args.count

    status = run_experiment("probe", _parser(), ["--count", "0"], check, lambda _, n: ran.append(n), False)
    assert status == 2 and ran == []
    err = capsys.readouterr().err
    assert err.startswith("probe: error: --count") and err.count("\n") == 1


def test_an_error_raised_outside_raynas_is_a_bug_and_keeps_its_traceback() -> None:
    def check(args: argparse.Namespace) -> None:
        raise ConfigError("from a test, not from raynas's code")

    with pytest.raises(ConfigError):
        run_experiment("probe", _parser(), [], check, lambda *_: None, False)


def test_run_gets_what_check_returned_and_its_status_is_the_exit_status() -> None:
    seen: list[tuple[int, int]] = []

    def run(args: argparse.Namespace, checked: int) -> int | None:
        seen.append((args.count, checked))
        return 3 if checked > 10 else None

    assert run_experiment("probe", _parser(), ["--count", "4"], lambda a: a.count * 2, run, False) == 0
    assert run_experiment("probe", _parser(), ["--count", "6"], lambda a: a.count * 2, run, False) == 3
    assert seen == [(4, 8), (6, 12)]


def test_ray_starts_only_where_the_checked_flags_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    import raynas.training.cluster as cluster

    sessions: list[str | None] = []

    @contextlib.contextmanager
    def session(address: str | None = None):
        sessions.append(address)
        yield

    monkeypatch.setattr(cluster, "ray_session", session)
    parser = _parser()
    parser.add_argument("--address", default=None)
    parser.add_argument("--run", action="store_true")
    for argv in (["--run", "--address", "auto"], []):
        run_experiment("probe", parser, argv, lambda a: None, lambda a, _: None, lambda a: a.run)
    assert sessions == ["auto"]
