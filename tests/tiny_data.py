"""The settings of the session's tiny digits dataset (``conftest.tiny_digits``): configs that point at it
must say so, because a digits root generated with other settings is refused (data provenance)."""

TINY_DIGITS = {"num_train": 8, "num_val": 4, "image_size": 96, "seed": 0}
