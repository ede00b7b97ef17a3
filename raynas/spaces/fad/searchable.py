"""The DARTS side of a FAD module, written once for the detection head and the Mask R-CNN mask head.

Both own ``alphas`` [groups, 6 edges, n_candidates] (``None`` when built from a genotype) and honour
:class:`~raynas.spaces.base.DartsSearchable` the same way; only the number of groups (2 for a detection
head, 1 for a mask head) and the name in error messages differ. This class registers no parameter, so the
subclasses' parameter order (and the optimiser state of existing checkpoints) is theirs alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from raynas.spaces.fad.genotype import FADGenotype, FADSpace, derive


class FADSearchable(nn.Module):
    """Base of a FAD module searched by DARTS: subclasses set ``alphas``, ``candidates`` and ``_genotype``
    in ``__init__`` and the class attributes ``num_groups`` and ``display_name``."""

    num_groups: int
    display_name: str
    alphas: nn.Parameter | None
    candidates: tuple[str, ...] | None
    _genotype: FADGenotype | None

    @property
    def searchable(self) -> bool:
        return self.alphas is not None

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas] if self.alphas is not None else []

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the alphas, so the two optimizers of first-order DARTS never share a tensor."""
        return [p for name, p in self.named_parameters() if name != "alphas"]

    def arch_weights(self) -> Tensor:
        """``softmax(alphas)`` over candidates, [groups, 6, n]: the weights of Eq. 2."""
        if self.alphas is None:
            raise RuntimeError(
                f"a derived {self.display_name} has no alphas; build it with genotype=None to search"
            )
        return torch.softmax(self.alphas, dim=-1)

    def derive(self) -> FADGenotype:
        """The derived architecture (Sec. 3.2): :func:`~raynas.spaces.fad.genotype.derive` on the alphas
        (strongest candidate per edge, two edges per node), else the genotype the module was built from."""
        if self.alphas is None:
            return self._genotype
        return derive(self.alphas, self.candidates)

    def search_space(self) -> FADSpace:
        return FADSpace(candidates=self.candidates, num_groups=self.num_groups)

    def arch_penalty(self) -> Tensor | None:
        """FAD's architecture step has no loss of its own (unlike Fair DARTS)."""
        return None
