"""FAD for instance segmentation: Mask R-CNN's mask head with a searchable module (fad-repshare.txt Sec. 3.1,
"FAD for Instance Segmentation"; Sec. 4.2).

The paper: "we replace the conv layers before the deconvolutional layer in the mask head by the proposed
searchable module". torchvision's ``MaskRCNNHeads`` is those four 3x3 convs (256 channels) on the 14x14 RoI
features; :class:`FADMaskHead` takes its place, and torchvision's ``MaskRCNNPredictor`` (the 2x deconvolution
and the per-class 1x1 mask logits) stays. The module is one group of FAD cells (no classification /
regression split: there is one output), so its space is ``13**6`` architectures for the full block. The
cells work at the RoI features' width; a final 1x1 conv + GroupNorm + ReLU gives the 256 channels the
predictor reads (the paper's neck is 256 wide, where that projection is a plain 256 -> 256 layer).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from raynas.spaces.fad.cells import EDGES, DerivedCell, Pointwise, SearchCell
from raynas.spaces.fad.genotype import FADGenotype
from raynas.spaces.fad.head import DEFAULT_C_PRIME, _no_block_options, derived_space
from raynas.spaces.fad.repshare import BlockConfig
from raynas.spaces.fad.searchable import FADSearchable

MASK_HEAD_CHANNELS = 256  # torchvision's MaskRCNNHeads width, what MaskRCNNPredictor reads


class FADMaskHead(FADSearchable):
    """Mask head ``[R, C, 14, 14] -> [R, 256, 14, 14]`` of FAD cells, searchable or derived.

    Searchable when ``genotype`` is ``None``: owns ``alphas`` [1 group, 6 edges, n_candidates] and the
    DARTS methods :class:`~raynas.spaces.fad.head.FADHead` has (``arch_parameters``, ``weight_parameters``,
    ``derive``, ``search_space``, ``arch_penalty``: :class:`~raynas.spaces.fad.searchable.FADSearchable`),
    so the one DARTS trainer searches it. Derived when ``genotype`` is a one-group :class:`FADGenotype`.
    """

    num_groups = 1
    display_name = "FAD mask head"

    def __init__(
        self,
        in_channels: int,
        c_prime: int = DEFAULT_C_PRIME,
        genotype: FADGenotype | None = None,
        cells: int = 1,
        out_channels: int = MASK_HEAD_CHANNELS,
        **block_kwargs,
    ) -> None:
        super().__init__()
        if cells < 1:
            raise ValueError(f"cells must be >= 1, got {cells}")
        if genotype is None:
            block = BlockConfig(**block_kwargs)
            self.candidates: tuple[str, ...] | None = block.candidates
            self.alphas: nn.Parameter | None = nn.Parameter(
                1e-3 * torch.randn(1, len(EDGES), len(self.candidates))
            )
            self.cells = nn.ModuleList(SearchCell(in_channels, c_prime, block) for _ in range(cells))
        else:
            _no_block_options(block_kwargs)
            derived_space(num_groups=1).validate(genotype)
            self.candidates = None
            self.alphas = None
            self.cells = nn.ModuleList(
                DerivedCell(genotype.group1, in_channels, c_prime) for _ in range(cells)
            )
        self._genotype = genotype
        self.project = Pointwise(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        weights = self.arch_weights()[0] if self.alphas is not None else None
        for cell in self.cells:
            x = cell(x, weights) if weights is not None else cell(x)
        return self.project(x)


def fad_mask_head_factory(
    c_prime: int = DEFAULT_C_PRIME, genotype: FADGenotype | None = None, cells: int = 1, **block_kwargs
) -> Callable[[int], FADMaskHead]:
    """A ``mask_head`` factory for ``build_detector("mask_rcnn", mask_head=...)``: ``in_channels -> head``.

    ``genotype=None`` builds the searchable head (``block_kwargs`` choose the block), a one-group
    :class:`FADGenotype` the derived one. Arguments are checked now, not when the detector is built.
    """
    if genotype is None:
        BlockConfig(**block_kwargs)
    else:
        _no_block_options(block_kwargs)
        derived_space(num_groups=1).validate(genotype)

    def build(in_channels: int) -> FADMaskHead:
        return FADMaskHead(in_channels, c_prime=c_prime, genotype=genotype, cells=cells, **block_kwargs)

    return build


__all__ = ["MASK_HEAD_CHANNELS", "FADMaskHead", "fad_mask_head_factory"]
