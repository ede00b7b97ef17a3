"""A driver's Ray: attach to a cluster or start a local Ray, and check that it can host a job.

Every entry point (CLI, experiment scripts, the search job) connects through :func:`ensure_ray` /
:func:`ray_session`, so "which Ray" and "enough resources" are decided in one place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

import ray

from raynas.errors import reclaim_stop_signals
from raynas.training.ray_hooks import RUNTIME_ENV

logger = logging.getLogger(__name__)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connect to ``host:port`` (or ``ray://host:port``) first: ``ray.init`` retries an unreachable
    GCS for minutes before it gives up, which looks like a hang. ``auto`` and ``local`` are Ray's to
    resolve."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address in ("auto", "local") or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise RuntimeError(
            f"cannot reach the Ray cluster at {address!r} ({err}). Check that it is running (`ray status` on "
            "its head), the address and port (GCS 6379, Ray Client 10001), and the firewall; or omit "
            "--address (and unset RAY_ADDRESS) to run on a local Ray."
        ) from err


def attach_address(address: str | None) -> str | None:
    """The cluster a driver attaches to: ``address``, else ``RAY_ADDRESS``; None for a Ray of its own."""
    address = address or os.environ.get("RAY_ADDRESS")
    return None if address in (None, "", "local") else address


_attached = False  # set by ensure_ray: this process's Ray is a cluster started elsewhere


def attached_to_cluster() -> bool:
    """Whether :func:`ensure_ray` attached this process to a cluster started elsewhere (which may
    autoscale), rather than starting a Ray of its own (which never grows)."""
    return _attached


def ensure_ray(address: str | None = None) -> None:
    """Attach to ``address`` (a running cluster) or start a local Ray once; errors say how to fix.

    No ``address`` means a Ray of this process's own (``address="local"``), as the flags promise ("omit
    --address to run locally"), also when a cluster started with ``ray start`` runs on this machine: Ray's
    own default would attach to that one silently, share its CPUs with whatever runs there, and inherit its
    settings (a driver of another Ray version or auth mode fails deep inside Ray Train). ``RAY_ADDRESS``
    (which ``ray job submit`` sets for the job it starts) still names the cluster to attach to.
    """
    global _attached
    if ray.is_initialized():
        return
    address = attach_address(address)
    if address:
        check_reachable(address)
    if address:
        try:
            ray.init(address=address, log_to_driver=True)  # keeps the job's own runtime_env
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise RuntimeError(
                f"could not connect to the Ray cluster at {address!r}: {err}. Start it with `ray up "
                "cluster.yaml` (or `ray start --head`) and pass its address, or omit --address to run "
                "locally."
            ) from err
    else:
        try:
            ray.init(address="local", include_dashboard=False, log_to_driver=True, runtime_env=RUNTIME_ENV)
        except Exception as err:  # noqa: BLE001 (Ray raises a bare Exception when its node does not start)
            what = " ".join(str(err).split())[:200]
            raise RuntimeError(
                f"Ray could not start on this machine ({what}); it may be overloaded or short of memory: "
                "run again when it is less busy (finished runs are kept), or attach to a running cluster "
                "with --address"
            ) from err
    reclaim_stop_signals()  # ray.init installs Ray's SIGTERM handler (it exits 1 with tracebacks)
    _attached = address is not None


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Ray for one entry point: attached or started (:func:`ensure_ray`) and, when started here, shut down
    in order on the way out. Left to the interpreter's exit, Ray kills its trial actors mid-teardown: they
    print noise and the process can exit non-zero after a successful run."""
    started_here = not ray.is_initialized()
    ensure_ray(address)
    try:
        yield
    finally:
        if started_here and ray.is_initialized():
            ray.shutdown()


#: the config keys a shortfall of Ray Train's workers is fixed with (the search names its own keys)
TRAIN_KEYS = ("run.num_workers", "run.cpus_per_worker", "run.use_gpu")


def check_resources(
    num_workers: int,
    use_gpu: bool,
    cpus_per_worker: float,
    attached: bool = False,
    keys: tuple[str, str, str] = TRAIN_KEYS,
    reserve_cpus: float = 0.0,
) -> None:
    """Fail fast (before Ray waits forever for resources) when the cluster cannot host the job.

    ``attached``: a cluster started elsewhere (``--address``) may autoscale, so that a shortfall now is
    only a warning there (Ray waits for the autoscaler); a local Ray never grows, so it is an error.
    ``keys``: the config fields that set the count, the CPUs each and the GPU flag, named in the message.
    ``reserve_cpus``: CPUs the job needs beside its workers (a search's Tune trials).
    """
    count, cpus, gpu = keys
    beside = f" + {reserve_cpus:g} CPU beside them" if reserve_cpus else ""
    available = ray.cluster_resources()
    problems = []
    if use_gpu and available.get("GPU", 0) < num_workers:
        problems.append(
            f"{gpu}: true asks for {num_workers} GPU(s) ({count}) but the Ray cluster has "
            f"{int(available.get('GPU', 0))} GPU(s); set {gpu}: false or add GPU nodes"
        )
    if available.get("CPU", 0) < num_workers * cpus_per_worker + reserve_cpus - 1e-9:
        problems.append(
            f"the job asks for {num_workers} x {cpus_per_worker:g} CPU ({count} x {cpus}){beside} but the "
            f"Ray cluster has {available.get('CPU', 0):g} CPU(s); lower {count} or {cpus}"
        )
    for problem in problems:
        if not attached:
            raise RuntimeError(problem)
        logger.warning("%s; waiting for the autoscaler to add nodes", problem)
