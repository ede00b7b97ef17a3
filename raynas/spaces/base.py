"""The contract every search space honours, so that searchers stay generic.

Both searchers in ``raynas.search`` (evolution, random) only talk to a space through this protocol:
they never look inside an architecture. An architecture (``Arch``) is an immutable, hashable value
(frozen dataclass or tuple) so that searchers can de-duplicate visited candidates with a set.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:  # annotations only: this module imports no torch at run time
    from torch import Tensor, nn

Arch = TypeVar("Arch")


@runtime_checkable
class SearchSpace(Protocol[Arch]):
    """A discrete architecture space: sampling, variation operators, validation and encodings.

    ``rng`` is always a ``random.Random``: its state pickles, which is what makes a searcher's
    ``save``/``restore`` (and so ``Tuner.restore``) resume with the same future suggestions.
    """

    name: str

    @property
    def size(self) -> int:
        """Number of distinct architectures in the space (without isomorphism reduction)."""

    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random *valid* architecture."""

    def mutate(self, arch: Arch, prob: float, rng: random.Random) -> Arch:
        """Resample every choice independently with probability ``prob`` (0 -> identity)."""

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """A child taking each choice uniformly from ``a`` or ``b``."""

    def validate(self, arch: Arch) -> None:
        """Raise ``ValueError`` naming the bad field when ``arch`` is not in the space."""

    def is_valid(self, arch: Arch) -> bool:
        """``True`` when ``validate`` would not raise."""

    def to_config(self, arch: Arch) -> dict[str, Any]:
        """A flat ``{str: str|int}`` dict (what Tune stores; one readable column per choice)."""

    def from_config(self, config: dict[str, Any]) -> Arch:
        """Inverse of ``to_config``; ignores keys that are not architecture choices."""


@runtime_checkable
class DartsSearchable(Protocol):
    """A module searched by first-order DARTS (Liu et al. 2019): what ``raynas.training.darts`` calls on it.

    Bilevel search: the architecture step moves ``arch_parameters()`` alone (Adam, on the architecture
    data: a held-out half or split), the weight step every other parameter of the detector (SGD, on the
    training data), so the trainer must tell the alphas apart from the weights of whichever module
    (FAD head, FAD mask head, OPANAS neck) is searched. ``isinstance`` checks only that these members
    exist: a module built from a fixed architecture has them too, with ``arch_parameters()`` empty.
    """

    alphas: Tensor | None  # checkpointed each epoch next to the derived architecture
    candidates: tuple[str, ...] | None  # names of the last axis of ``arch_weights()``

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture weights, the only tensors of the architecture optimizer; empty when derived."""

    def arch_weights(self) -> Tensor:
        """The relaxed weights of every candidate (softmax or sigmoid of the alphas), for the heatmaps."""

    def arch_penalty(self) -> Tensor | None:
        """An extra loss of the architecture step only (Fair DARTS's zero-one loss), else ``None``."""

    def derive(self) -> Any:
        """The discrete architecture the alphas pick now, an architecture of ``search_space()``."""

    def search_space(self) -> SearchSpace:
        """The discrete space ``derive()`` lands in (its ``to_config`` is what the run logs and writes)."""


def from_config_strict(space: SearchSpace, config: dict[str, Any], where: str) -> Any:
    """``space.from_config`` for what a user wrote (an architecture file, a neck spec): a key that is not a
    choice of the space (a typo, an edge of a bigger DAG) is an error naming it, not silently ignored."""
    known = set(space.choices()) if hasattr(space, "choices") else None
    unknown = sorted(set(config) - known) if known is not None else []
    if unknown:
        raise ValueError(
            f"{where}: key(s) {unknown} are not choices of the {space.name} space; "
            f"valid keys: {sorted(known)}"
        )
    return space.from_config(config)


def arch_to_json(space: SearchSpace, arch: Any) -> str:
    """JSON text of an architecture (its ``to_config`` form, tagged with the space's name)."""
    return json.dumps({"space": space.name, "arch": space.to_config(arch)}, indent=2, sort_keys=True)


def arch_from_json(space: SearchSpace, text: str) -> Any:
    """Parse and validate JSON written by :func:`arch_to_json`; errors say what to fix."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"architecture JSON is malformed: {err}") from err
    if not isinstance(payload, dict) or "arch" not in payload:
        raise ValueError('architecture JSON must be an object {"space": ..., "arch": {...}}')
    if payload.get("space", space.name) != space.name:
        raise ValueError(f"architecture JSON is for space {payload.get('space')!r}, not {space.name!r}")
    if not isinstance(payload["arch"], dict):
        raise ValueError('architecture JSON field "arch" must be an object of choices')
    arch = from_config_strict(space, payload["arch"], "architecture JSON")
    space.validate(arch)
    return arch
