"""Shared pytest fixtures. Keep them tiny: the suite runs on 2 shared CPU cores."""

from pathlib import Path

import pytest
from tiny_data import TINY_DIGITS


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits dataset of 8 train / 4 val images at 96 px; returns its root (see generate_digits)."""
    from raynas.data import generate_digits

    root = tmp_path_factory.mktemp("digits")
    return generate_digits(root, **TINY_DIGITS, progress=False)
