"""The discrete OPA-FPN neck: one fixed architecture of the OPANAS DAG (:mod:`.dag`), the network a
search hands to the full training phase (``{"type": "opa_fpn", "arch": ...}`` neck specs)."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from raynas.spaces.opanas.dag import PyramidDAGNeck
from raynas.spaces.opanas.paths import PARAMETERISED_PATHS
from raynas.spaces.opanas.space import OPANASArch, OPANASSpace, active_edges, edge_key


class OPAFPN(PyramidDAGNeck):
    """A discrete OPA-FPN: only the chosen paths of the live edges hold parameters.

    Edges that are ``none``, ``skip`` or leave a dead node have no module. ``gamma`` (one fixed value per
    edge, a buffer, not trained) defaults to ones: the stand-alone network of the full training phase;
    :meth:`OPANASSupernet.extract <raynas.spaces.opanas.supernet.OPANASSupernet.extract>` copies the
    super-net's learned values so the outputs match it exactly.
    """

    def __init__(
        self,
        arch: OPANASArch,
        in_channels_list: Sequence[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None = None,
        deformable: bool = False,
        norm: str | None = None,
        gamma: Sequence[float] | Tensor | None = None,
        extra_on: str = "auto",
    ) -> None:
        if not isinstance(arch, OPANASArch):
            raise ValueError(f"OPAFPN needs an OPANASArch, got {type(arch).__name__}")
        super().__init__(
            in_channels_list, out_channels, extra_blocks, arch.num_nodes, deformable, norm, extra_on
        )
        self.space.validate(arch)
        self.arch = arch
        self.edges = nn.ModuleDict(
            {
                edge_key(i, j): self._new_path(name)
                for _, i, j, name in active_edges(arch)
                if name in PARAMETERISED_PATHS
            }
        )
        values = (
            torch.ones(self.space.num_edges) if gamma is None else torch.as_tensor(gamma, dtype=torch.float)
        )
        if values.shape != (self.space.num_edges,):
            raise ValueError(
                f"gamma must hold {self.space.num_edges} values (one per edge), got {tuple(values.shape)}"
            )
        self.register_buffer("gamma", values.clone())

    def _path(self, index: int, name: str) -> nn.Module:
        i, j = self.space.pairs[index]
        return self.edges[edge_key(i, j)]

    def forward(self, features: dict[str, Tensor]) -> OrderedDict[str, Tensor]:
        return self.run(features, self.arch)


def opa_fpn_factory(arch: OPANASArch, **kwargs: Any) -> Callable[..., OPAFPN]:
    """A neck factory with the contract signature ``(in_channels_list, out_channels, extra_blocks)``.

    ``kwargs`` go to :class:`OPAFPN` (``deformable``, ``norm``, ``gamma``, ``extra_on``). The result is a
    ``functools.partial``, so it pickles (Ray workers) and can be passed as ``build_detector(neck=...)``.
    """
    OPANASSpace(arch.num_nodes).validate(arch)
    return functools.partial(OPAFPN, arch, **kwargs)
