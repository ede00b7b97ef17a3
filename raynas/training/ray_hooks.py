"""Setup hooks that raynas installs in every Ray worker process (``runtime_env``); imports nothing heavy,
because each worker runs them at start-up."""

from __future__ import annotations

import logging

from raynas.errors import WorkerUserError

#: the class name in every traceback Ray logs of a user's mistake found in a worker
USER_ERROR_MARK = f"{WorkerUserError.__module__}.{WorkerUserError.__qualname__}"
#: the Ray Train loggers that print a worker's error with its traceback: the worker ("Error in training
#: function") and the controller's failure policy ("[FailurePolicy] RETRY ... Error Snippet")
TRACEBACK_LOGGERS = (
    "ray.train.v2._internal.util",
    "ray.train.v2._internal.execution.failure_handling.default",
)


class MuteUserErrorTracebacks(logging.Filter):
    """Drop Ray Train's log records of a :class:`~raynas.errors.WorkerUserError`: the driver prints its
    one line (``raynas: error: ...``), and the worker's traceback would only bury it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return USER_ERROR_MARK not in record.getMessage()


def quiet_ray_workers() -> None:
    """Ray Train's placement-group cleaner asks the state API (served by the dashboard, which
    ``ray[tune,train]`` does not install) about its controller every second and logs a warning each
    time it cannot; that floods the job's output without telling the user anything. A user's mistake
    found in a worker is printed once, by the driver, without Ray's tracebacks of it."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(
        logging.ERROR
    )
    for name in TRACEBACK_LOGGERS:
        logging.getLogger(name).addFilter(MuteUserErrorTracebacks())


RUNTIME_ENV = {"worker_process_setup_hook": "raynas.training.ray_hooks.quiet_ray_workers"}
