"""Named recipes the experiments share, kept in the package (not beside the scripts), so that a script run
where only the script was copied (``ray submit`` puts it in the node's home folder) still finds them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TypeVar

#: the smoke budget every experiment's ``--smoke`` lays over its own recipe (``raynas.config.apply_yaml``):
#: seconds-scale runs that exercise every part of an experiment and learn nothing
SMOKE_BUDGET = Path(__file__).with_name("smoke_budget.yaml")

#: scenes under ``--smoke`` are 128 px (at the budget's 96 px the smallest glyphs would be a pixel or two)
SCENES_SMOKE_SIZE = 128
ConfigT = TypeVar("ConfigT")


def scenes_smoke(config: ConfigT) -> ConfigT:
    """The smoke budget over a scenes recipe (a train, super-net or DARTS config): 128 px, 8 test images,
    FCOS's anchor sizes rescaled where the recipe sets the proxy's."""
    from raynas.config import apply_yaml
    from raynas.data.scenes import scenes_anchor_sizes

    config = apply_yaml(config, SMOKE_BUDGET)
    size = SCENES_SMOKE_SIZE
    anchors = None if config.model.anchor_sizes is None else list(scenes_anchor_sizes(size))
    return replace(
        config,
        data=replace(config.data, num_test=8, image_size=size, max_test_images=None),
        model=replace(config.model, min_size=size, max_size=size, anchor_sizes=anchors),
    )
