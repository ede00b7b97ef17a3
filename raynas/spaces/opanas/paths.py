"""The six information paths of OPANAS (Liang et al., CVPR 2021, Sec. 3.1, Eq. 1-6).

Every path maps a feature pyramid ``[P_0, ..., P_{L-1}]`` (finest level first, all with ``channels``
channels; level ``i+1`` is about half the size of level ``i``, odd sizes allowed, e.g. 13x10 -> 7x5)
to a pyramid of exactly the same shapes. The paper writes the levels P2..P5; here they are 0..L-1.

Resizing always targets the exact size of the level it feeds, so odd sizes never break a sum:

* ``U`` (upsample): nearest-neighbour ``F.interpolate(size=target)`` (as torchvision's FPN).
* ``D`` (downsample): ``F.adaptive_max_pool2d(output_size=target)``. For an exact 2x ratio this *is*
  the 2x2/stride-2 max pool of the reference implementation; for odd sizes (13 -> 7) it covers the whole
  input instead of dropping the last row/column, and it never fails on 1-pixel maps.
* The stride-2 convolution ``W_-1`` of the scale-equalizing path computes ``ceil(n/2)``, which is what
  ResNet stages and torchvision's extra blocks produce; any other size is interpolated to the target.

Convolutions (``W`` in Eq. 1-5) are 3x3. The paper uses deformable convolutions everywhere except the
finest level (``W_2`` of Eq. 1), following SEPC's "partial deformable" pyramid convolution; set
``deformable=True`` for that setting. The default ``deformable=False`` uses plain 3x3 convolutions because
deformable convolution is slow on CPU (a documented deviation). A deformable conv's offset branch is
initialised to zero, so it starts as exactly the plain conv with the same weight.

Normalisation and activation: the paper writes the paths as pure convolutions (Eq. 1, 2, 5), and so does
the authors' code, so top-down, bottom-up and fusing-splitting are ``conv -> [GroupNorm]`` with no ReLU
(like torchvision's FPN, which is linear too). The scale-equalizing path *is* SEPC's pyramid convolution,
which ends with an (integrated) norm and a ReLU, so it is ``sum of three convs -> [GroupNorm] -> ReLU``.
``norm="gn"`` adds GroupNorm (32 groups, fewer for narrow layers: see :func:`make_norm`).

``skip`` returns its input and ``none`` returns ``None``: a node sums only the paths that return a
pyramid, so "none" costs nothing and is not a tensor of zeros.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

PATH_NAMES: tuple[str, ...] = (
    "top_down",
    "bottom_up",
    "scale_equalizing",
    "fusing_splitting",
    "skip",
    "none",
)
"""The six information paths (Sec. 3.1), the choices of every edge of the DAG."""

PARAMETERISED_PATHS: tuple[str, ...] = PATH_NAMES[:4]
"""The four paths with weights, indices 0..3 in the order of Eq. 13 (the only ones fair sampling trains)."""

NORMS = (None, "gn")


def upsample(x: Tensor, size: Sequence[int]) -> Tensor:
    """``U``: nearest-neighbour resize to exactly ``size`` (H, W)."""
    return F.interpolate(x, size=tuple(size), mode="nearest")


def downsample(x: Tensor, size: Sequence[int]) -> Tensor:
    """``D``: max-pool resize to exactly ``size`` (2x2/stride-2 max pool when the ratio is exactly 2)."""
    return F.adaptive_max_pool2d(x, output_size=tuple(size))


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """``U`` when ``size`` is larger than ``x``, ``D`` when smaller, nothing when equal."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    if size[0] >= x.shape[-2] and size[1] >= x.shape[-1]:
        return upsample(x, size)
    return downsample(x, size)


def make_norm(channels: int, norm: str | None) -> nn.Module:
    """GroupNorm for ``"gn"``, identity for ``None``.

    32 groups for the usual widths (256, 160, 64, ...); narrower layers get ``gcd(32, channels // 2)``
    groups so every group keeps at least two channels and a 1x1 map (P7 of a small image) still has more
    than one value per group in training mode; an odd width gets ``gcd(32, channels)`` (1) group.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if norm is None:
        return nn.Identity()
    groups = math.gcd(32, channels // 2) if channels > 1 else 1
    if channels % groups:  # an odd width (a width-matched neck): groups must divide it
        groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels)


class Conv3x3(nn.Module):
    """A 3x3 convolution that can run deformable or plain with the same weight.

    With ``deformable=True`` it holds a ``torchvision.ops.DeformConv2d`` and a zero-initialised offset
    conv (so it starts as the plain conv); ``forward(x, deform=False)`` then runs the plain conv with the
    same weight, which is SEPC's "part_deform" trick for weights shared across levels (Eq. 3).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        deformable: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.deformable = deformable
        if deformable:
            self.conv = DeformConv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
            self.offset = nn.Conv2d(in_channels, 2 * 3 * 3, 3, stride=stride, padding=1)
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
            self.offset = None
        nn.init.kaiming_uniform_(self.conv.weight, a=1)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, deform: bool = True) -> Tensor:
        if self.offset is not None and deform:
            return self.conv(x, self.offset(x))
        return F.conv2d(x, self.conv.weight, self.conv.bias, stride=self.stride, padding=1)


class ConvNorm(nn.Module):
    """``W`` of Eq. 1, 2 and 5: a 3x3 (deformable) conv followed by the optional norm."""

    def __init__(self, in_channels: int, out_channels: int, deformable: bool, norm: str | None) -> None:
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels, deformable=deformable, bias=norm is None)
        self.norm = make_norm(out_channels, norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


def _check_levels(levels: Sequence[Tensor], expected: int | None, path: str) -> None:
    if expected is not None and len(levels) != expected:
        raise ValueError(f"{path} path was built for {expected} pyramid levels but got {len(levels)}")
    if len(levels) < 1:
        raise ValueError(f"{path} path needs at least one pyramid level")


class TopDownPath(nn.Module):
    """Eq. 1: ``F_{L-1} = W_{L-1}(P_{L-1})``, ``F_i = W_i(U(F_{i+1}) + P_i)``; one ``W`` per level.

    ``W_0`` (the finest level, ``W_2`` in the paper) is a plain conv; the others are deformable when
    ``deformable=True``.
    """

    def __init__(self, channels: int, num_levels: int, deformable: bool = False, norm: str | None = None):
        super().__init__()
        self.num_levels = num_levels
        self.convs = nn.ModuleList(
            ConvNorm(channels, channels, deformable and level > 0, norm) for level in range(num_levels)
        )

    def forward(self, levels: Sequence[Tensor]) -> list[Tensor]:
        _check_levels(levels, self.num_levels, "top_down")
        out = [self.convs[-1](levels[-1])]
        for i in range(len(levels) - 2, -1, -1):
            out.insert(0, self.convs[i](upsample(out[0], levels[i].shape[-2:]) + levels[i]))
        return out


class BottomUpPath(nn.Module):
    """Eq. 2: ``F_0 = W_0(P_0)``, ``F_i = W_i(D(F_{i-1}) + P_i)``; same conv setting as the top-down path."""

    def __init__(self, channels: int, num_levels: int, deformable: bool = False, norm: str | None = None):
        super().__init__()
        self.num_levels = num_levels
        self.convs = nn.ModuleList(
            ConvNorm(channels, channels, deformable and level > 0, norm) for level in range(num_levels)
        )

    def forward(self, levels: Sequence[Tensor]) -> list[Tensor]:
        _check_levels(levels, self.num_levels, "bottom_up")
        out = [self.convs[0](levels[0])]
        for i in range(1, len(levels)):
            out.append(self.convs[i](downsample(out[-1], levels[i].shape[-2:]) + levels[i]))
        return out


class ScaleEqualizingPath(nn.Module):
    """Eq. 3 (SEPC's pyramid convolution): ``F_i = U(W_1 P_{i+1}) + W_0 P_i + W_-1 P_{i-1}``.

    ``W_1, W_0, W_-1`` are shared across levels (they carry no level index in Eq. 3, as in SEPC);
    ``W_-1`` has stride 2. Neighbours missing at the ends of the pyramid are skipped. As in SEPC with
    ``part_deform``, the three convs run plain for the finest output level and deformable above it
    (when ``deformable=True``). The sum is followed by the optional norm (shared across levels, SEPC's
    integrated norm) and a ReLU.
    """

    def __init__(self, channels: int, num_levels: int, deformable: bool = False, norm: str | None = None):
        super().__init__()
        self.num_levels = num_levels
        self.w_up = Conv3x3(channels, channels, deformable=deformable)
        self.w_same = Conv3x3(channels, channels, deformable=deformable)
        self.w_down = Conv3x3(channels, channels, stride=2, deformable=deformable)
        self.norm = make_norm(channels, norm)

    def forward(self, levels: Sequence[Tensor]) -> list[Tensor]:
        _check_levels(levels, self.num_levels, "scale_equalizing")
        out = []
        for i, level in enumerate(levels):
            deform = i > 0
            size = level.shape[-2:]
            total = self.w_same(level, deform)
            if i + 1 < len(levels):
                total = total + upsample(self.w_up(levels[i + 1], deform), size)
            if i > 0:
                down = self.w_down(levels[i - 1], deform)
                if down.shape[-2:] != size:
                    down = F.interpolate(down, size=tuple(size), mode="nearest")
                total = total + down
            out.append(F.relu(self.norm(total)))
        return out


def fusing_levels(num_levels: int) -> tuple[int, int]:
    """The two levels ``(m_l, m_s)`` where the fusing-splitting path fuses (Eq. 4-6, generalised).

    The pyramid is split into a fine group ``0..m_l`` and a coarse group ``m_s..L-1`` with
    ``m_s = L // 2`` and ``m_l = m_s - 1``: ``alpha_l`` (at level ``m_l``) sums the fine group and
    ``alpha_s`` (at level ``m_s``) the coarse group, every level resized to the fusion level. For L=4
    (P2-P5) this is exactly Eq. 4: ``alpha_l = D(P2) + P3``, ``alpha_s = P4 + U(P5)``. For L=5 (P3-P7)
    it fuses at P4 and P5, the same resolutions as the L=4 case for RetinaNet and the authors' code:
    ``alpha_l = D(P3) + P4``, ``alpha_s = P5 + U(P6) + U(P7)`` (the coarse P6/P7 are tiny, so the
    larger group goes there). L=3 gives ``m_l=0, m_s=1``; L=2 fuses the two levels with each other.
    """
    if num_levels < 2:
        raise ValueError(f"fusing_splitting needs at least 2 pyramid levels, got {num_levels}")
    coarse = num_levels // 2
    return coarse - 1, coarse


class FusingSplittingPath(nn.Module):
    """Eq. 4-6: fuse the fine and coarse halves, mix them by concatenation, split back to every level.

    ``beta_s = W_s(concat(alpha_s, D(alpha_l)))`` at level ``m_s``, ``beta_l = W_l(concat(U(alpha_s),
    alpha_l))`` at level ``m_l`` (see :func:`fusing_levels`); then level ``i <= m_l`` is ``beta_l``
    resized (Eq. 6: ``F_2 = U(beta_l), F_3 = beta_l``) and level ``i >= m_s`` is ``beta_s`` resized
    (``F_4 = beta_s, F_5 = D(beta_s)``). ``W_s`` and ``W_l`` are deformable (paper) when
    ``deformable=True``; they map ``2C -> C`` channels.
    """

    def __init__(self, channels: int, num_levels: int, deformable: bool = False, norm: str | None = None):
        super().__init__()
        self.num_levels = num_levels
        self.fine, self.coarse = fusing_levels(num_levels)
        self.w_s = ConvNorm(2 * channels, channels, deformable, norm)
        self.w_l = ConvNorm(2 * channels, channels, deformable, norm)

    def forward(self, levels: Sequence[Tensor]) -> list[Tensor]:
        _check_levels(levels, self.num_levels, "fusing_splitting")
        sizes = [level.shape[-2:] for level in levels]
        size_l, size_s = sizes[self.fine], sizes[self.coarse]
        alpha_l = torch.stack([resize(levels[i], size_l) for i in range(self.fine + 1)]).sum(0)
        alpha_s = torch.stack([resize(levels[i], size_s) for i in range(self.coarse, len(levels))]).sum(0)
        beta_s = self.w_s(torch.cat([alpha_s, downsample(alpha_l, size_s)], dim=1))
        beta_l = self.w_l(torch.cat([upsample(alpha_s, size_l), alpha_l], dim=1))
        return [resize(beta_l if i <= self.fine else beta_s, size) for i, size in enumerate(sizes)]


class SkipPath(nn.Module):
    """Skip-connect (Sec. 3.1): identity mapping, no parameters."""

    def forward(self, levels: Sequence[Tensor]) -> list[Tensor]:
        return list(levels)


class NonePath(nn.Module):
    """ "none" (Sec. 3.1): the edge is removed. Returns ``None``, which a DAG node skips in its sum."""

    def forward(self, levels: Sequence[Tensor]) -> None:
        return None


_PATH_CLASSES: dict[str, type[nn.Module]] = {
    "top_down": TopDownPath,
    "bottom_up": BottomUpPath,
    "scale_equalizing": ScaleEqualizingPath,
    "fusing_splitting": FusingSplittingPath,
}


def build_path(
    name: str, channels: int, num_levels: int, deformable: bool = False, norm: str | None = None
) -> nn.Module:
    """The information path called ``name`` (one of :data:`PATH_NAMES`) for a ``num_levels`` pyramid."""
    if name == "skip":
        return SkipPath()
    if name == "none":
        return NonePath()
    if name not in _PATH_CLASSES:
        raise ValueError(f"unknown information path {name!r}; valid paths: {', '.join(PATH_NAMES)}")
    return _PATH_CLASSES[name](channels, num_levels, deformable=deformable, norm=norm)
