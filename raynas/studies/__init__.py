"""What the experiments share as studies of arms x seeds: the statistics of a results table and the
choice of architectures to measure. Ray-free: it reads the rows the training jobs wrote."""

from raynas.studies.picks import stratified_by_rank
from raynas.studies.stats import (
    TEST_HEADER,
    arms_markdown,
    compare_arms,
    holm,
    per_arm_summary,
    verdict_cells,
    verdict_note,
    with_tests,
)

__all__ = [
    "TEST_HEADER",
    "arms_markdown",
    "compare_arms",
    "holm",
    "per_arm_summary",
    "stratified_by_rank",
    "verdict_cells",
    "verdict_note",
    "with_tests",
]
