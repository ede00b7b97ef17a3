"""Shared pytest fixtures. Keep them tiny: the suite runs on 2 shared CPU cores."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_data import TINY_DIGITS


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits dataset of 8 train / 4 val images at 96 px; returns its root (see generate_digits)."""
    from raynas.data import generate_digits

    root = tmp_path_factory.mktemp("digits")
    return generate_digits(root, **TINY_DIGITS, progress=False)


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """A local Ray of 2 CPUs for one test module, shut down after it.

    Per module, not per session: other modules check that no Ray runs (the CLI refuses a bad config
    before it starts Ray) or start their own (the CLI's drivers, test_cluster's two-node cluster).
    """
    import ray

    # address="local": always a fresh instance of 2 CPUs, never a cluster that a `ray start` (or a killed
    # test) left on this machine; attaching to one fails (num_cpus) or shares its CPUs
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.hookimpl(tryfirst=True)  # before -m selects by the marks added here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tiers: ``integration`` for a test that runs under the in-process Ray (the ``ray_session``
    fixture, directly or through another fixture), ``unit`` for the rest of the default run; ``smoke`` and
    ``slow`` are marked in the test files. ``pytest -m unit`` is the quick tier (a test that drives an
    entry point in a subprocess may still start a Ray there)."""
    for item in items:
        if "ray_session" in item.fixturenames:
            item.add_marker(pytest.mark.integration)
        elif not any(item.get_closest_marker(name) for name in ("smoke", "slow")):
            item.add_marker(pytest.mark.unit)
