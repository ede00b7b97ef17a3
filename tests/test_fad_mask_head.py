"""The FAD mask head (fad-repshare.txt Sec. 3.1 "FAD for Instance Segmentation"): one group of searchable
cells in place of Mask R-CNN's four mask convs, its one-group space, derivation, and Mask R-CNN with it."""

from __future__ import annotations

import random

import pytest
import torch
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

from raynas.models import build_detector
from raynas.spaces.fad import FADGenotype, FADMaskHead, FADSpace, derive, fad_mask_head_factory
from raynas.spaces.fad.ops import NONE

C, C_PRIME = 16, 8
MASK_GENOTYPE = FADGenotype(("std_3x3x3", "sep_3x3_dil3", NONE, "std_3x3", NONE, "sep_3x3"))
SMALL = {"out_channels": 64, "min_size": 96, "max_size": 96}


def test_one_group_space_counts_and_round_trips() -> None:
    space = FADSpace(num_groups=1)
    assert space.size == 13**6 and len(space.choices()) == 6
    assert space.num_derivable == 12 * (1 * 12**2) * (3 * 12**2)  # node 1: 1 edge, nodes 2, 3: 2 of j
    arch = space.sample(random.Random(0))
    assert arch.group2 is None and len(arch.groups) == 1
    space.validate(arch)
    assert space.from_config(space.to_config(arch)) == arch
    assert set(space.to_config(arch)) == {
        k for k in FADSpace().to_config(FADSpace().sample(random.Random(0))) if k.startswith("g1_")
    }
    space.validate(space.mutate(arch, 0.5, random.Random(1)))
    space.validate(space.crossover(arch, space.sample(random.Random(2)), random.Random(3)))
    with pytest.raises(ValueError, match="expected 1 cell group"):
        space.validate(FADSpace().sample(random.Random(0)))
    with pytest.raises(ValueError, match="num_groups"):
        FADSpace(num_groups=3)


def test_searchable_mask_head_shapes_gradients_and_derivation() -> None:
    torch.manual_seed(0)
    head = FADMaskHead(C, c_prime=C_PRIME)
    assert head.alphas.shape == (1, 6, 13)
    x = torch.randn(5, C, 14, 14)
    out = head(x)
    assert out.shape == (5, 256, 14, 14)  # what MaskRCNNPredictor reads
    out.mean().backward()
    assert head.alphas.grad is not None and head.alphas.grad.abs().sum() > 0
    assert {id(p) for p in head.arch_parameters()}.isdisjoint(id(p) for p in head.weight_parameters())
    genotype = head.derive()
    head.search_space().validate(genotype)
    assert genotype.group2 is None and NONE not in (genotype.group1[0],)

    # derivation never picks none and keeps the strongest incoming edges (hand-set alphas)
    candidates = head.candidates
    alphas = torch.zeros(1, 6, len(candidates))
    alphas[0, :, candidates.index(NONE)] = 9.0  # none dominant everywhere: still a real op per kept edge
    alphas[0, 1, candidates.index("sep_3x3")] = 5.0  # node 2: edge 0->2 strongest
    alphas[0, 4, candidates.index("std_3x3")] = 4.0  # node 3: edge 1->3 ...
    alphas[0, 5, candidates.index("std_3x3x2")] = 3.0  # ... and 2->3
    derived = derive(alphas, candidates)
    assert (
        derived.group1[1] == "sep_3x3" and derived.group1[4] == "std_3x3" and derived.group1[5] == "std_3x3x2"
    )
    assert derived.group1[3] == NONE and derived.group1[0] != NONE


def test_derived_mask_head_in_mask_rcnn_trains() -> None:
    torch.manual_seed(0)
    model = build_detector(
        "mask_rcnn",
        "resnet18",
        num_classes=4,
        mask_head=fad_mask_head_factory(C_PRIME, MASK_GENOTYPE),
        **SMALL,
    )
    head = model.roi_heads.mask_head
    assert isinstance(head, FADMaskHead) and not head.searchable
    assert isinstance(model.roi_heads.mask_predictor, MaskRCNNPredictor)
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 6:40, 4:30] = 1
    masks[1, 20:50, 20:60] = 1
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 20.0, 60.0, 50.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks} for _ in images]
    losses = model.train()(images, targets)
    assert torch.isfinite(losses["loss_mask"])
    losses["loss_mask"].backward()
    assert head.project[0].weight.grad is not None
    with pytest.raises(ValueError, match="expected 1 cell group"):
        fad_mask_head_factory(C_PRIME, FADGenotype(MASK_GENOTYPE.group1, MASK_GENOTYPE.group1))
