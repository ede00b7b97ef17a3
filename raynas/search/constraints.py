"""What may be evaluated: a valid architecture that satisfies the user's constraint and is new.

A *constraint* is any callable ``constraint(arch) -> bool`` (``True`` = allowed), for example a
FLOPs or parameter budget of the derived detector (:class:`CostLimit`). It runs in the Tune driver
before a candidate is suggested, so it must be cheap next to one evaluation.

Two users share these rules:

* raynas' own searchers (``EvolutionSearcher``, ``RandomSearcher``) draw candidates with
  :func:`draw_new` / :func:`draw_new_or_raise`: bounded rejection sampling, so a constraint that no
  architecture meets ends in a clear error instead of an endless loop;
* Tune's own searchers, through :mod:`raynas.search.tune_interop`, which checks each of their
  suggestions with :func:`is_admissible`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any, TypeVar

from raynas.spaces.base import SearchSpace

Constraint = Callable[[Any], bool]
Info = TypeVar("Info")


@dataclass(frozen=True)
class CostLimit:
    """The constraint ``cost(arch) <= limit`` (picklable when ``cost`` is), e.g. a FLOPs budget."""

    cost: Callable[[Any], float]
    limit: float

    def __call__(self, arch: Any) -> bool:
        return self.cost(arch) <= self.limit


def is_admissible(space: SearchSpace, arch: Any, constraint: Constraint | None) -> bool:
    """``True`` when ``arch`` is valid in ``space`` and passes ``constraint`` (if any)."""
    return space.is_valid(arch) and (constraint is None or bool(constraint(arch)))


def draw_new(
    make: Callable[[], tuple[Any, Info]],
    space: SearchSpace,
    constraint: Constraint | None,
    taken: Container,
    max_retries: int,
    rejected: Counter | None = None,
) -> tuple[Any, Info] | None:
    """Call ``make() -> (arch, info)`` until ``arch`` is new and admissible; ``None`` after
    ``max_retries`` rejections. ``rejected`` (if given) counts why candidates were refused."""
    rejected = Counter() if rejected is None else rejected
    for _ in range(max_retries):
        arch, info = make()
        if arch in taken:
            rejected["duplicate"] += 1
        elif not space.is_valid(arch):
            rejected["invalid"] += 1
        elif constraint is not None and not constraint(arch):
            rejected["constraint"] += 1
        else:
            return arch, info
    return None


def draw_new_or_raise(
    make: Callable[[], tuple[Any, Info]],
    space: SearchSpace,
    constraint: Constraint | None,
    taken: Container,
    max_retries: int,
) -> tuple[Any, Info]:
    """:func:`draw_new`, raising ``RuntimeError`` that says why when nothing admissible is found."""
    rejected: Counter = Counter()
    drawn = draw_new(make, space, constraint, taken, max_retries, rejected)
    if drawn is None:
        raise RuntimeError(
            f"no new admissible architecture found in space {space.name!r} after {max_retries} "
            f"random draws: {rejected['constraint']} failed the constraint, {rejected['invalid']} were "
            f"invalid, {rejected['duplicate']} had already been suggested ({len(taken)} suggested of "
            f"{space.size} in the space). The constraint is too tight or the space is exhausted: "
            "loosen the constraint, lower the evaluation budget or raise max_retries."
        )
    return drawn
