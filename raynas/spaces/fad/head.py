"""FAD heads for torchvision's FCOS and RetinaNet, searchable (with alphas) or derived from a genotype.

The FAD module (Fig. 1, :class:`~raynas.spaces.fad.cells.FADModule`) replaces the two 4-conv towers of the
head; the final predictors stay as torchvision builds them (3x3 convs, normal(0, 0.01) weights,
prior-probability bias on the classifier). Box regression (+ centerness for FCOS) reads group 1's output,
classification group 2's (Sec. 3.1 "Classification and regression"). One module serves all pyramid
levels.

Contracts honoured (``torchvision.models.detection``): ``forward(list[Tensor[N, C, H, W]])`` returns
``cls_logits`` [N, HWA, K], ``bbox_regression`` [N, HWA, 4] and, for FCOS, ``bbox_ctrness`` [N, HWA, 1];
``compute_loss(targets, head_outputs, anchors, matched_idxs)`` (the detector computes ``matched_idxs``,
FCOS from ``num_anchors_per_level``, and hands them to the head). The losses are torchvision's own:
``FCOSHead.compute_loss`` and the two ``RetinaNet*Head.compute_loss`` are called on this head (they only
read ``box_coder``, ``_loss_type`` and ``BETWEEN_THRESHOLDS``, which are set here), nothing is copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetRegressionHead

from raynas.registry import ONE_STAGE
from raynas.spaces.fad.cells import EDGES, NUM_GROUPS, FADModule
from raynas.spaces.fad.genotype import FADGenotype, FADSpace
from raynas.spaces.fad.ops import DARTS_PRIMITIVES, DARTS_TRANSFORMATIONS, FAD_TRANSFORMATIONS, NONE
from raynas.spaces.fad.repshare import BlockConfig
from raynas.spaces.fad.searchable import FADSearchable

KINDS = ONE_STAGE  # FAD searches the head of a one-stage detector
DEFAULT_C_PRIME = 96  # Table 3: "Dim. 256 -> 96"
#: cells per group of a derived head that is retrained (the search has one, Sec. 3.1 end; "the cells in
#: each group can be repeated"): two reproduce Table 3's parameters at c' = 96, FCOS's head 4.92 M ->
#: 4.00 M (paper 4.9 -> 4.1), one would give 2.10 M (benchmarks/fad_table3_params.py). A head spec
#: without ``cells_per_group`` keeps one, as every genotype file and checkpoint before it was trained
RETRAIN_CELLS_PER_GROUP = 2


def derived_space(num_groups: int = NUM_GROUPS) -> FADSpace:
    """The space of genotypes a derived head can be built from: any search's candidates (FAD or DARTS ops,
    any stream / RF subset), so that the genotype of every ablation retrains. Two groups for a detection
    head, one for a mask head."""
    return FADSpace(
        candidates=tuple(
            dict.fromkeys((*FAD_TRANSFORMATIONS, *DARTS_TRANSFORMATIONS, *DARTS_PRIMITIVES, NONE))
        ),
        num_groups=num_groups,
    )


def _to_hwa(t: Tensor, per_anchor: int) -> Tensor:
    """(N, A * per_anchor, H, W) -> (N, HWA, per_anchor), torchvision's layout."""
    n, _, h, w = t.shape
    return t.view(n, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, per_anchor)


def _no_block_options(block_kwargs: dict) -> None:
    if block_kwargs:
        raise ValueError(
            f"block options {sorted(block_kwargs)} only apply to the searchable head (genotype=None); "
            "a derived head is fully described by its genotype"
        )


class FADHead(FADSearchable):
    """FCOS / RetinaNet head whose towers are the FAD module.

    Searchable when ``genotype`` is ``None``: owns ``alphas`` [2 groups, 6 edges, n_candidates] (DARTS init
    1e-3 * N(0, 1)); ``arch_parameters()`` is ``[alphas]`` and ``weight_parameters()`` everything else, so
    the two optimizers of first-order DARTS (Sec. 3.2) never share a tensor. ``block_kwargs`` pick the
    block (:class:`~raynas.spaces.fad.repshare.BlockConfig`: ``repshare``, ``streams``, ``rf_max``,
    ``decouple``, ``ops``). Derived when ``genotype`` is an :class:`FADGenotype`: only the chosen
    transformations and edges exist, no alphas. The DARTS methods (``arch_parameters``, ``derive``, ...)
    are :class:`~raynas.spaces.fad.searchable.FADSearchable`'s. ``cells_per_group`` repeats each group's
    cell (one genotype per group, own weights per cell; :data:`RETRAIN_CELLS_PER_GROUP` when retrained).
    """

    num_groups = NUM_GROUPS
    display_name = "FAD head"

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        kind: str = "fcos",
        c_prime: int = DEFAULT_C_PRIME,
        genotype: FADGenotype | None = None,
        cells_per_group: int = 1,
        prior_probability: float = 0.01,
        **block_kwargs,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        if genotype is None:
            block = BlockConfig(**block_kwargs)
            self.candidates: tuple[str, ...] | None = block.candidates
            self.alphas: nn.Parameter | None = nn.Parameter(
                1e-3 * torch.randn(NUM_GROUPS, len(EDGES), len(self.candidates))
            )
            self.module = FADModule(in_channels, c_prime, cells_per_group, block=block)
        else:
            _no_block_options(block_kwargs)
            derived_space().validate(genotype)
            self.candidates = None
            self.alphas = None
            self.module = FADModule(in_channels, c_prime, cells_per_group, genotype_groups=genotype.groups)
        self._genotype = genotype

        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        nn.init.normal_(self.cls_logits.weight, std=0.01)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))
        self.bbox_reg = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        predictors = [self.bbox_reg]
        if kind == "fcos":
            self.bbox_ctrness = nn.Conv2d(in_channels, num_anchors, 3, padding=1)
            predictors.append(self.bbox_ctrness)
            self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True)
        else:
            self.box_coder = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
            self._loss_type = "l1"  # torchvision's RetinaNet v1 default; v2 sets "giou"
            self.BETWEEN_THRESHOLDS = det_utils.Matcher.BETWEEN_THRESHOLDS
        for layer in predictors:
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def genotype(self) -> FADGenotype:
        """The derived architecture (Sec. 3.2): an alias of :meth:`derive`."""
        return self.derive()

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:
        weights = self.arch_weights() if self.searchable else None
        cls_logits, bbox_regression, bbox_ctrness = [], [], []
        for features in x:
            reg_feat, cls_feat = self.module(features, weights)
            cls_logits.append(_to_hwa(self.cls_logits(cls_feat), self.num_classes))
            bbox_regression.append(_to_hwa(self.bbox_reg(reg_feat), 4))
            if self.kind == "fcos":
                bbox_ctrness.append(_to_hwa(self.bbox_ctrness(reg_feat), 1))
        out = {"cls_logits": torch.cat(cls_logits, dim=1)}
        if self.kind == "fcos":
            out["bbox_regression"] = nn.functional.relu(torch.cat(bbox_regression, dim=1))
            out["bbox_ctrness"] = torch.cat(bbox_ctrness, dim=1)
        else:
            out["bbox_regression"] = torch.cat(bbox_regression, dim=1)
        return out

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        if self.kind == "fcos":
            return FCOSHead.compute_loss(self, targets, head_outputs, anchors, matched_idxs)
        cls_loss = RetinaNetClassificationHead.compute_loss(self, targets, head_outputs, matched_idxs)
        box_loss = RetinaNetRegressionHead.compute_loss(self, targets, head_outputs, anchors, matched_idxs)
        return {"classification": cls_loss, "bbox_regression": box_loss}


def fad_head_factory(
    kind: str = "fcos",
    c_prime: int = DEFAULT_C_PRIME,
    genotype: FADGenotype | None = None,
    cells_per_group: int = 1,
    **block_kwargs,
) -> Callable[[int, int, int], FADHead]:
    """A head factory with the contract signature ``(in_channels, num_anchors, num_classes) -> nn.Module``.

    ``genotype=None`` builds the searchable head (``block_kwargs`` choose the block / ablation), a
    :class:`FADGenotype` the derived one. Arguments are checked now, not when the detector is built.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if genotype is None:
        BlockConfig(**block_kwargs)
    else:
        _no_block_options(block_kwargs)

    def build(in_channels: int, num_anchors: int, num_classes: int) -> FADHead:
        return FADHead(
            in_channels,
            num_anchors,
            num_classes,
            kind=kind,
            c_prime=c_prime,
            genotype=genotype,
            cells_per_group=cells_per_group,
            **block_kwargs,
        )

    return build


def head_cost(head: nn.Module, feature_sizes: Sequence[tuple[int, int]], in_channels: int) -> dict[str, int]:
    """Parameters (plain numel sum) and forward FLOPs (``torch.utils.flop_counter``) of a head alone.

    ``feature_sizes`` are the (H, W) of each pyramid level for one image; FLOPs count a multiply-add as 2,
    as FlopCounterMode does. For a searchable head the FLOPs include every candidate.
    """
    params = sum(p.numel() for p in head.parameters())
    device = next(head.parameters()).device
    feats = [torch.zeros(1, in_channels, h, w, device=device) for h, w in feature_sizes]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        head(feats)
    return {"params": params, "flops": int(counter.get_total_flops())}


__all__ = [
    "DEFAULT_C_PRIME",
    "KINDS",
    "RETRAIN_CELLS_PER_GROUP",
    "FADHead",
    "derived_space",
    "fad_head_factory",
    "head_cost",
]
