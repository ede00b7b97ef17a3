"""The one DARTS interface (``raynas.spaces.base.DartsSearchable``): the three searchable modules honour
it, torchvision's own neck and heads do not, and ``searchable_of`` picks the searched module by it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork

from raynas.models.detector import build_detector
from raynas.spaces.base import DartsSearchable
from raynas.spaces.fad import FADHead, FADMaskHead, fad_head_factory, fad_mask_head_factory
from raynas.spaces.opanas.mixed import OPANASMixedNeck
from raynas.training.darts import searchable_of

SEARCHABLE: dict[str, Callable[[], nn.Module]] = {
    "fad_head": lambda: FADHead(16, 1, 3, c_prime=8),
    "fad_mask_head": lambda: FADMaskHead(16, c_prime=8),
    "opanas_darts_neck": lambda: OPANASMixedNeck([8, 8, 8], 8, relaxation="softmax"),
    "opanas_fair_darts_neck": lambda: OPANASMixedNeck([8, 8, 8], 8, relaxation="sigmoid"),
}


@pytest.mark.parametrize("name", list(SEARCHABLE))
def test_each_searchable_module_honours_the_protocol(name: str) -> None:
    torch.manual_seed(0)
    module = SEARCHABLE[name]()
    assert isinstance(module, DartsSearchable)
    assert [id(p) for p in module.arch_parameters()] == [id(module.alphas)]
    assert module.arch_weights().shape[-1] == len(module.candidates)
    module.search_space().validate(module.derive())  # derive() lands in search_space()


PLAIN: dict[str, Callable[[], nn.Module]] = {
    "fpn": lambda: FeaturePyramidNetwork([32, 32, 32], 32),
    "fcos_head": lambda: FCOSHead(32, 1, 3),
    "retinanet_head": lambda: RetinaNetHead(32, 9, 3),
    "mask_rcnn_heads": lambda: MaskRCNNHeads(32, [32, 32, 32, 32], 1),
}


@pytest.mark.parametrize("name", list(PLAIN))
def test_torchvision_neck_and_heads_are_not_searchable(name: str) -> None:
    assert not isinstance(PLAIN[name](), DartsSearchable)


def _detector(kind: str, **parts) -> nn.Module:
    return build_detector(kind, num_classes=3, min_size=64, out_channels=16, **parts)


def test_searchable_of_finds_the_searched_head_mask_head_or_neck() -> None:
    torch.manual_seed(0)
    fcos = _detector("fcos", head=fad_head_factory("fcos", c_prime=8))
    assert searchable_of(fcos) is fcos.head
    mask_rcnn = _detector("mask_rcnn", mask_head=fad_mask_head_factory(c_prime=8))
    assert searchable_of(mask_rcnn) is mask_rcnn.roi_heads.mask_head
    retinanet = _detector("retinanet", neck=lambda c, o, e: OPANASMixedNeck(c, o, e))
    assert searchable_of(retinanet) is retinanet.backbone.neck


def test_searchable_of_refuses_a_detector_with_nothing_to_search() -> None:
    """A derived FAD head has the protocol's members but no alphas: not a module to search."""
    torch.manual_seed(0)
    genotype = FADHead(16, 1, 3, c_prime=8).derive()
    derived = _detector("fcos", head=fad_head_factory("fcos", c_prime=8, genotype=genotype))
    assert isinstance(derived.head, DartsSearchable) and not derived.head.arch_parameters()
    for detector in (derived, _detector("retinanet")):
        with pytest.raises(ValueError, match="no searchable head or neck"):
            searchable_of(detector)
