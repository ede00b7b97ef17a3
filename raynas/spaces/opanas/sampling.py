"""Strict fair sampling of sub-nets for super-net training (Sec. 3.2.1, Eq. 13; FairNAS).

At every training step K=4 sub-nets are drawn "with no intersection": each edge gets a random permutation
of the four parameterised paths and sub-net ``m`` takes the ``m``-th entry, so within one step every edge
trains each of top-down, bottom-up, scale-equalizing and fusing-splitting exactly once
(``E = n/K``, ``Var = 0``, Eq. 13). ``skip`` and ``none`` have no weights and are never sampled here,
so every fair sub-net is connected (valid).

The draw is a pure function of a seed, so all DDP ranks derive the same K sub-nets from the step number
(:func:`fair_step_seed`) without communicating.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from raynas.spaces.opanas.paths import PARAMETERISED_PATHS
from raynas.spaces.opanas.space import OPANASArch, OPANASSpace

if TYPE_CHECKING:
    from raynas.spaces.opanas.supernet import OPANASSupernet

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


def accumulate_fair_step(
    compute_loss: Callable[[OPANASArch], Tensor | dict[str, Tensor]],
    archs: Sequence[OPANASArch],
    supernet: OPANASSupernet,
    mu: float = 1e-4,
    no_sync: Callable[[], AbstractContextManager] | None = None,
) -> dict[str, float]:
    """Forward + backward of each sub-net, accumulating gradients for one update (Sec. 3.2.1, Eq. 12).

    For every ``arch`` the super-net is switched with ``supernet.using(arch)`` and ``compute_loss(arch)``
    runs the detector (a scalar, or torchvision's dict of losses, summed); ``(loss + mu * ||gamma||_1) / K``
    is back-propagated at once, so only one sub-net's graph is alive at a time (the memory saving the
    paper samples sub-nets for). The gradients sum to those of the mean loss over the K sub-nets plus
    ``mu * ||gamma||_1``. ``no_sync`` (e.g. a DDP model's ``no_sync``) wraps all but the last backward so
    gradients are all-reduced once. The caller zeroes gradients before and calls ``optimizer.step()`` after.

    Returns the mean detection loss ``"loss"``, the mean of each named loss when ``compute_loss`` returns
    a dict, ``"gamma_l1"`` and ``"total"`` (``loss + mu * gamma_l1``).
    """
    if not archs:
        raise ValueError("accumulate_fair_step needs at least one architecture")
    count = len(archs)
    sums: dict[str, float] = {"loss": 0.0}
    for index, arch in enumerate(archs):
        last = index == count - 1
        context = nullcontext() if no_sync is None or last else no_sync()
        with context, supernet.using(arch):
            result = compute_loss(arch)
            if isinstance(result, dict):
                for name, value in result.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
                loss = torch.stack(list(result.values())).sum()
            else:
                loss = result
            ((loss + mu * supernet.gamma_l1()) / count).backward()
        sums["loss"] += float(loss.detach())
    means = {name: value / count for name, value in sums.items()}
    means["gamma_l1"] = float(supernet.gamma_l1().detach())
    means["total"] = means["loss"] + mu * means["gamma_l1"]
    return means
