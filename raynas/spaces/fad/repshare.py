"""Transformation blocks: the naive mixed block and RepShare (Sec. 3.2, Fig. 2 right, Eq. 2).

Both blocks take the candidate weights as an argument, DARTS-style (``forward(x, weights)`` with
``weights = softmax(alpha)`` over the block's candidates, ``none`` last): the alphas live in the head, so
they can never end up in the weight optimizer. Output = ``sum_k weights[k] * t_k(x)`` (Eq. 2); ``none``
takes a softmax weight but adds nothing.

* :class:`NaiveBlock` computes every transformation separately (each with its own parameters):
  1+2+3+2+3+2 = 13 representations per stream, 26 for the full block (Sec. 3.2 "from 26 to 12").
* :class:`RepShareBlock` computes the stem t3 once per stream (p1, p2, p3) and branches every transformation
  from it: t1 = p1, t2 = p2, t3 = p3, t4 = dil2(p1), t5 = dil2(p2), t6 = dil3(p1): 3 + 3 = 6 representations
  per stream, 12 in all. With ``decouple=True`` a function H (1x1 conv + ReLU, Sec. 3.2 "Decoupling with
  extra functions") sits between each *shared* representation and the transformation output that is that
  representation: t1 = H1(p1), t2 = H2(p2). H outputs are not counted as representations (the paper's 12
  excludes them). "Shared" is decided structurally: p_d is shared when another conv of the block reads it.
  In the full block and Subset 2 that is p1 and p2 (2 H per stream, as in the paper); in Subset 1
  (``rf_max=5``, no t3) p2 feeds nothing else, so only t1 is decoupled.

Each RepShare candidate output *is* one real transformation: the path stem[:depth] (+ dilated branch) is
exactly the layer stack of that transformation (Fig. 2 top-right). :data:`REPRESENTATION_TO_TRANSFORMATION`
makes this explicit (Sec. 3.2 end: representations "should then be mapped to the corresponding actual
transformations in the derived architecture"); the derived transformation does not carry H.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from raynas.spaces.fad.ops import (
    FAD_TRANSFORMATIONS,
    NONE,
    STREAMS,
    SepConv,
    Unit,
    base_conv,
    build_transformation,
    candidate_names,
    check_weights,
    count_units,
    receptive_field,
    weighted_sum,
)


def representation_name(transformation: str) -> str:
    """The RepShare representation that plays ``transformation``: ``std:p2``, ``sep:dil3(p1)``, ..."""
    t = FAD_TRANSFORMATIONS[transformation]
    rep = f"p{t.depth}"
    return f"{t.stream}:{rep}" if t.dilation is None else f"{t.stream}:dil{t.dilation}({rep})"


REPRESENTATION_TO_TRANSFORMATION: dict[str, str] = {
    representation_name(name): name for name in FAD_TRANSFORMATIONS
}


class Decouple(nn.Module):
    """H of Sec. 3.2: a standard 1x1 conv (with bias, no norm) + ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


class TransformationBlock(nn.Module):
    """Shared interface: ``candidates`` (``none`` last), RFs, representation count, ``forward(x, w)``."""

    candidates: tuple[str, ...]

    @property
    def receptive_fields(self) -> dict[str, int]:
        return {name: receptive_field(name) for name in self.candidates}

    @property
    def representations_per_forward(self) -> int:
        """Representations one forward computes: every :class:`Unit` runs exactly once per forward."""
        return count_units(self)


class NaiveBlock(TransformationBlock):
    """Mixed block without sharing: each candidate is a separate :func:`build_transformation` stack."""

    def __init__(
        self, channels: int, streams: tuple[str, ...] = STREAMS, rf_max: int = 9, ops: str = "fad"
    ) -> None:
        super().__init__()
        self.candidates = candidate_names(ops, tuple(streams), rf_max)
        self.transformations = nn.ModuleDict(
            {name: build_transformation(name, channels) for name in self.candidates if name != NONE}
        )

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        check_weights(weights, len(self.candidates))
        outputs = [None if n == NONE else self.transformations[n](x) for n in self.candidates]
        return weighted_sum(outputs, weights)


class RepShareBlock(TransformationBlock):
    """Representation-sharing block (Fig. 2 bottom right) with optional decoupling H."""

    def __init__(
        self,
        channels: int,
        streams: tuple[str, ...] = STREAMS,
        rf_max: int = 9,
        decouple: bool = True,
    ) -> None:
        super().__init__()
        self.candidates = candidate_names("fad", tuple(streams), rf_max)
        self.streams = tuple(streams)
        self.decouple = decouple
        kept = [FAD_TRANSFORMATIONS[n] for n in self.candidates if n != NONE]
        self.stems = nn.ModuleDict()
        self.branches = nn.ModuleDict()
        self.decouplers = nn.ModuleDict()
        for stream in self.streams:
            mine = [t for t in kept if t.stream == stream]
            depth = max(t.depth for t in mine)
            self.stems[stream] = nn.ModuleList(base_conv(stream, channels) for _ in range(depth))
            read_by_branch = {t.depth for t in mine if t.dilation is not None}
            for t in mine:
                if t.dilation is not None:
                    self.branches[t.name] = SepConv(channels, dilation=t.dilation)
                elif decouple and (t.depth < depth or t.depth in read_by_branch):
                    self.decouplers[t.name] = Decouple(channels)

    def path(self, name: str) -> list[Unit]:
        """The units whose composition computes candidate ``name``'s representation (H excluded)."""
        t = FAD_TRANSFORMATIONS[name]
        units: list[Unit] = list(self.stems[t.stream][: t.depth])
        if t.dilation is not None:
            units.append(self.branches[name])
        return units

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        check_weights(weights, len(self.candidates))
        stem_reps: dict[str, list[Tensor]] = {}
        for stream in self.streams:
            h, reps = x, []
            for unit in self.stems[stream]:
                h = unit(h)
                reps.append(h)
            stem_reps[stream] = reps
        outputs: list[Tensor | None] = []
        for name in self.candidates:
            if name == NONE:
                outputs.append(None)
                continue
            t = FAD_TRANSFORMATIONS[name]
            p = stem_reps[t.stream][t.depth - 1]
            if t.dilation is not None:
                p = self.branches[name](p)
            elif name in self.decouplers:
                p = self.decouplers[name](p)
            outputs.append(p)
        return weighted_sum(outputs, weights)


@dataclass(frozen=True)
class BlockConfig:
    """Which block an edge holds; the ablations of Table 2 are switches here.

    ``repshare=False`` is the naive block ("RepShare ✗"), ``decouple=False`` "w/o decouple" (RepShare only:
    the naive block shares nothing), ``streams=("std",)`` / ``("sep",)`` "Std. only" / "Sep. only",
    ``rf_max=5`` / ``7`` Subset 1 / 2, ``ops="darts"`` the DARTS op set (naive block only, as in Table 2:
    those ops have no common stem to share).
    """

    repshare: bool = True
    streams: tuple[str, ...] = STREAMS
    rf_max: int = 9
    decouple: bool = True
    ops: str = "fad"

    def __post_init__(self) -> None:
        object.__setattr__(self, "streams", tuple(self.streams))
        if self.repshare and self.ops != "fad":
            raise ValueError(
                f"ops={self.ops!r} has no shared stem, RepShare does not apply; use repshare=False "
                "(Table 2 runs the DARTS op set without RepShare)"
            )
        candidate_names(self.ops, self.streams, self.rf_max)

    @property
    def candidates(self) -> tuple[str, ...]:
        return candidate_names(self.ops, self.streams, self.rf_max)

    def build(self, channels: int) -> TransformationBlock:
        if self.repshare:
            return RepShareBlock(channels, self.streams, self.rf_max, self.decouple)
        return NaiveBlock(channels, self.streams, self.rf_max, self.ops)


__all__ = [
    "REPRESENTATION_TO_TRANSFORMATION",
    "BlockConfig",
    "Decouple",
    "NaiveBlock",
    "RepShareBlock",
    "TransformationBlock",
    "representation_name",
]
