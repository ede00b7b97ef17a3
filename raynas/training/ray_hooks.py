"""Hooks that raynas installs into Ray: in every Ray worker process (the ``runtime_env`` setup hook, which
imports nothing heavy because each worker runs it at start-up), and on the driver around Ray Train's and
Ray Tune's ``fit``, whose own signal handlers would otherwise decide how Ctrl+C ends a job."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from raynas.errors import DISK_FULL, STOP_SIGNALS, Interrupted, WorkerUserError, note_signal

#: the class name in every traceback Ray logs of a user's mistake found in a worker
USER_ERROR_MARK = f"{WorkerUserError.__module__}.{WorkerUserError.__qualname__}"
#: the Ray Train loggers that print a worker's error with its traceback: the worker ("Error in training
#: function") and the controller's failure policy ("[FailurePolicy] RETRY ... Error Snippet")
TRACEBACK_LOGGERS = (
    "ray.train.v2._internal.util",
    "ray.train.v2._internal.execution.failure_handling.default",
)
#: Ray Train's placement-group cleaner, a detached actor beside every run, and the thread in which it
#: asks the state API each second whether the run's controller still lives (Ray 2.60)
CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
CLEANER_THREAD = "PlacementGroupCleanerMonitor"
#: seconds a stop signal waits for Ray Train to abort a run before the job ends regardless
ABORT_TIMEOUT_S = 30.0

logger = logging.getLogger(__name__)


class MuteUserErrorTracebacks(logging.Filter):
    """Drop Ray Train's log records of a :class:`~raynas.errors.WorkerUserError`: the driver prints its
    one line (``raynas: error: ...``), and the worker's traceback would only bury it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return USER_ERROR_MARK not in record.getMessage()


def quiet_thread_death(args: threading.ExceptHookArgs) -> bool:
    """Whether a thread's death is one that tells the user nothing in a traceback; such a death is
    logged in one line (or not at all) here, anything else is left to Python's traceback.

    - Ray Train's placement-group cleaner dies of a ``ConnectionError`` when a second Ray runs on the
      machine: the state API it asks (without an address) finds several and refuses to pick one. Only
      that safety net of the run stops (it frees the run's resources if the controller dies unseen);
      the run goes on. 30 lines of traceback on every successful run otherwise.
    - A thread that dies of a full disk (TensorBoard's writer): one line; the job then fails, or not,
      with its own one line that names the folder.
    """
    if args.thread is not None and args.thread.name == CLEANER_THREAD and args.exc_type is ConnectionError:
        logging.getLogger(CLEANER_LOGGER).debug("placement-group cleaner stopped: %s", args.exc_value)
        return True
    if isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_FULL:
        name = args.thread.name if args.thread is not None else "a thread"
        logger.warning("%s stopped: no space left on the device (%s)", name, args.exc_value)
        return True
    return False


def quiet_ray_workers() -> None:
    """The worker setup hook (:data:`RUNTIME_ENV`). Ray Train's placement-group cleaner asks the state
    API (served by the dashboard, which ``ray[tune,train]`` does not install) about its controller every
    second and logs a warning each time it cannot, or dies of it (:func:`quiet_thread_death`); that
    floods the job's output without telling the user anything. A user's mistake found in a worker is
    printed once, by the driver, without Ray's tracebacks of it."""
    logging.getLogger(CLEANER_LOGGER).setLevel(logging.ERROR)
    for name in TRACEBACK_LOGGERS:
        logging.getLogger(name).addFilter(MuteUserErrorTracebacks())
    previous = threading.excepthook

    def excepthook(args: threading.ExceptHookArgs) -> None:
        if not quiet_thread_death(args):
            previous(args)

    threading.excepthook = excepthook


RUNTIME_ENV = {"worker_process_setup_hook": "raynas.training.ray_hooks.quiet_ray_workers"}


@contextlib.contextmanager
def _handlers_restored(signums: tuple[int, ...]) -> Iterator[dict[int, Any]]:
    """The handlers of ``signums`` as they are now (main thread only: ``{}`` elsewhere), put back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {signum: signal.getsignal(signum) for signum in signums}
    try:
        yield previous
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signum, handler)


@contextlib.contextmanager
def train_stops_on_signals(trainer: Any) -> Iterator[None]:
    """Ctrl+C or SIGTERM during ``trainer.fit()`` aborts the run and raises
    :class:`~raynas.errors.Interrupted`.

    Ray Train V2 (2.60) installs a SIGINT handler of its own in ``fit`` (its ``_register_sigint_handler``
    hook, main thread only): it aborts the run's controller, logs its own line and exits the driver with
    ``SystemExit(1)``; and it stays installed after ``fit`` (a later Ctrl+C aborts a finished run's
    controller and exits). Through that hook the trainer installs :func:`_abort_on` instead, for SIGTERM
    too, and the handlers from before ``fit`` come back when it ends.
    """
    with _handlers_restored(tuple(STOP_SIGNALS)) as previous:
        trainer._register_sigint_handler = lambda controller: _abort_on(controller, previous)
        yield


def _abort_on(controller: Any, previous: dict[int, Any]) -> None:
    """Handle :data:`~raynas.errors.STOP_SIGNALS` as Ray Train would SIGINT: abort the run's controller
    (its workers stop; the checkpoints it registered stay, and the same command continues the run), then
    raise :class:`~raynas.errors.Interrupted`. A second signal does not wait for the abort."""

    def stop(signum: int, frame: object) -> None:
        note_signal(signum)
        for other, handler in previous.items():
            if handler is not None:
                signal.signal(other, handler)
        with contextlib.suppress(Exception):  # abort ends the controller (RayActorError), or it is gone
            ray.get(controller.abort.remote(), timeout=ABORT_TIMEOUT_S)
        raise Interrupted(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)


#: the logger of Tune's ``tune.run``, which says how it stops on a signal (Ray 2.60)
TUNE_LOGGER = "ray.tune.tune"
#: what it says then, which raynas's one line replaces (the last names Ray's API to resume with)
TUNE_STOP_NOTES = ("Stop signal received", "Experiment has been interrupted")


class _MuteTuneStopNotes(logging.Filter):
    """Drop Tune's notes of a stop that raynas asked for (``received`` not empty)."""

    def __init__(self, received: list[int]) -> None:
        super().__init__()
        self.received = received

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.received and record.getMessage().startswith(TUNE_STOP_NOTES))


@contextlib.contextmanager
def tune_stops_on_signals(experiment: str | Path) -> Iterator[None]:
    """Ctrl+C or SIGTERM during ``Tuner.fit`` stops the search the way Tune stops on SIGUSR1: it saves
    the experiment's state once more and returns; then :class:`~raynas.errors.Interrupted` ends the job,
    with the hint to continue with ``--resume``.

    Tune (2.60) stops like that on SIGINT itself, but then returns as though the search had ended, and
    its SIGUSR1 handler stays installed after ``fit``. Here Tune's SIGINT handler is off
    (``TUNE_DISABLE_SIGINT_HANDLER``, read when ``fit`` starts) and raynas's asks Tune to stop by sending
    SIGUSR1. A signal before Tune's loop listens, or a second one, ends the job at once.
    """
    hint = f"the search's state is saved in {experiment}: re-run the same command with --resume to continue"
    received: list[int] = []
    notes = _MuteTuneStopNotes(received)
    tune_logger = logging.getLogger(TUNE_LOGGER)
    tune_logger.addFilter(notes)
    try:
        with (
            _handlers_restored((*STOP_SIGNALS, signal.SIGUSR1)) as previous,
            _env("TUNE_DISABLE_SIGINT_HANDLER"),
        ):
            if previous:

                def stop(signum: int, frame: object) -> None:
                    note_signal(signum)
                    tune_listens = signal.getsignal(signal.SIGUSR1) is not previous[signal.SIGUSR1]
                    if received or not tune_listens:
                        raise Interrupted(signum, hint)
                    received.append(signum)
                    os.kill(os.getpid(), signal.SIGUSR1)

                for signum in STOP_SIGNALS:
                    signal.signal(signum, stop)
            yield
    finally:
        tune_logger.removeFilter(notes)
    if received:
        raise Interrupted(received[0], hint)


@contextlib.contextmanager
def _env(key: str, value: str = "1") -> Iterator[None]:
    """``os.environ[key] = value`` for the block."""
    before = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
