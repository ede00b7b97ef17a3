"""Setup hooks that raynas installs in every Ray worker process (``runtime_env``); imports nothing heavy,
because each worker runs them at start-up."""

from __future__ import annotations

import logging


def quiet_ray_workers() -> None:
    """Ray Train's placement-group cleaner asks the state API (served by the dashboard, which
    ``ray[tune,train]`` does not install) about its controller every second and logs a warning each
    time it cannot; that floods the job's output without telling the user anything."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(
        logging.ERROR
    )


RUNTIME_ENV = {"worker_process_setup_hook": "raynas.training.ray_hooks.quiet_ray_workers"}
