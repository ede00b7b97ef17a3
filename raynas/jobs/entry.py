"""The one way an experiment script runs: flags parsed, everything checked before Ray starts (a bad flag or
a result folder of another recipe costs no Ray start and no trained epoch), one Ray session, and one error
path (:func:`raynas.errors.run_main`: a user error is one line and exit status 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from raynas.errors import run_main

Checked = TypeVar("Checked")


def run_experiment(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    check: Callable[[argparse.Namespace], Checked],
    run: Callable[[argparse.Namespace, Checked], Any],
    uses_ray: bool | Callable[[argparse.Namespace], bool] = True,
) -> int:
    """Parse ``argv`` with ``parser``, then ``check(args)`` (flags, files read back; no Ray), then
    ``run(args, checked)`` inside a Ray session on ``args.address`` where ``uses_ray`` (a bool, or what it
    says of the checked flags). Returns the exit status: ``run``'s integer result, else 0."""
    args = parser.parse_args(argv)

    def main() -> int:
        checked = check(args)
        if not (uses_ray(args) if callable(uses_ray) else uses_ray):
            result = run(args, checked)
        else:
            from raynas.training.cluster import ray_session

            with ray_session(getattr(args, "address", None)):
                result = run(args, checked)
        return result if isinstance(result, int) and not isinstance(result, bool) else 0

    return run_main(prog, main)
