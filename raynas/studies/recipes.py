"""Named recipes the experiments share, kept in the package (not beside the scripts), so that a script run
where only the script was copied (``ray submit`` puts it in the node's home folder) still finds them."""

from __future__ import annotations

from pathlib import Path

#: the smoke budget every experiment's ``--smoke`` lays over its own recipe (``raynas.config.apply_yaml``):
#: seconds-scale runs that exercise every part of an experiment and learn nothing
SMOKE_BUDGET = Path(__file__).with_name("smoke_budget.yaml")
