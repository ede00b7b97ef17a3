"""FAD architectures as values: genotype, the discrete search space, and derivation from alphas.

A :class:`FADGenotype` holds, for each of the two cell groups, one candidate name per edge in the fixed
order of :data:`raynas.spaces.fad.cells.EDGES` ``((0,1), (0,2), (1,2), (0,3), (1,3), (2,3))``; ``"none"``
means the edge is dropped.

Counting (Sec. 3.1 end): every edge of the super-net chooses among 13 candidates, 2 groups x 6 edges ->
``13**12 ~= 2.3e13`` "unique paths"; :attr:`FADSpace.size` reports exactly that number. Not all of these are
cells a derivation can produce (Sec. 3.2 keeps one transformation per edge and two input edges per node);
:attr:`FADSpace.num_derivable` counts those (node j keeps ``min(j, 2)`` edges, each with one of the 12
transformations).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import comb
from typing import Any

import torch
from torch import Tensor

from raynas.spaces.fad.cells import EDGES, NUM_GROUPS, NUM_NODES
from raynas.spaces.fad.ops import FAD_TRANSFORMATIONS, NONE, candidate_names
from raynas.spaces.fad.repshare import REPRESENTATION_TO_TRANSFORMATION, representation_name

MAX_IN_EDGES = 2  # Sec. 3.2: "two input edges for each node"


@dataclass(frozen=True)
class FADGenotype:
    """Discrete FAD architecture: per group a 6-tuple of candidate names (``"none"`` = no edge).

    Two groups for a detection head (box regression, classification); one (``group2=None``) for the
    Mask R-CNN mask head, whose searchable module is a single group of cells (Sec. 3.1, "FAD for Instance
    Segmentation")."""

    group1: tuple[str, ...]
    group2: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "group1", tuple(self.group1))
        if self.group2 is not None:
            object.__setattr__(self, "group2", tuple(self.group2))

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        return (self.group1,) if self.group2 is None else (self.group1, self.group2)

    def kept_edges(self, group: int) -> list[tuple[tuple[int, int], str]]:
        """``[((i, j), transformation), ...]`` of group ``group`` (0-based) without the dropped edges."""
        return [(e, op) for e, op in zip(EDGES, self.groups[group]) if op != NONE]


def _config_key(group: int, edge: tuple[int, int]) -> str:
    return f"g{group + 1}_e{edge[0]}_{edge[1]}"


def _incoming(j: int) -> list[int]:
    """Indices (into EDGES) of the edges ending at node j."""
    return [k for k, (_, dst) in enumerate(EDGES) if dst == j]


class FADSpace:
    """The discrete FAD space over one block's candidates (SearchSpace protocol, ``raynas.spaces.base``).

    ``sample`` is the paper's 'random' baseline (Table 2): one transformation per kept edge and two
    incoming edges per node (all when fewer), uniform over :attr:`num_derivable` genotypes. ``validate``
    accepts 1 or 2 incoming edges per node, so ``mutate`` may also drop an edge of node 2 or 3.
    """

    name = "fad"

    def __init__(
        self,
        candidates: Sequence[str] | None = None,
        max_in_edges: int = MAX_IN_EDGES,
        num_groups: int = NUM_GROUPS,
    ) -> None:
        if num_groups not in (1, 2):
            raise ValueError(f"num_groups must be 1 (mask head) or 2 (detection head), got {num_groups}")
        self.num_groups = num_groups
        self.candidates = tuple(candidates) if candidates is not None else candidate_names()
        if NONE not in self.candidates:
            raise ValueError(f"candidates must include {NONE!r} (a dropped edge), got {self.candidates}")
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"candidates contain duplicates: {self.candidates}")
        if max_in_edges < 1:
            raise ValueError(f"max_in_edges must be >= 1, got {max_in_edges}")
        self.ops = tuple(c for c in self.candidates if c != NONE)
        self.max_in_edges = max_in_edges

    @property
    def size(self) -> int:
        """``len(candidates) ** (6 * groups)`` (Sec. 3.1: 13**12 ~= 2.3e13 for the full two-group block;
        13**6 for the one-group mask head)."""
        return len(self.candidates) ** (self.num_groups * len(EDGES))

    @property
    def num_derivable(self) -> int:
        """Genotypes keeping exactly ``min(j, max_in_edges)`` edges into node j (what derive/sample give)."""
        per_group = 1
        for j in range(1, NUM_NODES + 1):
            k = min(j, self.max_in_edges)
            per_group *= comb(j, k) * len(self.ops) ** k
        return per_group**self.num_groups

    def _sample_group(self, rng: random.Random) -> tuple[str, ...]:
        ops = [NONE] * len(EDGES)
        for j in range(1, NUM_NODES + 1):
            incoming = _incoming(j)
            for k in rng.sample(incoming, min(len(incoming), self.max_in_edges)):
                ops[k] = rng.choice(self.ops)
        return tuple(ops)

    def sample(self, rng: random.Random) -> FADGenotype:
        return FADGenotype(*(self._sample_group(rng) for _ in range(self.num_groups)))

    def _repair_group(self, ops: list[str], rng: random.Random) -> tuple[str, ...]:
        """Give an edge to a node left without one; drop random extras beyond ``max_in_edges``."""
        for j in range(1, NUM_NODES + 1):
            incoming = _incoming(j)
            kept = [k for k in incoming if ops[k] != NONE]
            if not kept:
                ops[rng.choice(incoming)] = rng.choice(self.ops)
            for k in rng.sample(kept, max(0, len(kept) - self.max_in_edges)):
                ops[k] = NONE
        return tuple(ops)

    def mutate(self, arch: FADGenotype, prob: float, rng: random.Random) -> FADGenotype:
        """Resample each edge's candidate (``none`` included) with probability ``prob``, then repair nodes."""
        groups = []
        for ops in arch.groups:
            new = [rng.choice(self.candidates) if rng.random() < prob else op for op in ops]
            groups.append(tuple(new) if new == list(ops) else self._repair_group(new, rng))
        return FADGenotype(*groups)

    def crossover(self, a: FADGenotype, b: FADGenotype, rng: random.Random) -> FADGenotype:
        """Each node's incoming-edge set comes whole from ``a`` or ``b`` (a per-edge mix can break a node)."""
        groups = []
        for ga, gb in zip(a.groups, b.groups):
            ops = list(ga)
            for j in range(1, NUM_NODES + 1):
                if rng.random() < 0.5:
                    for k in _incoming(j):
                        ops[k] = gb[k]
            groups.append(tuple(ops))
        return FADGenotype(*groups)

    def validate(self, arch: FADGenotype) -> None:
        if not isinstance(arch, FADGenotype):
            raise ValueError(f"expected an FADGenotype, got {type(arch).__name__}")
        if len(arch.groups) != self.num_groups:
            raise ValueError(
                f"expected {self.num_groups} cell group(s), got {len(arch.groups)}: a genotype of "
                f"{'a detection head' if len(arch.groups) == 2 else 'a mask head'} does not fit this space"
            )
        for g, ops in enumerate(arch.groups):
            group = f"group{g + 1}"
            if len(ops) != len(EDGES):
                raise ValueError(f"{group}: expected {len(EDGES)} edges {EDGES}, got {len(ops)}: {ops}")
            for e, op in zip(EDGES, ops):
                if op not in self.candidates:
                    raise ValueError(
                        f"{group} edge {e[0]}->{e[1]}: unknown candidate {op!r}; "
                        f"expected one of {self.candidates}"
                    )
            for j in range(1, NUM_NODES + 1):
                kept = [EDGES[k] for k in _incoming(j) if ops[k] != NONE]
                if not kept:
                    raise ValueError(
                        f"{group} node {j}: no incoming edge (all of {_incoming_names(j)} are none)"
                    )
                if len(kept) > self.max_in_edges:
                    raise ValueError(
                        f"{group} node {j}: {len(kept)} incoming edges {kept}, "
                        f"at most {self.max_in_edges} allowed"
                    )

    def is_valid(self, arch: FADGenotype) -> bool:
        try:
            self.validate(arch)
        except ValueError:
            return False
        return True

    def choices(self) -> dict[str, list[str]]:
        """The values of each ``to_config`` key (lets Tune's own searchers search this space)."""
        return {_config_key(g, edge): list(self.candidates) for g in range(self.num_groups) for edge in EDGES}

    def to_config(self, arch: FADGenotype) -> dict[str, Any]:
        """``{"g1_e0_1": "std_3x3", ..., "g2_e2_3": "none"}``: one readable column per edge."""
        return {_config_key(g, e): op for g, ops in enumerate(arch.groups) for e, op in zip(EDGES, ops)}

    def from_config(self, config: Mapping[str, Any]) -> FADGenotype:
        groups = []
        for g in range(self.num_groups):
            ops = []
            for e in EDGES:
                key = _config_key(g, e)
                if key not in config:
                    raise ValueError(f"FAD config is missing edge key {key!r}")
                if not isinstance(config[key], str):
                    raise ValueError(f"FAD config key {key!r} must be a candidate name, got {config[key]!r}")
                ops.append(config[key])
            groups.append(tuple(ops))
        return FADGenotype(*groups)


def _incoming_names(j: int) -> list[str]:
    return [f"{EDGES[k][0]}->{EDGES[k][1]}" for k in _incoming(j)]


def representation_to_transformation(candidate: str) -> str:
    """Sec. 3.2 end: map a selected representation back to the real transformation it stands for.

    In :class:`~raynas.spaces.fad.repshare.RepShareBlock` the candidate ``name``'s output is the
    representation ``representation_name(name)`` (e.g. ``std:dil2(p1)``), computed by exactly t4's layer
    stack, so the map is the identity on names; DARTS-op candidates have no representation sharing.
    """
    if candidate in FAD_TRANSFORMATIONS:
        return REPRESENTATION_TO_TRANSFORMATION[representation_name(candidate)]
    return candidate


def derive(
    alphas: Tensor | Sequence, candidates: Sequence[str] | None = None, max_in_edges: int = MAX_IN_EDGES
) -> FADGenotype:
    """Discrete genotype from alphas ``[groups, 6 edges, n_candidates]`` (Sec. 3.2 end, as DARTS); two
    groups for a detection head, one for the mask head.

    Per edge the best non-``none`` candidate by its softmax weight (the representation weight of Eq. 2);
    per node the ``max_in_edges`` incoming edges with the largest such weight (all when fewer; ties go to
    the earlier edge); the others become ``none``. Representations map back to transformations via
    :func:`representation_to_transformation`.
    """
    candidates = tuple(candidates) if candidates is not None else candidate_names()
    a = torch.as_tensor(alphas, dtype=torch.float32).detach().cpu()
    if (
        a.dim() != 3
        or a.shape[0] not in (1, NUM_GROUPS)
        or tuple(a.shape[1:]) != (len(EDGES), len(candidates))
    ):
        shape = (len(EDGES), len(candidates))
        raise ValueError(
            f"alphas must have shape {(NUM_GROUPS, *shape)} (groups, edges, candidates) for a detection head "
            f"or {(1, *shape)} for a mask head, got {tuple(a.shape)}"
        )
    if NONE not in candidates:
        raise ValueError(f"candidates must include {NONE!r}, got {candidates}")
    weights = torch.softmax(a, dim=-1)
    weights[..., candidates.index(NONE)] = -1.0  # never chosen
    groups = []
    for g in range(a.shape[0]):
        best_w, best_k = weights[g].max(dim=-1)
        ops = [NONE] * len(EDGES)
        for j in range(1, NUM_NODES + 1):
            incoming = sorted(_incoming(j), key=lambda k: (-float(best_w[k]), k))
            for k in incoming[:max_in_edges]:
                ops[k] = representation_to_transformation(candidates[int(best_k[k])])
        groups.append(tuple(ops))
    return FADGenotype(*groups)


__all__ = [
    "MAX_IN_EDGES",
    "FADGenotype",
    "FADSpace",
    "derive",
    "representation_to_transformation",
]
