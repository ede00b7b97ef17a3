"""The settings of the session's tiny digits dataset (``conftest.tiny_digits``): configs that point at it
must say so, because a digits root generated with other settings is refused (data provenance)."""

TINY_DIGITS = {"num_train": 8, "num_val": 4, "image_size": 96, "seed": 0}


def failure_text(done) -> str:
    """What a failed experiment subprocess said, without Ray's raylet chatter (which fills the tail)."""
    noise = ("(raylet)", "store.cc", "core_worker.cc", "PlacementGroupCleaner")
    lines = [line for line in (done.stdout + done.stderr).splitlines() if not any(n in line for n in noise)]
    return "\n".join(lines[-80:])
