"""Convolution units and the candidate transformations of a FAD transformation block.

Every searchable edge of FAD (Zhong et al., "Representation Sharing for Fast Object Detector Search and
Beyond", Sec. 3.1) holds a transformation block T on c' channels. Its candidates (Fig. 2, bottom left) come
in two streams, ``std`` (standard 3x3 conv) and ``sep`` (depthwise-separable 3x3 conv), each with six
transformations covering receptive fields (RFs) 3 / 5 / 7 / 9:

====  ================  ==  ==========================================================
t     name suffix       RF  layers (``conv`` is the stream's 3x3 type)
====  ================  ==  ==========================================================
t1    ``3x3``           3   conv
t2    ``3x3x2``         5   conv, conv
t3    ``3x3x3``         7   conv, conv, conv  (the *stem* of RepShare, Sec. 3.2)
t4    ``3x3_dil2``      7   conv, sep-dil2
t5    ``3x3x2_dil2``    9   conv, conv, sep-dil2
t6    ``3x3_dil3``      9   conv, sep-dil3
====  ================  ==  ==========================================================

The dilated convs are always depthwise separable ("the dilated conv layers are depthwise separable",
Sec. 3.1). Together with ``none`` that is 13 candidates per edge. Every conv layer is followed by
GroupNorm + ReLU (Sec. 3.1); a depthwise-separable conv (depthwise 3x3 then pointwise 1x1) counts as one
conv layer, so it gets one GroupNorm + ReLU after the pointwise conv, as in MobileNet's unit treated as a
whole. Each :class:`Unit` produces exactly one *representation* (Sec. 3.2's unit of counting).

``ops="darts"`` gives the Table 2 ablation "DARTS op set, 7 transformations, RFs 5,7,9". Which seven is not
spelled out in the text (Fig. 2 top-left is an image), so this is our reading, documented in
:data:`DARTS_TRANSFORMATIONS`: DARTS's operations (``cnn/operations.py``) minus ``skip_connect`` (excluded
from every count in Table 1) and minus ``sep_conv_7x7`` (its doubled RF of 13 is outside "5,7,9"):
``sep_conv_3x3`` (doubled, RF 5), ``sep_conv_5x5`` (doubled, RF 9), ``dil_conv_3x3`` (RF 5),
``dil_conv_5x5`` (RF 9), ``conv_7x1_1x7`` (RF 7, the only DARTS op with RF 7), ``max_pool_3x3`` and
``avg_pool_3x3`` (RF 3). The pools are kept: without them no DARTS-derived set reaches seven, and the
paper's remark that pooling "was not helpful" (Sec. 3.1) is what this ablation measures. The RF column of
Table 2 lists the conv RFs. Deviation from DARTS: conv -> GroupNorm -> ReLU order (Sec. 3.1) instead of
DARTS's ReLU -> conv -> BatchNorm.

``ops="darts_primitives"`` is the other reading: the seven primitives DARTS actually searches
(``cnn/genotypes.py`` PRIMITIVES besides ``none``: both pools, ``skip_connect``, sep 3x3/5x5, dil 3x3/5x5),
:data:`DARTS_PRIMITIVES`. It has no RF-7 op, so it cannot match Table 2's "RFs 5,7,9"; it is the op set a
DARTS user would expect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

STREAMS: tuple[str, ...] = ("std", "sep")
NONE = "none"


def gn_groups(channels: int) -> int:
    """GroupNorm groups: ``gcd(channels, 32)``.

    32 groups at the paper's widths (c=256, c'=96 or 128, Sec. 4.1 / Table 3) like torchvision's heads, and
    always a divisor of small test widths (8 -> 8 groups, 12 -> 4 groups).
    """
    return math.gcd(channels, 32)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(gn_groups(channels), channels)


class Unit(nn.Module):
    """Marker base: one conv layer (+ GroupNorm + ReLU) or pool, i.e. one representation per forward."""


class StdConv(Unit):
    """Standard ``k x k`` conv (c -> c, stride 1, 'same' padding) + GroupNorm + ReLU."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=pad, dilation=dilation, bias=False)
        self.norm = group_norm(channels)
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class SepConv(Unit):
    """Depthwise ``k x k`` (optionally dilated) + pointwise 1x1 conv + GroupNorm + ReLU (one conv layer)."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.depthwise = nn.Conv2d(
            channels, channels, kernel_size, padding=pad, dilation=dilation, groups=channels, bias=False
        )
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = group_norm(channels)
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.pointwise(self.depthwise(x))))


class FactorizedConv7(Unit):
    """DARTS ``conv_7x1_1x7``: a 1x7 then a 7x1 standard conv, + GroupNorm + ReLU (RF 7)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_1x7 = nn.Conv2d(channels, channels, (1, 7), padding=(0, 3), bias=False)
        self.conv_7x1 = nn.Conv2d(channels, channels, (7, 1), padding=(3, 0), bias=False)
        self.norm = group_norm(channels)
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv_7x1(self.conv_1x7(x))))


class Pool3x3(Unit):
    """DARTS ``max_pool_3x3`` / ``avg_pool_3x3`` at stride 1 (no parameters)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode == "max":
            self.pool: nn.Module = nn.MaxPool2d(3, stride=1, padding=1)
        elif mode == "avg":
            self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        else:
            raise ValueError(f"pool mode must be 'max' or 'avg', got {mode!r}")

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x)


def base_conv(stream: str, channels: int) -> Unit:
    """The stream's 3x3 base conv (Sec. 3.1: the 'conv' in Fig. 2 is standard or depthwise separable)."""
    if stream == "std":
        return StdConv(channels)
    if stream == "sep":
        return SepConv(channels)
    raise ValueError(f"unknown conv stream {stream!r}; expected one of {STREAMS}")


@dataclass(frozen=True)
class FADTransformation:
    """t1..t6 of a stream: ``depth`` base 3x3 convs, then optionally a depthwise-separable dilated conv."""

    stream: str
    depth: int
    dilation: int | None

    @property
    def name(self) -> str:
        base = "3x3" if self.depth == 1 else f"3x3x{self.depth}"
        dil = "" if self.dilation is None else f"_dil{self.dilation}"
        return f"{self.stream}_{base}{dil}"

    @property
    def rf(self) -> int:
        rf = 1 + 2 * self.depth
        return rf if self.dilation is None else rf + 2 * self.dilation


# t1..t6 of Fig. 2 as (depth, dilation); the order is the candidate order inside a stream.
_SHAPES: tuple[tuple[int, int | None], ...] = ((1, None), (2, None), (3, None), (1, 2), (2, 2), (1, 3))

FAD_TRANSFORMATIONS: dict[str, FADTransformation] = {
    t.name: t for t in (FADTransformation(s, d, dil) for s in STREAMS for d, dil in _SHAPES)
}

# DARTS op set adapted for Table 2 (see the module docstring): name -> receptive field.
DARTS_TRANSFORMATIONS: dict[str, int] = {
    "sep_conv_3x3": 5,
    "sep_conv_5x5": 9,
    "dil_conv_3x3": 5,
    "dil_conv_5x5": 9,
    "conv_7x1_1x7": 7,
    "max_pool_3x3": 3,
    "avg_pool_3x3": 3,
}

# the primitives DARTS searches (see the module docstring): name -> receptive field
DARTS_PRIMITIVES: dict[str, int] = {
    "max_pool_3x3": 3,
    "avg_pool_3x3": 3,
    "skip_connect": 1,
    "sep_conv_3x3": 5,
    "sep_conv_5x5": 9,
    "dil_conv_3x3": 5,
    "dil_conv_5x5": 9,
}
OP_SETS = ("fad", "darts", "darts_primitives")

RF_LEVELS: tuple[int, ...] = (3, 5, 7, 9)


def candidate_names(ops: str = "fad", streams: tuple[str, ...] = STREAMS, rf_max: int = 9) -> tuple[str, ...]:
    """The ordered candidates of one block, ``"none"`` last.

    ``ops="fad"``: the stream's t1..t6 with RF <= ``rf_max`` (Table 2: ``rf_max=5`` is Subset 1 with 4
    transformations, ``7`` is Subset 2 with 8, ``9`` the full 12); ``streams`` picks Std. only / Sep. only.
    ``ops="darts"``: the 7 DARTS transformations of Table 2; ``"darts_primitives"``: DARTS's 7 searched
    primitives (``streams``/``rf_max`` must stay at their defaults for both).
    """
    if ops in ("darts", "darts_primitives"):
        if tuple(streams) != STREAMS or rf_max != 9:
            raise ValueError(f"ops={ops!r} is a fixed op set; leave streams and rf_max at their defaults")
        return (*(DARTS_TRANSFORMATIONS if ops == "darts" else DARTS_PRIMITIVES), NONE)
    if ops != "fad":
        raise ValueError(f"unknown op set {ops!r}; expected one of {OP_SETS}")
    if not streams or any(s not in STREAMS for s in streams) or len(set(streams)) != len(streams):
        raise ValueError(f"streams must be a non-empty subset of {STREAMS} without repeats, got {streams!r}")
    if rf_max not in RF_LEVELS[1:]:
        raise ValueError(f"rf_max must be one of {RF_LEVELS[1:]} (Table 2 subsets), got {rf_max!r}")
    names = [t.name for t in FAD_TRANSFORMATIONS.values() if t.stream in streams and t.rf <= rf_max]
    names.sort(key=lambda n: streams.index(FAD_TRANSFORMATIONS[n].stream))
    return (*names, NONE)


def receptive_field(name: str) -> int:
    """RF of a candidate (``none`` has none: 0)."""
    if name == NONE:
        return 0
    if name in FAD_TRANSFORMATIONS:
        return FAD_TRANSFORMATIONS[name].rf
    if name in DARTS_TRANSFORMATIONS:
        return DARTS_TRANSFORMATIONS[name]
    if name in DARTS_PRIMITIVES:
        return DARTS_PRIMITIVES[name]
    raise ValueError(f"unknown transformation {name!r}")


def build_transformation(name: str, channels: int) -> nn.Sequential:
    """A stand-alone transformation (c' -> c', same spatial size): what a derived edge holds.

    The naive (no-RepShare) block is a set of these, each with its own parameters.
    """
    if name in FAD_TRANSFORMATIONS:
        t = FAD_TRANSFORMATIONS[name]
        layers: list[nn.Module] = [base_conv(t.stream, channels) for _ in range(t.depth)]
        if t.dilation is not None:
            layers.append(SepConv(channels, dilation=t.dilation))
        return nn.Sequential(*layers)
    darts: dict[str, list[nn.Module]] = {
        "sep_conv_3x3": [SepConv(channels, 3), SepConv(channels, 3)],  # doubled as in DARTS
        "sep_conv_5x5": [SepConv(channels, 5), SepConv(channels, 5)],
        "dil_conv_3x3": [SepConv(channels, 3, dilation=2)],
        "dil_conv_5x5": [SepConv(channels, 5, dilation=2)],
        "conv_7x1_1x7": [FactorizedConv7(channels)],
        "max_pool_3x3": [Pool3x3("max")],
        "avg_pool_3x3": [Pool3x3("avg")],
        "skip_connect": [nn.Identity()],  # no new representation: not a Unit
    }.get(name)
    if darts is None:
        raise ValueError(
            f"unknown transformation {name!r}; expected one of {sorted(FAD_TRANSFORMATIONS)} "
            f"or {sorted({**DARTS_TRANSFORMATIONS, **DARTS_PRIMITIVES})}"
        )
    return nn.Sequential(*darts)


def count_units(module: nn.Module) -> int:
    """Number of :class:`Unit` modules (= representations a forward computes when each runs once)."""
    return sum(isinstance(m, Unit) for m in module.modules())


def weighted_sum(outputs: list[Tensor | None], weights: Tensor) -> Tensor:
    """Eq. 2: ``sum_k weights[k] * outputs[k]``; ``None`` entries (``none``) add nothing."""
    total: Tensor | None = None
    for w, out in zip(weights, outputs):
        if out is not None:
            total = w * out if total is None else total + w * out
    if total is None:
        raise ValueError("a block needs at least one candidate besides 'none'")
    return total


def check_weights(weights: Tensor, n: int) -> None:
    if weights.dim() != 1 or weights.numel() != n:
        raise ValueError(f"weights must be a vector of {n} candidate weights, got {tuple(weights.shape)}")


__all__ = [
    "DARTS_TRANSFORMATIONS",
    "FAD_TRANSFORMATIONS",
    "NONE",
    "STREAMS",
    "FADTransformation",
    "FactorizedConv7",
    "Pool3x3",
    "SepConv",
    "StdConv",
    "Unit",
    "base_conv",
    "build_transformation",
    "candidate_names",
    "count_units",
    "gn_groups",
    "receptive_field",
]
