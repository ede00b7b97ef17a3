"""The OPANAS DAG relaxed for differentiable search: DARTS and Fair DARTS baselines (OPANAS Table 6).

Every edge ``(i, j)`` is a mixed edge over the paths with architecture weights ``alphas``:
``MIX_ij(x) = sum_p w_ijp * IP_p(x)`` (``skip`` contributes ``x``, ``none`` nothing) and every node sums
its incoming mixed edges, so the whole dense DAG runs at every step (4 parameterised paths x 15 edges;
about the cost of one fair super-net step with K=4).

* ``relaxation="softmax"`` (DARTS, Liu et al. 2019): ``w_ij = softmax(alpha_ij)`` over all six paths,
  ``none`` included as in DARTS's primitives. Derivation: the strongest path of each edge, ``none``
  included, because an absent edge is a legal OPANAS choice (DARTS keeps 2 inputs per node instead;
  the OPANAS DAG has no such rule).
* ``relaxation="sigmoid"`` (Fair DARTS, Chu et al. 2020): independent ``w_ijp = sigmoid(alpha_ijp)``
  over the five paths other than ``none`` (a ``none`` weight would scale a zero output and get no
  gradient), plus the zero-one loss ``-w01 * mean((w - 0.5)^2)`` (``w01 = 10``) in the architecture
  step, which pushes every weight to 0 or 1. Derivation: the strongest path of an edge when its weight
  exceeds ``threshold`` (Fair DARTS's sigma_threshold, 0.85), else ``none``.

If derivation leaves the DAG disconnected (every edge out of the input node ``none``), the input edge
with the strongest non-``none`` path takes that path, so the result is always a valid ``OPANASArch``.
This repair is reported (:func:`derive` returns a :class:`Derivation` with ``repaired``): a
repaired Fair DARTS neck says that no sigmoid of an input edge passed the threshold, i.e. possibly that
the relaxation did not converge, not that the search chose that neck.
No edge importance weights here: the alphas already weight every path of every edge.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from raynas.spaces.opanas.dag import PyramidDAGNeck
from raynas.spaces.opanas.paths import PATH_NAMES
from raynas.spaces.opanas.space import OPANASArch, OPANASSpace

RELAXATIONS = ("softmax", "sigmoid")
ZERO_ONE_WEIGHT = 10.0
THRESHOLD = 0.85


class OPANASMixedNeck(PyramidDAGNeck):
    """The searchable dense DAG of a differentiable OPANAS baseline (DARTS or Fair DARTS); a
    :class:`~raynas.spaces.base.DartsSearchable`, so the DARTS trainer that searches FAD heads searches it."""

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None = None,
        num_nodes: int = 5,
        deformable: bool = False,
        norm: str | None = None,
        extra_on: str = "auto",
        relaxation: str = "softmax",
        zero_one_weight: float = ZERO_ONE_WEIGHT,
        threshold: float = THRESHOLD,
    ) -> None:
        if relaxation not in RELAXATIONS:
            raise ValueError(f"relaxation must be one of {RELAXATIONS}, got {relaxation!r}")
        super().__init__(in_channels_list, out_channels, extra_blocks, num_nodes, deformable, norm, extra_on)
        self.relaxation = relaxation
        self.zero_one_weight = zero_one_weight
        self.threshold = threshold
        self.candidates: tuple[str, ...] = (
            PATH_NAMES if relaxation == "softmax" else tuple(p for p in PATH_NAMES if p != "none")
        )
        self.edges = self._every_path_on_every_edge()
        # DARTS's initialisation: small random alphas, so no path starts favoured
        self.alphas = nn.Parameter(1e-3 * torch.randn(self.space.num_edges, len(self.candidates)))

    def _path(self, index: int, name: str) -> nn.Module:
        return self.edges[self.space.keys[index]][name]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas]

    def arch_weights(self) -> Tensor:
        """[num_edges, len(candidates)]: softmax per edge (DARTS) or independent sigmoids (Fair DARTS)."""
        if self.relaxation == "softmax":
            return torch.softmax(self.alphas, dim=-1)
        return torch.sigmoid(self.alphas)

    def arch_penalty(self) -> Tensor | None:
        """Fair DARTS's zero-one loss (added to the architecture step only); ``None`` for DARTS."""
        if self.relaxation == "softmax":
            return None
        return -self.zero_one_weight * ((torch.sigmoid(self.alphas) - 0.5) ** 2).mean()

    def _mixed(self, index: int, weights: Tensor, x: list[Tensor]) -> list[Tensor]:
        out: list[Tensor] | None = None
        for weight, name in zip(weights, self.candidates):
            if name == "none":
                continue
            path_out = x if name == "skip" else self._path(index, name)(x)
            weighted = [weight * level for level in path_out]
            out = weighted if out is None else [a + b for a, b in zip(out, weighted)]
        return out

    def forward(self, features: dict[str, Tensor]) -> OrderedDict[str, Tensor]:
        pyramid, names, body = self.input_pyramid(features)
        weights = self.arch_weights()
        nodes: list[list[Tensor]] = [pyramid]
        for j in range(1, self.space.num_nodes + 1):
            node: list[Tensor] | None = None
            for i in range(j):
                index = self.space.pairs.index((i, j))
                out = self._mixed(index, weights[index], nodes[i])
                node = out if node is None else [a + b for a, b in zip(node, out)]
            nodes.append(node)
        return self.output_node(nodes[1:], body, names)

    def search_space(self) -> OPANASSpace:
        return OPANASSpace(self.space.num_nodes)

    def derive(self) -> OPANASArch:
        """The discrete architecture: the strongest path per edge (see the module docstring)."""
        return derive_arch(
            self.arch_weights().detach().cpu(), self.candidates, self.relaxation, self.threshold
        )


@dataclass(frozen=True)
class Derivation:
    """A derived architecture and how it was reached: ``repaired`` when the rule alone left the DAG
    disconnected and an input edge was forced to its strongest path (for Fair DARTS: no sigmoid of any
    input edge passed the threshold, so the result may only say that the relaxation did not converge);
    ``how`` says so in words for a table's ``derivation`` column."""

    arch: OPANASArch
    repaired: bool
    how: str


def derive(
    weights: Tensor, candidates: Sequence[str], relaxation: str, threshold: float = THRESHOLD
) -> Derivation:
    """The derivation of :meth:`OPANASMixedNeck.derive` on a weight table [num_edges, len(candidates)],
    with whether it needed the repair (see the module docstring)."""
    strongest = weights.argmax(dim=-1).tolist()
    edges = [candidates[c] for c in strongest]
    rule = "argmax"
    if relaxation == "sigmoid":
        passed = [float(w.max()) > threshold for w in weights]
        edges = [name if ok else "none" for name, ok in zip(edges, passed)]
        rule = f"argmax above {threshold} ({sum(passed)}/{len(passed)} edges passed)"
    arch = OPANASArch(tuple(edges))
    space = OPANASSpace(arch.num_nodes)
    if space.is_valid(arch):
        return Derivation(arch, False, rule)
    real = [k for k, name in enumerate(candidates) if name != "none"]
    inputs = space.input_edge_indices()
    best = max(inputs, key=lambda index: float(weights[index, real].max()))
    repaired = list(edges)
    repaired[best] = candidates[real[int(weights[best, real].argmax())]]
    sigmoid = relaxation == "sigmoid"
    why = f"no input edge passed {threshold}" if sigmoid else "every input edge's argmax is none"
    how = f"repaired ({why}; {space.keys[best]} set to {repaired[best]}); {rule}"
    return Derivation(OPANASArch(tuple(repaired)), True, how)


def derive_arch(
    weights: Tensor, candidates: Sequence[str], relaxation: str, threshold: float = THRESHOLD
) -> OPANASArch:
    """:meth:`OPANASMixedNeck.derive` on a weight table [num_edges, len(candidates)]."""
    return derive(weights, candidates, relaxation, threshold).arch
