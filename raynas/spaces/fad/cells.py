"""Cells and the two-group searchable module of FAD (Sec. 3.1, Fig. 1, Eq. 1).

A cell is a DAG with the input as node 0 and 3 intermediate nodes. Node j sums, over all earlier nodes i,
the edge ``f_out(T(f_in(x_i)))`` (Eq. 1), where ``f_in`` (c -> c') and ``f_out`` (c' -> c) are 1x1 conv +
GroupNorm + ReLU and T is a transformation block on c' channels. Edges in the fixed order of
:data:`EDGES`: node1 <- {0}, node2 <- {0, 1}, node3 <- {0, 1, 2}: 6 edges. The 3 intermediate nodes are
concatenated and a 1x1 conv (+ GroupNorm + ReLU) brings them back to c channels.

The module (Fig. 1) is two groups of M cells, every cell of a group with the group's architecture (own
weights). Group 1's output feeds box regression (+ centerness); group 2 reads ``group1(x) + x`` (the
shortcut from the module input to group 2's input) and feeds classification. One module serves every
pyramid level (architecture and parameters shared across levels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from raynas.spaces.fad.ops import NONE, build_transformation, group_norm
from raynas.spaces.fad.repshare import BlockConfig

NUM_NODES = 3
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for j in range(1, NUM_NODES + 1) for i in range(j))
NUM_GROUPS = 2


def edge_key(edge: tuple[int, int]) -> str:
    return f"e{edge[0]}_{edge[1]}"


def _add(terms: list[Tensor]) -> Tensor:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class Pointwise(nn.Sequential):
    """1x1 conv (no bias: GroupNorm follows) + GroupNorm + ReLU: the ``f`` of Eq. 1 and the cell output."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 1, bias=False), group_norm(c_out), nn.ReLU(inplace=False))


class MixedEdge(nn.Module):
    """Searchable edge: ``(1 - w_none) * f_out(T(f_in(x), w / (1 - w_none)))``, T a naive or RepShare block.

    Why not ``f_out(T(f_in(x), w))`` with ``none`` adding zero inside T: ``f_out`` ends in GroupNorm,
    which removes any common scale of its input, so ``w_none`` could not change the edge's output and
    alpha_none got gradients only from GroupNorm's epsilon. DARTS's ``none`` says how much an edge
    contributes to its node (FAD Sec. 3.1 uses it as the importance of an edge), so here the block mixes
    the real candidates with weights renormalised over them, and the edge's output is scaled by
    ``1 - w_none`` after ``f_out``. Each real candidate still enters with its softmax weight ``w_k``
    overall (``(1 - w_none) * w_k / (1 - w_none)``), which is what the derivation ranks.
    """

    def __init__(self, c: int, c_prime: int, block: BlockConfig) -> None:
        super().__init__()
        self.f_in = Pointwise(c, c_prime)
        self.block = block.build(c_prime)
        self.f_out = Pointwise(c_prime, c)
        self.none_index = block.candidates.index(NONE) if NONE in block.candidates else None

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        if self.none_index is None:
            return self.f_out(self.block(self.f_in(x), weights))
        keep = 1.0 - weights[self.none_index]
        mask = torch.ones_like(weights)
        mask[self.none_index] = 0.0
        inner = weights * mask / keep.clamp_min(1e-6)
        return keep * self.f_out(self.block(self.f_in(x), inner))


class DerivedEdge(nn.Module):
    """Discrete edge: ``f_out(t(f_in(x)))`` with one real transformation t."""

    def __init__(self, c: int, c_prime: int, transformation: str) -> None:
        super().__init__()
        self.transformation_name = transformation
        self.f_in = Pointwise(c, c_prime)
        self.transformation = build_transformation(transformation, c_prime)
        self.f_out = Pointwise(c_prime, c)

    def forward(self, x: Tensor) -> Tensor:
        return self.f_out(self.transformation(self.f_in(x)))


class SearchCell(nn.Module):
    """Cell with a mixed block on every one of the 6 edges; ``forward(x, weights[6, n_candidates])``."""

    def __init__(self, c: int, c_prime: int, block_kwargs: BlockConfig | dict | None = None) -> None:
        super().__init__()
        block = block_kwargs if isinstance(block_kwargs, BlockConfig) else BlockConfig(**(block_kwargs or {}))
        self.candidates = block.candidates
        self.edges = nn.ModuleDict({edge_key(e): MixedEdge(c, c_prime, block) for e in EDGES})
        self.output = Pointwise(NUM_NODES * c, c)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        if tuple(weights.shape) != (len(EDGES), len(self.candidates)):
            raise ValueError(
                f"cell weights must have shape ({len(EDGES)}, {len(self.candidates)}), "
                f"got {tuple(weights.shape)}"
            )
        nodes = [x]
        for j in range(1, NUM_NODES + 1):
            terms = [self.edges[edge_key((i, j))](nodes[i], weights[EDGES.index((i, j))]) for i in range(j)]
            nodes.append(_add(terms))
        return self.output(torch.cat(nodes[1:], dim=1))


class DerivedCell(nn.Module):
    """Discrete cell: only the chosen edges (``"none"`` = dropped), each with its one transformation."""

    def __init__(self, genotype_cell: Sequence[str], c: int, c_prime: int) -> None:
        super().__init__()
        ops = tuple(genotype_cell)
        if len(ops) != len(EDGES):
            raise ValueError(f"a cell genotype has {len(EDGES)} edges {EDGES}, got {len(ops)}: {ops}")
        self.genotype_cell = ops
        self.edges = nn.ModuleDict(
            {edge_key(e): DerivedEdge(c, c_prime, op) for e, op in zip(EDGES, ops) if op != NONE}
        )
        for j in range(1, NUM_NODES + 1):
            if not any(edge_key((i, j)) in self.edges for i in range(j)):
                raise ValueError(f"node {j} has no incoming edge in cell genotype {ops}")
        self.output = Pointwise(NUM_NODES * c, c)

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for j in range(1, NUM_NODES + 1):
            keys = [(i, edge_key((i, j))) for i in range(j)]
            terms = [self.edges[key](nodes[i]) for i, key in keys if key in self.edges]
            nodes.append(_add(terms))
        return self.output(torch.cat(nodes[1:], dim=1))


class FADModule(nn.Module):
    """The searchable module of Fig. 1: returns ``(regression_features, classification_features)``.

    Searchable when ``genotype_groups`` is ``None`` (``forward(x, weights[2, 6, n])``), derived otherwise
    (one 6-tuple of candidate names per group; ``forward(x)``).
    """

    def __init__(
        self,
        c: int,
        c_prime: int,
        cells_per_group: int = 1,
        block: BlockConfig | None = None,
        genotype_groups: Sequence[Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        if cells_per_group < 1:
            raise ValueError(f"cells_per_group must be >= 1, got {cells_per_group}")
        self.searchable = genotype_groups is None
        if self.searchable:
            block = block or BlockConfig()
            groups = [
                [SearchCell(c, c_prime, block) for _ in range(cells_per_group)] for _ in range(NUM_GROUPS)
            ]
        else:
            if len(genotype_groups) != NUM_GROUPS:
                raise ValueError(f"FAD has {NUM_GROUPS} cell groups, got {len(genotype_groups)} genotypes")
            groups = [[DerivedCell(g, c, c_prime) for _ in range(cells_per_group)] for g in genotype_groups]
        self.groups = nn.ModuleList(nn.ModuleList(cells) for cells in groups)

    def _group(self, g: int, x: Tensor, weights: Tensor | None) -> Tensor:
        for cell in self.groups[g]:
            x = cell(x, weights[g]) if self.searchable else cell(x)
        return x

    def forward(self, x: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.searchable and weights is None:
            raise ValueError("a searchable FAD module needs softmax(alphas): forward(x, weights[2, 6, n])")
        reg = self._group(0, x, weights)
        cls = self._group(1, reg + x, weights)
        return reg, cls


__all__ = [
    "EDGES",
    "NUM_GROUPS",
    "NUM_NODES",
    "DerivedCell",
    "DerivedEdge",
    "FADModule",
    "MixedEdge",
    "Pointwise",
    "SearchCell",
    "edge_key",
]
