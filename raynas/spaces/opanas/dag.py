"""The OPANAS DAG neck every OPANAS neck shares: the discrete OPA-FPN (:mod:`.fpn`), the super-net
(:mod:`.supernet`) and the DARTS relaxation (:mod:`.mixed`) subclass :class:`PyramidDAGNeck`.

All three follow torchvision's neck contract (``FeaturePyramidNetwork(in_channels_list, out_channels,
extra_blocks)``): they take the backbone body's ``OrderedDict`` ``{"0": C_a, "1": ..., ...}`` and return an
``OrderedDict`` of ``out_channels`` maps named like torchvision's FPN (the body's keys, then ``"p6", "p7"``
or ``"pool"``), with ``.out_channels`` set.

Input node ``P`` (Sec. 3.2): 1x1 lateral convs bring every body level to ``out_channels``.

Extra levels. Where an extra block goes depends on whether it learns:

* a *parameterised* block (torchvision ``LastLevelP6P7``, RetinaNet/FCOS) extends the input pyramid
  **before** the DAG, so the search runs on all detection levels (P3-P7, five levels; the authors'
  RetinaNet code likewise builds P6 from the laterals before its paths, but runs them on four levels);
* a *parameter-free* block (``LastLevelMaxPool``, Faster R-CNN) is applied to the **output**: the DAG
  runs on P2-P5 (the paper's setting, Fig. 3) and "pool" subsamples the final P5.

``extra_on="input" | "output"`` overrides this rule. Because the paths need the number of levels when
they are built, a block of unknown type is run once at construction on tiny zero maps (in eval mode,
without gradients) to count the levels it adds.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from raynas.spaces.opanas.paths import PARAMETERISED_PATHS, build_path
from raynas.spaces.opanas.space import OPANASArch, OPANASSpace, active_edges, edge_key

EXTRA_ON = ("auto", "input", "output")


def _extra_level_count(block: ExtraFPNBlock, in_channels_list: Sequence[int], out_channels: int) -> int:
    """How many levels ``block`` appends (2 for ``LastLevelP6P7``, 1 for ``LastLevelMaxPool``)."""
    if isinstance(block, LastLevelP6P7):
        return 2
    if isinstance(block, LastLevelMaxPool):
        return 1
    sizes = [2 ** (len(in_channels_list) - k + 1) for k in range(len(in_channels_list))]
    p = [torch.zeros(1, out_channels, s, s) for s in sizes]
    c = [torch.zeros(1, ch, s, s) for ch, s in zip(in_channels_list, sizes)]
    was_training = block.training
    block.eval()
    try:
        with torch.no_grad():
            _, names = block(list(p), c, [str(k) for k in range(len(p))])
    finally:
        block.train(was_training)
    return len(names) - len(p)


class PyramidDAGNeck(nn.Module, abc.ABC):
    """Lateral convs, extra-level placement and the DAG evaluation (Eq. 10) shared by both necks.

    Subclasses provide ``_path(index, name)`` (the module of edge ``index`` for path ``name``) and the
    per-edge weights ``gamma`` (a tensor of ``num_edges`` values).
    """

    gamma: Tensor

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None,
        num_nodes: int,
        deformable: bool,
        norm: str | None,
        extra_on: str,
    ) -> None:
        super().__init__()
        if not in_channels_list or any(c <= 0 for c in in_channels_list):
            raise ValueError(
                f"in_channels_list must be non-empty positive channel counts, got {in_channels_list}"
            )
        if extra_on not in EXTRA_ON:
            raise ValueError(f"extra_on must be one of {EXTRA_ON}, got {extra_on!r}")
        self.space = OPANASSpace(num_nodes)
        self.in_channels_list = list(in_channels_list)
        self.out_channels = out_channels
        self.deformable = deformable
        self.norm = norm
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels_list)
        for conv in self.lateral:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self.extra_blocks = extra_blocks
        if extra_on == "auto" and extra_blocks is not None:
            extra_on = "input" if any(True for _ in extra_blocks.parameters()) else "output"
        self.extra_on = extra_on
        self.num_levels = len(in_channels_list)
        if extra_blocks is not None and extra_on == "input":
            self.num_levels += _extra_level_count(extra_blocks, in_channels_list, out_channels)

    @abc.abstractmethod
    def _path(self, index: int, name: str) -> nn.Module:
        """The module that runs path ``name`` on edge ``index``."""

    def _new_path(self, name: str) -> nn.Module:
        return build_path(name, self.out_channels, self.num_levels, self.deformable, self.norm)

    def _every_path_on_every_edge(self) -> nn.ModuleDict:
        """``edges[e{i}_{j}][path]`` for the four parameterised paths of every edge: the weights of the
        super-net and of the DARTS relaxation (both run any path on any edge)."""
        return nn.ModuleDict(
            {
                edge_key(i, j): nn.ModuleDict({name: self._new_path(name) for name in PARAMETERISED_PATHS})
                for i, j in self.space.pairs
            }
        )

    def input_pyramid(self, features: dict[str, Tensor]) -> tuple[list[Tensor], list[str], list[Tensor]]:
        """Input node ``P``: laterals (and a parameterised extra block); returns pyramid, names, body."""
        if len(features) != len(self.lateral):
            raise ValueError(
                f"neck was built for {len(self.lateral)} backbone levels but got {len(features)} "
                f"({list(features)})"
            )
        names = list(features.keys())
        body = list(features.values())
        pyramid = [conv(x) for conv, x in zip(self.lateral, body)]
        if self.extra_blocks is not None and self.extra_on == "input":
            pyramid, names = self.extra_blocks(pyramid, body, names)
        return pyramid, names, body

    def output_node(
        self, live: list[list[Tensor]], body: list[Tensor], names: list[str]
    ) -> OrderedDict[str, Tensor]:
        """Output node ``O``: the sum of the live intermediate nodes, then a parameter-free extra block."""
        outputs = [sum(levels[1:], levels[0]) for levels in zip(*live)]
        if self.extra_blocks is not None and self.extra_on == "output":
            outputs, names = self.extra_blocks(outputs, body, names)
        return OrderedDict(zip(names, outputs))

    def run(self, features: dict[str, Tensor], arch: OPANASArch) -> OrderedDict[str, Tensor]:
        """Input pyramid -> live DAG nodes (Eq. 10) -> output node O (sum of live nodes) -> extra levels."""
        pyramid, names, body = self.input_pyramid(features)
        nodes: list[list[Tensor] | None] = [pyramid] + [None] * self.space.num_nodes
        for k, i, j, name in active_edges(arch):
            source = nodes[i]  # live: active_edges only lists edges leaving live nodes
            out = source if name == "skip" else self._path(k, name)(source)
            weighted = [self.gamma[k] * level for level in out]
            nodes[j] = weighted if nodes[j] is None else [a + b for a, b in zip(nodes[j], weighted)]
        return self.output_node([node for node in nodes[1:] if node is not None], body, names)
