"""How the super-net picks the sub-nets it trains at each step (Sec. 3.2.1, Eq. 13; FairNAS; SPOS).

At every training step K=4 sub-nets are drawn "with no intersection": each edge gets a random permutation
of the four parameterised paths and sub-net ``m`` takes the ``m``-th entry, so within one step every edge
trains each of top-down, bottom-up, scale-equalizing and fusing-splitting exactly once
(``E = n/K``, ``Var = 0``, Eq. 13). ``skip`` and ``none`` have no weights and are never sampled here,
so every fair sub-net is connected (valid).

Two variants, for the ablations of Table 5/6 (``opanas.sampling`` / ``opanas.train_paths``):

* ``uniform`` (SPOS, Guo et al. 2020): one sub-net per step, each edge's path drawn independently and
  uniformly. Over many steps every path is trained equally often *in expectation* only (Var > 0).
* ``train_paths: all``: the draw is over all six paths, so the shared body and head also see the
  feature statistics of sub-nets with ``skip`` and ``none`` edges, which the search will score. The paper
  never trains those two (they have no weights); this is our deviation, measured in
  ``experiments/supernet_variants.py``. Fair sampling over six paths takes K=6 sub-nets per step, and a
  draw that leaves a sub-net disconnected (all of ``e0_*`` are ``none``) is redrawn as a whole.

The draw is a pure function of a seed, so all DDP ranks derive the same K sub-nets from the step number
(:func:`fair_step_seed`) without communicating. The step itself (forward/backward of the K sub-nets, one
update) is ``raynas.training.supernet.SupernetTask.accumulate_gradients``, the only implementation.
"""

from __future__ import annotations

import random

from raynas.spaces.opanas.paths import PARAMETERISED_PATHS, PATH_NAMES
from raynas.spaces.opanas.space import OPANASArch, OPANASSpace

SEED_STRIDE = 1_000_003
SAMPLING_RULES = ("fair", "uniform")
#: which paths super-net training draws from: the four with weights (the paper) or all six
TRAIN_PATHS = {"parameterised": PARAMETERISED_PATHS, "all": PATH_NAMES}


def fair_step_seed(base_seed: int, step: int) -> int:
    """The seed of training step ``step``: identical on every rank, different for every step."""
    return base_seed * SEED_STRIDE + step


def fair_sample(
    space: OPANASSpace | int,
    seed: int | None = None,
    *,
    rng: random.Random | None = None,
    k: int = len(PARAMETERISED_PATHS),
    paths: tuple[str, ...] = PARAMETERISED_PATHS,
) -> list[OPANASArch]:
    """``k`` sub-nets in which every edge takes a different path of ``paths`` (Sec. 3.2.1).

    ``space`` is an :class:`OPANASSpace` or its number of edges (15 for N=5). Give exactly one of ``seed``
    (deterministic, e.g. :func:`fair_step_seed`) or ``rng``. ``k=len(paths)`` (the paper: 4) covers every
    path once per edge; a smaller ``k`` keeps the sub-nets disjoint but leaves ``len(paths)-k`` paths
    out of the step. With ``none`` among ``paths``, draws with a disconnected sub-net are redrawn.
    """
    num_edges = space.num_edges if isinstance(space, OPANASSpace) else int(space)
    if (seed is None) == (rng is None):
        raise ValueError("fair_sample needs exactly one of seed= or rng=")
    if not 1 <= k <= len(paths):
        raise ValueError(f"k must be between 1 and {len(paths)} (paths per edge), got {k}")
    if num_edges < 1:
        raise ValueError(f"num_edges must be positive, got {num_edges}")
    checker = space if isinstance(space, OPANASSpace) else None
    rng = random.Random(seed) if rng is None else rng
    while True:
        permutations = [rng.sample(paths, len(paths)) for _ in range(num_edges)]
        archs = [OPANASArch(tuple(perm[m] for perm in permutations)) for m in range(k)]
        if "none" not in paths or checker is None or all(checker.is_valid(a) for a in archs):
            return archs


def uniform_sample(space: OPANASSpace, seed: int, paths: tuple[str, ...] = PARAMETERISED_PATHS) -> OPANASArch:
    """One sub-net whose edges each take a path of ``paths`` independently and uniformly (SPOS).

    Disconnected draws are rejected, so over all six paths this is uniform over the valid architectures
    (as :meth:`OPANASSpace.sample`)."""
    rng = random.Random(seed)
    while True:
        arch = OPANASArch(tuple(rng.choice(paths) for _ in range(space.num_edges)))
        if space.is_valid(arch):
            return arch


def training_subnets(space: OPANASSpace, rule: str, train_paths: str, k: int, seed: int) -> list[OPANASArch]:
    """The sub-nets one super-net step trains: ``k`` fair ones, or one uniform one (SPOS)."""
    if rule not in SAMPLING_RULES:
        raise ValueError(f"sampling must be one of {SAMPLING_RULES}, got {rule!r}")
    paths = TRAIN_PATHS[train_paths]
    if rule == "uniform":
        return [uniform_sample(space, seed, paths)]
    return fair_sample(space, seed=seed, k=k, paths=paths)
