"""Strict fair sampling of sub-nets for super-net training (Sec. 3.2.1, Eq. 13; FairNAS).

At every training step K=4 sub-nets are drawn "with no intersection": each edge gets a random permutation
of the four parameterised paths and sub-net ``m`` takes the ``m``-th entry, so within one step every edge
trains each of top-down, bottom-up, scale-equalizing and fusing-splitting exactly once
(``E = n/K``, ``Var = 0``, Eq. 13). ``skip`` and ``none`` have no weights and are never sampled here,
so every fair sub-net is connected (valid).

The draw is a pure function of a seed, so all DDP ranks derive the same K sub-nets from the step number
(:func:`fair_step_seed`) without communicating. The step itself (forward/backward of the K sub-nets, one
update) is ``raynas.training.supernet.SupernetTask.accumulate_gradients``, the only implementation.
"""

from __future__ import annotations

import random

from raynas.spaces.opanas.paths import PARAMETERISED_PATHS
from raynas.spaces.opanas.space import OPANASArch, OPANASSpace

SEED_STRIDE = 1_000_003


def fair_step_seed(base_seed: int, step: int) -> int:
    """The seed of training step ``step``: identical on every rank, different for every step."""
    return base_seed * SEED_STRIDE + step


def fair_sample(
    space: OPANASSpace | int,
    seed: int | None = None,
    *,
    rng: random.Random | None = None,
    k: int = len(PARAMETERISED_PATHS),
) -> list[OPANASArch]:
    """``k`` sub-nets in which every edge takes a different parameterised path (Sec. 3.2.1).

    ``space`` is an :class:`OPANASSpace` or its number of edges (15 for N=5). Give exactly one of ``seed``
    (deterministic, e.g. :func:`fair_step_seed`) or ``rng``. ``k=4`` (the paper) covers every path once
    per edge; a smaller ``k`` keeps the sub-nets disjoint but leaves ``4-k`` paths out of the step.
    """
    num_edges = space.num_edges if isinstance(space, OPANASSpace) else int(space)
    if (seed is None) == (rng is None):
        raise ValueError("fair_sample needs exactly one of seed= or rng=")
    if not 1 <= k <= len(PARAMETERISED_PATHS):
        raise ValueError(f"k must be between 1 and {len(PARAMETERISED_PATHS)} (paths per edge), got {k}")
    if num_edges < 1:
        raise ValueError(f"num_edges must be positive, got {num_edges}")
    rng = random.Random(seed) if rng is None else rng
    permutations = [rng.sample(PARAMETERISED_PATHS, len(PARAMETERISED_PATHS)) for _ in range(num_edges)]
    return [OPANASArch(tuple(perm[m] for perm in permutations)) for m in range(k)]
