"""The OPANAS search space: a dense DAG of feature pyramids whose edges are information paths (Sec. 3.2).

Encoding. The DAG has an input node 0 (the pyramid ``P`` from the backbone), intermediate nodes
``1..N`` and an output node ``O``. Every pair ``i < j`` with ``j >= 1`` is an edge carrying one of the six
paths of :data:`~raynas.spaces.opanas.paths.PATH_NAMES`, so there are ``N(N+1)/2`` edges (15 for N=5)
and ``6^(N(N+1)/2)`` encodings (6^15 ~= 4.7e11, Sec. 3.2). ``OPANASArch.edges`` lists the paths in the
fixed order "for node j = 1..N, for source i = 0..j-1": ``e0_1, e0_2, e1_2, e0_3, e1_3, e2_3, ...``
(the authors' order too); ``to_config`` names them ``"e{i}_{j}"``.

Disconnected sub-nets (a decision the paper leaves open). Node ``j`` computes
``x_j = sum_i gamma_ij IP_ij(x_i)`` (Eq. 10) over its *live* inputs: node 0 is live, and node ``j`` is
live when some non-``none`` edge enters it from a live node. A node whose incoming edges are all ``none``
(or come only from dead nodes) outputs nothing and is skipped at run time, together with its outgoing
edges. The output node sums the live intermediate nodes (Sec. 3.2: "identity mapped to the output node
through summation"). An architecture where *no* intermediate node is live -- equivalently, every edge
leaving the input node ``e0_1 .. e0_N`` is ``none`` -- has no output at all: :meth:`OPANASSpace.validate`
rejects it, and ``sample``/``mutate``/``crossover`` only return valid architectures (by rejection, which
keeps ``sample`` uniform over the valid set). ``size`` still counts all 6^15 encodings as the paper does;
``num_valid`` = ``6^15 - 6^10`` excludes the disconnected ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from raynas.spaces.opanas.paths import PATH_NAMES


def edge_pairs(num_nodes: int) -> list[tuple[int, int]]:
    """The ``(i, j)`` edges of an ``num_nodes``-intermediate-node DAG in encoding order (j, then i)."""
    return [(i, j) for j in range(1, num_nodes + 1) for i in range(j)]


def edge_key(i: int, j: int) -> str:
    """The ``to_config`` key of edge ``(i, j)``: ``"e{i}_{j}"``."""
    return f"e{i}_{j}"


def _nodes_for_edges(num_edges: int) -> int:
    """``N`` such that ``N(N+1)/2 == num_edges``; ``ValueError`` when ``num_edges`` is not triangular."""
    n = 0
    while n * (n + 1) // 2 < num_edges:
        n += 1
    if n * (n + 1) // 2 != num_edges:
        raise ValueError(f"{num_edges} edges is not N(N+1)/2 for any number of nodes N")
    return n


@dataclass(frozen=True)
class OPANASArch:
    """One sub-net: the path name of every edge, in :func:`edge_pairs` order. Immutable and hashable."""

    edges: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.edges, list):
            object.__setattr__(self, "edges", tuple(self.edges))

    @property
    def num_nodes(self) -> int:
        """The number of intermediate nodes ``N`` implied by the number of edges."""
        return _nodes_for_edges(len(self.edges))

    def pairs(self) -> list[tuple[int, int]]:
        """The ``(i, j)`` node pair of each edge, aligned with ``edges``."""
        return edge_pairs(self.num_nodes)

    def items(self) -> list[tuple[tuple[int, int], str]]:
        """``[((i, j), path_name), ...]`` in encoding order."""
        return list(zip(self.pairs(), self.edges))


def live_nodes(arch: OPANASArch) -> tuple[bool, ...]:
    """``live[k]`` is True when node ``k`` (0 = input, 1..N intermediate) receives the input pyramid."""
    num_nodes = arch.num_nodes
    live = [True] + [False] * num_nodes
    for (i, j), name in arch.items():
        if name != "none" and live[i]:
            live[j] = True
    return tuple(live)


def active_edges(arch: OPANASArch) -> list[tuple[int, int, int, str]]:
    """The edges that run: ``(index, i, j, path)`` for every non-``none`` edge leaving a live node."""
    live = live_nodes(arch)
    return [(k, i, j, name) for k, ((i, j), name) in enumerate(arch.items()) if name != "none" and live[i]]


class OPANASSpace:
    """The :class:`~raynas.spaces.base.SearchSpace` of OPANAS with ``num_nodes`` intermediate nodes."""

    name = "opanas"

    def __init__(self, num_nodes: int = 5) -> None:
        if not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive int, got {num_nodes!r}")
        self.num_nodes = num_nodes
        self.pairs = edge_pairs(num_nodes)
        self.keys = [edge_key(i, j) for i, j in self.pairs]

    def __repr__(self) -> str:
        return f"OPANASSpace(num_nodes={self.num_nodes})"

    @property
    def num_edges(self) -> int:
        """``N(N+1)/2`` (15 for N=5)."""
        return len(self.pairs)

    @property
    def size(self) -> int:
        """``6^(N(N+1)/2)`` encodings, the paper's count (Sec. 3.2), disconnected ones included."""
        return len(PATH_NAMES) ** self.num_edges

    @property
    def num_valid(self) -> int:
        """Encodings with at least one non-``none`` edge out of the input node."""
        return self.size - len(PATH_NAMES) ** (self.num_edges - self.num_nodes)

    def input_edge_indices(self) -> list[int]:
        """Indices of the edges ``e0_j`` leaving the input node."""
        return [k for k, (i, _) in enumerate(self.pairs) if i == 0]

    # --- validation -------------------------------------------------------------------------------------
    def validate(self, arch: Any) -> None:
        """Raise ``ValueError`` naming the bad edge (index and key) or the reason the DAG is disconnected."""
        if not isinstance(arch, OPANASArch):
            raise ValueError(f"an OPANAS architecture must be an OPANASArch, got {type(arch).__name__}")
        if not isinstance(arch.edges, tuple):
            raise ValueError(
                f"OPANASArch.edges must be a tuple of path names, got {type(arch.edges).__name__}"
            )
        if len(arch.edges) != self.num_edges:
            raise ValueError(
                f"OPANAS architecture has {len(arch.edges)} edges, expected {self.num_edges} for "
                f"num_nodes={self.num_nodes} (order: {', '.join(self.keys)})"
            )
        for k, name in enumerate(arch.edges):
            if not isinstance(name, str):
                raise ValueError(
                    f"edge {k} ({self.keys[k]}) must be a path name (str), got {type(name).__name__} "
                    f"{name!r}; valid paths: {', '.join(PATH_NAMES)}"
                )
            if name not in PATH_NAMES:
                raise ValueError(
                    f"edge {k} ({self.keys[k]}) has unknown path {name!r}; "
                    f"valid paths: {', '.join(PATH_NAMES)}"
                )
        if all(arch.edges[k] == "none" for k in self.input_edge_indices()):
            inputs = ", ".join(self.keys[k] for k in self.input_edge_indices())
            raise ValueError(
                f"OPANAS architecture is disconnected: every edge leaving the input node ({inputs}) is "
                "'none', so no intermediate node receives the input pyramid and the output would be empty; "
                "give at least one of these edges a path other than 'none'"
            )

    def is_valid(self, arch: Any) -> bool:
        try:
            self.validate(arch)
        except ValueError:
            return False
        return True

    def live_nodes(self, arch: OPANASArch) -> tuple[bool, ...]:
        """See :func:`live_nodes` (validates first)."""
        self.validate(arch)
        return live_nodes(arch)

    def canonical(self, arch: OPANASArch) -> OPANASArch:
        """The encoding of the network ``arch`` computes: edges leaving dead nodes become ``none``.

        Such edges never run (:func:`active_edges`), so architectures that differ only there are the same
        network with the same score; searchers de-duplicate on this form."""
        self.validate(arch)
        live = live_nodes(arch)
        return OPANASArch(tuple(n if live[i] else "none" for (i, _), n in arch.items()))

    def active_edges(self, arch: OPANASArch) -> list[tuple[int, int, int, str]]:
        """See :func:`active_edges` (validates first)."""
        self.validate(arch)
        return active_edges(arch)

    # --- variation --------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> OPANASArch:
        """Uniform over the valid architectures (uniform encoding, rejecting disconnected ones)."""
        while True:
            arch = OPANASArch(tuple(rng.choice(PATH_NAMES) for _ in range(self.num_edges)))
            if self.is_valid(arch):
                return arch

    def mutate(self, arch: OPANASArch, prob: float, rng: random.Random) -> OPANASArch:
        """With probability ``prob`` per edge, replace the path by a *different* one (Sec. 3.2.2, p=0.1).

        ``prob=0`` returns ``arch`` unchanged; ``prob=1`` changes every edge. A disconnected result is
        rejected and the mutation redrawn (always possible: the input edges can change to a real path).
        """
        self.validate(arch)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mutation probability must be in [0, 1], got {prob}")
        while True:
            edges = tuple(
                rng.choice([p for p in PATH_NAMES if p != name]) if rng.random() < prob else name
                for name in arch.edges
            )
            child = OPANASArch(edges)
            if self.is_valid(child):
                return child

    def crossover(self, a: OPANASArch, b: OPANASArch, rng: random.Random) -> OPANASArch:
        """Each edge from ``a`` or ``b`` with probability 1/2; disconnected children are redrawn."""
        self.validate(a)
        self.validate(b)
        while True:
            child = OPANASArch(tuple(x if rng.random() < 0.5 else y for x, y in zip(a.edges, b.edges)))
            if self.is_valid(child):
                return child

    # --- encodings --------------------------------------------------------------------------------------
    def choices(self) -> dict[str, list[str]]:
        """The values of each ``to_config`` key (lets Tune's own searchers search this space)."""
        return {key: list(PATH_NAMES) for key in self.keys}

    def to_config(self, arch: OPANASArch) -> dict[str, str]:
        """``{"e0_1": "top_down", "e0_2": ..., ...}``: one readable column per edge."""
        self.validate(arch)
        return dict(zip(self.keys, arch.edges))

    def from_config(self, config: dict[str, Any]) -> OPANASArch:
        """Inverse of :meth:`to_config`; ignores other keys, raises ``ValueError`` on a missing/bad edge."""
        missing = [key for key in self.keys if key not in config]
        if missing:
            raise ValueError(
                f"OPANAS config is missing edge(s) {', '.join(missing)}; expected keys {', '.join(self.keys)}"
            )
        arch = OPANASArch(tuple(config[key] for key in self.keys))
        self.validate(arch)
        return arch

    def from_edges(self, edges: dict[tuple[int, int], str], default: str = "none") -> OPANASArch:
        """Build an architecture from ``{(i, j): path}``; unnamed edges get ``default``."""
        unknown = [pair for pair in edges if pair not in self.pairs]
        if unknown:
            raise ValueError(f"edges {unknown} are not in a {self.num_nodes}-node OPANAS DAG")
        arch = OPANASArch(tuple(edges.get(pair, default) for pair in self.pairs))
        self.validate(arch)
        return arch
