"""The one error path of every entry point: a user's mistake is one line on stderr and exit status 2.

``raynas ...``, ``experiments/*.py`` and the benchmark scripts run their ``main`` through
:func:`run_main`. A user error (a bad config value, a missing or unreadable file, an invalid architecture,
an unreachable cluster: a ``ValueError`` / ``RuntimeError`` raised by raynas's own code, such as
``ConfigError`` and ``DatasetError``, or any ``OSError``) prints ``<prog>: error: <what is wrong, where;
what to do>`` and returns 2. Errors raised inside Ray (a Train worker, a Tune trial, an actor) arrive
wrapped in Ray's own exceptions; they are unwrapped to the worker's error first, so the user reads
raynas's message, not Ray's wrapper; a user error found inside a Train worker at run time travels as
:class:`WorkerUserError`, whose tracebacks Ray's logs leave out. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, RuntimeError, OSError)


class WorkerUserError(RuntimeError):
    """A user's mistake found inside a Ray worker at run time (a NaN loss, data only the workers see),
    carried to the driver as its one-line message. Raised in place of the original error, so that the
    worker's and Ray Train's logs of it can be recognised and muted (``raynas.training.ray_hooks``): the
    user reads the driver's one line, not Ray's tracebacks. ``kind``: the original error's class name."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message, kind)
        self.message, self.kind = message, kind

    def __str__(self) -> str:
        return self.message


def unwrap(err: BaseException) -> BaseException:
    """The innermost error behind Ray's wrappers (Train's ``WorkerGroupError`` / ``ControllerError``,
    ``RayTaskError``, ``RayActorError``, Tune's ``TuneError``)."""
    for _ in range(16):
        failures = getattr(err, "worker_failures", None)
        if isinstance(failures, dict) and failures:
            err = failures[min(failures)]
            continue
        inner = getattr(err, "controller_failure", None) or getattr(err, "cause", None)
        if isinstance(inner, BaseException) and inner is not err:
            err = inner
            continue
        if type(err).__module__.startswith("ray.") and isinstance(err.__cause__, BaseException):
            err = err.__cause__
            continue
        break
    return err


_PACKAGE = Path(__file__).resolve().parent
#: raynas's own code: the package, and the experiment and benchmark scripts of its checkout
_OUR_CODE = (_PACKAGE, _PACKAGE.parent / "experiments", _PACKAGE.parent / "benchmarks")


def _raised_here(err: BaseException) -> bool:
    """Whether the error was raised by raynas's own code (its last frame), or lost its traceback on the way
    back from a Ray worker. A ``ValueError`` from deep inside torch is a bug, not a user's mistake."""
    tb = err.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(filename.is_relative_to(root) for root in _OUR_CODE)


def user_message(err: BaseException) -> str | None:
    """The one-line message of a user error, or ``None`` for a bug (which should keep its traceback)."""
    inner = unwrap(err)
    if not isinstance(inner, USER_ERRORS) or type(inner).__module__.startswith("ray."):
        return None
    if not isinstance(inner, OSError) and not _raised_here(inner):
        return None
    return " ".join(str(inner).split()) or type(inner).__name__


def run_main(prog: str, main: Callable[[], int | None]) -> int:
    """Run an entry point's ``main``; a user error becomes one line and exit status 2."""
    try:
        return main() or 0
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; finished runs are kept, re-run the same command to continue",
            file=sys.stderr,
        )
        return 130
    except Exception as err:  # noqa: BLE001 (a bug is re-raised below, with its traceback)
        message = user_message(err)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
