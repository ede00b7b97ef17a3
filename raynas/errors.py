"""The one error path of every entry point: a user's mistake is one line on stderr and exit status 2.

``raynas ...``, ``experiments/*.py`` and the benchmark scripts run their ``main`` through
:func:`run_main`. A user error (a bad config value, a missing or unreadable file, an invalid architecture,
an unreachable cluster: a ``ValueError`` / ``RuntimeError`` raised by raynas's own code, such as
``ConfigError`` and ``DatasetError``, or any ``OSError``) prints ``<prog>: error: <what is wrong, where;
what to do>`` and returns 2. Errors raised inside Ray (a Train worker, a Tune trial, an actor) arrive
wrapped in Ray's own exceptions; they are unwrapped to the worker's error first, so the user reads
raynas's message, not Ray's wrapper; a user error found inside a Train worker at run time travels as
:class:`WorkerUserError`, whose tracebacks Ray's logs leave out. A full disk names the file it could not
write (:class:`DiskFullError`). Anything else is a bug and keeps its traceback.

Ctrl+C (SIGINT) and SIGTERM stop a job anywhere with one line, ``<prog>: interrupted; ...`` (or
``terminated``), and exit status 130 / 143 (128 + the signal's number, as a shell reports it); what
finished is kept. Both signals raise :class:`Interrupted`, which unwinds the job through its ``finally``
blocks (Ray shut down, folders released). Ray replaces these handlers in places (``ray.init`` for SIGTERM,
Ray Train's and Tune's ``fit`` for SIGINT); ``raynas.training.ray_hooks`` and :func:`reclaim_stop_signals`
put raynas's back, and the signal a job received is remembered, so that whatever Ray raises on its way
down still ends as an interrupt.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, RuntimeError, OSError)
#: the signals that stop a job like Ctrl+C, each with its line's word; the exit status is 128 + the number
STOP_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
#: what an interrupted job's line tells the user, unless the interrupt says better (``Interrupted.hint``)
CONTINUE_HINT = "finished runs are kept, re-run the same command to continue"
#: ``errno`` of a write that found no room: a full disk, or the user's quota on it
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser with the house rule for bad input: one line, ``<prog>: error: <message> (see <prog>
    --help)``, and exit status 2, where argparse prints its usage first (a dozen lines for the experiments'
    flags). Sub-commands inherit the class (``add_subparsers`` builds its parsers with the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


class DiskFullError(OSError):
    """No room to write ``path`` (a full disk or quota): one line that names it and the fix, where Python
    and torch name neither (``[Errno 28] No space left on device``, torch's ``unexpected pos``)."""

    def __init__(self, path: str | Path, detail: str = "") -> None:
        self.message = disk_full_message(path) + detail
        super().__init__(errno.ENOSPC, self.message, str(path))

    def __str__(self) -> str:
        return self.message


def disk_full_message(path: str | Path | None = None) -> str:
    where = f" to write {path}" if path is not None else ""
    return (
        f"no space left on the device{where} (the disk or your quota is full); free space there, or "
        "write elsewhere (another --out or storage_path)"
    )


def raise_disk_full(err: BaseException, path: str | Path) -> None:
    """Raise :class:`DiskFullError` for ``path`` from ``err`` when ``err``, or an error it was raised
    while handling, is a full disk; else return (and the caller re-raises ``err``). torch's zip writer
    meets the ``OSError`` of a full disk and raises its own ``RuntimeError`` (``unexpected pos``) on top."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None or isinstance(seen, DiskFullError):
            return
        if isinstance(seen, OSError) and seen.errno in DISK_FULL:
            raise DiskFullError(path) from err
        seen = seen.__cause__ or seen.__context__


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (unwrapped) is a full disk whose message names no file: Python's own error, or
    its one-line message carried from a Ray worker as a :class:`WorkerUserError`."""
    if isinstance(err, WorkerUserError):
        return err.message == disk_full_message()
    return isinstance(err, OSError) and err.errno in DISK_FULL and err.filename is None


class Interrupted(KeyboardInterrupt):
    """A job stopped by a signal of :data:`STOP_SIGNALS`. A ``KeyboardInterrupt``, so that Ray's
    ``ray.get`` re-raises it when it is raised in a signal handler (any other exception there is lost)
    and ``except Exception`` lets it through. ``hint``: what to do next, where the place that stopped
    knows better than :data:`CONTINUE_HINT` (a search continues with ``--resume``)."""

    def __init__(self, signum: int = signal.SIGINT, hint: str = "") -> None:
        super().__init__(signum, hint)
        self.signum, self.hint = signum, hint


_received: list[int] = []  # the stop signals this job received, latest last (see note_signal)
_handling = False  # set by run_main: raynas's handlers are wanted (a library's caller keeps its own)


def note_signal(signum: int) -> None:
    """Remember that the job received ``signum``: Ray may turn the interrupt into an error of its own
    (``ray.get`` raises a plain ``KeyboardInterrupt``; stopping workers fail), and :func:`run_main` still
    reports it as the interrupt it was."""
    _received.append(signum)


def stop_on_signal(signum: int, frame: object = None) -> None:
    """raynas's handler of :data:`STOP_SIGNALS`: note the signal and raise :class:`Interrupted`."""
    note_signal(signum)
    raise Interrupted(signum)


def reclaim_stop_signals() -> None:
    """Install :func:`stop_on_signal` again, inside :func:`run_main` only. ``ray.init`` replaces the
    SIGTERM handler with Ray's, which kills the local Ray under the running job and exits 1 with Ray's
    tracebacks: call this after it."""
    if _handling and threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, stop_on_signal)


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
    if isinstance(inner, OSError) and not isinstance(inner, DiskFullError) and inner.errno in DISK_FULL:
        return disk_full_message(inner.filename)
    return " ".join(str(inner).split()) or type(inner).__name__


#: Ray's errors for its own processes gone (``ray stop`` elsewhere, a lost node, a killed raylet): not a
#: bug of the job and not the user's input, so one line and exit status 1, not a traceback of Ray's internals
RAY_LOST = frozenset(
    {
        "ActorUnavailableError",
        "ActorDiedError",
        "LocalRayletDiedError",
        "NodeDiedError",
        "OwnerDiedError",
        "RaySystemError",
        "WorkerCrashedError",
    }
)


def ray_lost_message(err: BaseException) -> str | None:
    """The one line for a job whose Ray processes went away under it, or ``None`` for any other error."""
    for candidate in (err, unwrap(err)):
        kind = type(candidate)
        if kind.__module__.startswith("ray.") and kind.__name__ in RAY_LOST:
            what = " ".join(str(candidate).split())[:200]
            return (
                f"Ray's processes for this job went away ({kind.__name__}: {what}); was Ray stopped "
                f"(ray stop) or a node lost? {CONTINUE_HINT}"
            )
    return None


def run_main(prog: str, main: Callable[[], int | None]) -> int:
    """Run an entry point's ``main``; a user error becomes one line and exit status 2, a stop signal
    (:data:`STOP_SIGNALS`) one line and 128 + its number, Ray's processes gone (:data:`RAY_LOST`) one line
    and 1."""
    global _handling
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} if main_thread else {}
    _handling = True
    _received.clear()
    reclaim_stop_signals()
    try:
        return main() or 0
    except KeyboardInterrupt as err:
        return _interrupted(prog, err)
    except (Exception, SystemExit) as err:  # noqa: BLE001 (a bug is re-raised below, with its traceback)
        if _received:  # Ray's processes failing, or Ray's exit, on the way down after a stop signal
            return _interrupted(prog, err)
        if isinstance(err, SystemExit):
            raise
        message = user_message(err)
        if message is None:
            lost = ray_lost_message(err)
            if lost is None:
                raise
            print(f"{prog}: error: {lost}", file=sys.stderr)
            return 1
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    finally:
        _handling = False
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signum, handler)


def _interrupted(prog: str, err: BaseException) -> int:
    """The one line and the exit status of a job stopped by a signal (Ctrl+C where none was noted)."""
    signum = _received[-1] if _received else getattr(err, "signum", signal.SIGINT)
    hint = getattr(err, "hint", "") or CONTINUE_HINT
    print(f"{prog}: {STOP_SIGNALS.get(signum, 'interrupted')}; {hint}", file=sys.stderr)
    return 128 + signum
