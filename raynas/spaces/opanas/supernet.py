"""The OPANAS super-net: a dense DAG holding every parameterised path on every edge (Sec. 3.2, Eq. 10-12).

Every edge ``(i, j)`` owns its four parameterised paths (top-down, bottom-up, scale-equalizing,
fusing-splitting) in a ``ModuleDict``; ``skip`` and ``none`` need no weights (Sec. 3.2.1). Node ``j`` is
``x_j = sum_i gamma_ij IP_ij(x_i)`` (Eq. 10) with one learnable edge importance weight ``gamma_ij`` per
edge, initialised to 1 (Sec. 4.1.2; ``learn_gamma=False``, the ablation of Table 5 / Fig. 4, keeps them
fixed at 1 as a buffer); ``skip`` contributes ``gamma_ij * x_i`` and ``none`` nothing. The
output node sums the live intermediate nodes. Only the selected path of each live edge runs, so the
other paths get no gradient. The loss adds ``mu * gamma_l1()`` (Eq. 12, ``mu = 1e-4``).

The active sub-net is chosen explicitly, never through global state::

    with supernet.using(arch):
        out = supernet(features)      # or supernet(features, arch=arch)

Lateral convs, extra levels (``LastLevelP6P7`` before the DAG, ``LastLevelMaxPool`` after it) and the DAG
evaluation are shared with :class:`~raynas.spaces.opanas.fpn.OPAFPN` (:mod:`raynas.spaces.opanas.dag`);
:meth:`OPANASSupernet.extract` turns a sub-net into that discrete neck. The constructor has
the torchvision neck signature, so ``functools.partial(OPANASSupernet, num_nodes=5)`` is a neck factory.
"""

from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from raynas.spaces.opanas.dag import PyramidDAGNeck
from raynas.spaces.opanas.fpn import OPAFPN
from raynas.spaces.opanas.paths import PARAMETERISED_PATHS
from raynas.spaces.opanas.space import OPANASArch, active_edges, edge_key


class OPANASSupernet(PyramidDAGNeck):
    """Weight-sharing neck over the whole OPANAS space with ``num_nodes`` intermediate nodes."""

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None = None,
        num_nodes: int = 5,
        deformable: bool = False,
        norm: str | None = None,
        gamma_init: float = 1.0,
        extra_on: str = "auto",
        learn_gamma: bool = True,
    ) -> None:
        super().__init__(in_channels_list, out_channels, extra_blocks, num_nodes, deformable, norm, extra_on)
        self.edges = self._every_path_on_every_edge()
        gamma = torch.full((self.space.num_edges,), float(gamma_init))
        self.learn_gamma = learn_gamma
        if learn_gamma:
            self.gamma = nn.Parameter(gamma)
        else:
            self.register_buffer("gamma", gamma)
        self._arch: OPANASArch | None = None

    def _path(self, index: int, name: str) -> nn.Module:
        return self.edges[self.space.keys[index]][name]

    @contextlib.contextmanager
    def using(self, arch: OPANASArch) -> Iterator[OPANASSupernet]:
        """Select the sub-net ``arch`` for the forward passes inside the ``with`` block (nests; restores)."""
        self.space.validate(arch)
        previous, self._arch = self._arch, arch
        try:
            yield self
        finally:
            self._arch = previous

    @property
    def active_arch(self) -> OPANASArch | None:
        """The sub-net selected by the innermost :meth:`using`, or ``None``."""
        return self._arch

    def forward(
        self, features: dict[str, Tensor], arch: OPANASArch | None = None
    ) -> OrderedDict[str, Tensor]:
        """Run sub-net ``arch`` (or the one selected with :meth:`using`) on the body's feature maps."""
        if arch is None:
            arch = self._arch
            if arch is None:
                raise RuntimeError(
                    "OPANASSupernet has no active sub-net: run it inside `with supernet.using(arch):` or "
                    "call supernet(features, arch=arch)"
                )
        else:
            self.space.validate(arch)
        return self.run(features, arch)

    def gamma_l1(self) -> Tensor | None:
        """``||gamma||_1`` over all edges, the regulariser of Eq. 12; ``None`` when gamma is not learned."""
        return self.gamma.abs().sum() if self.learn_gamma else None

    def subnet_state_dict(self, arch: OPANASArch) -> OrderedDict[str, Tensor]:
        """The weights of sub-net ``arch`` under :class:`~raynas.spaces.opanas.fpn.OPAFPN`'s key names.

        Laterals, extra blocks and ``gamma`` keep their names; ``edges.e{i}_{j}.{path}.*`` becomes
        ``edges.e{i}_{j}.*`` for the chosen path of every live edge; the other paths are dropped.
        """
        self.space.validate(arch)
        chosen = {
            f"edges.{edge_key(i, j)}.{name}.": f"edges.{edge_key(i, j)}."
            for _, i, j, name in active_edges(arch)
            if name in PARAMETERISED_PATHS
        }
        out: OrderedDict[str, Tensor] = OrderedDict()
        for key, value in self.state_dict().items():
            if not key.startswith("edges."):
                out[key] = value.detach().clone()
                continue
            for prefix, new_prefix in chosen.items():
                if key.startswith(prefix):
                    out[new_prefix + key[len(prefix) :]] = value.detach().clone()
        return out

    def discrete(self, arch: OPANASArch) -> OPAFPN:
        """Sub-net ``arch`` as a stand-alone :class:`OPAFPN` of the super-net's settings, new weights."""
        return OPAFPN(
            arch,
            self.in_channels_list,
            self.out_channels,
            extra_blocks=copy.deepcopy(self.extra_blocks),
            deformable=self.deformable,
            norm=self.norm,
            extra_on=self.extra_on,
        )

    def extract(self, arch: OPANASArch) -> OPAFPN:
        """Sub-net ``arch`` as a stand-alone :class:`OPAFPN` with the super-net's weights and gamma."""
        fpn = self.discrete(arch)
        fpn.load_state_dict(self.subnet_state_dict(arch))
        return fpn.to(self.gamma.device)
