"""What the experiments share as studies of arms x seeds: the statistics of a results table and the
choice of architectures to measure. Ray-free: it reads the rows the training jobs wrote."""

from raynas.studies.picks import stratified_by_rank
from raynas.studies.stats import arms_markdown, compare_arms, holm

__all__ = ["arms_markdown", "compare_arms", "holm", "stratified_by_rank"]
