"""What can be searched: pure PyTorch search spaces (no Ray imports below this package)."""

from raynas.spaces.base import SearchSpace

__all__ = ["SearchSpace"]
