"""FAD heads inside torchvision's FCOS and RetinaNet: contracts, training steps, eval, search vs derived."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator

from raynas.spaces.fad import (
    EDGES,
    FADGenotype,
    FADHead,
    FADSpace,
    build_transformation,
    candidate_names,
    fad_head_factory,
    head_cost,
)
from raynas.spaces.fad.cells import DerivedEdge, FADModule, SearchCell
from raynas.spaces.fad.ops import NONE, Unit

C, C_PRIME, NUM_CLASSES, IMAGE = 16, 8, 3, 32
GENOTYPE = FADGenotype(
    ("std_3x3x3", "sep_3x3_dil3", "std_3x3", "std_3x3x2_dil2", NONE, "sep_3x3"),
    ("sep_3x3x2", "std_3x3_dil2", "sep_3x3x3", NONE, "std_3x3x2", "sep_3x3x2_dil2"),
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyBackbone(nn.Module):
    """Two levels, strides 4 and 8, ``out_channels`` set: what torchvision's detectors expect."""

    def __init__(self, channels: int = C) -> None:
        super().__init__()
        self.out_channels = channels
        self.c1 = nn.Conv2d(3, channels, 3, stride=4, padding=1)
        self.c2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        a = self.c1(x)
        return OrderedDict([("0", a), ("1", self.c2(a))])


def _detector(kind: str, head_factory) -> nn.Module:
    common = {"min_size": IMAGE, "max_size": IMAGE, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}
    if kind == "fcos":
        anchors = AnchorGenerator(((4,), (8,)), ((1.0,), (1.0,)))
        head = head_factory(C, 1, NUM_CLASSES)
        return FCOS(TinyBackbone(), NUM_CLASSES, anchor_generator=anchors, head=head, **common)
    anchors = AnchorGenerator(((8,), (16,)), ((0.5, 1.0, 2.0),) * 2)
    head = head_factory(C, 3, NUM_CLASSES)
    return RetinaNet(TinyBackbone(), NUM_CLASSES, anchor_generator=anchors, head=head, **common)


def _batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, IMAGE, IMAGE, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 20.0, 22.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[10.0, 2.0, 30.0, 16.0], [2.0, 18.0, 12.0, 30.0]]),
            "labels": torch.tensor([2, 1]),
        },
    ]
    return images, targets


def _train(model: nn.Module, steps: int) -> list[float]:
    head = model.head
    params = [*head.weight_parameters(), *model.backbone.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    images, targets = _batch()
    model.train()
    losses = []
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("kind", ["fcos", "retinanet"])
@pytest.mark.parametrize("genotype", [None, GENOTYPE], ids=["searchable", "derived"])
def test_head_trains_and_evaluates_in_torchvision_detector(kind, genotype):
    torch.manual_seed(0)
    model = _detector(kind, fad_head_factory(kind, c_prime=C_PRIME, genotype=genotype))
    alphas_before = [a.detach().clone() for a in model.head.arch_parameters()]
    losses = _train(model, steps=4)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses
    for before, after in zip(alphas_before, model.head.arch_parameters()):
        assert torch.equal(before, after)  # alphas are not in the weight optimizer
        assert after.grad is not None  # ... but the detection loss does reach them
    model.eval()
    with torch.no_grad():
        detections = model(_batch()[0])
    assert len(detections) == 2
    for det in detections:
        assert set(det) == {"boxes", "scores", "labels"} and det["boxes"].shape[-1] == 4


@pytest.mark.parametrize(("kind", "anchors"), [("fcos", 1), ("retinanet", 3)])
def test_head_output_contract(kind, anchors):
    head = FADHead(C, anchors, NUM_CLASSES, kind=kind, c_prime=C_PRIME)
    feats = [torch.randn(2, C, 8, 8), torch.randn(2, C, 4, 4)]
    out = head(feats)
    hwa = (64 + 16) * anchors
    assert out["cls_logits"].shape == (2, hwa, NUM_CLASSES)
    assert out["bbox_regression"].shape == (2, hwa, 4)
    if kind == "fcos":
        assert out["bbox_ctrness"].shape == (2, hwa, 1)
        assert (out["bbox_regression"] >= 0).all()  # FCOS distances go through ReLU, as torchvision does
    else:
        assert "bbox_ctrness" not in out
    assert head.cls_logits.out_channels == anchors * NUM_CLASSES
    assert torch.allclose(head.cls_logits.bias, torch.full_like(head.cls_logits.bias, -4.59512), atol=1e-4)


def test_arch_and_weight_parameters_are_disjoint_and_cover_everything():
    head = FADHead(C, 1, NUM_CLASSES, c_prime=C_PRIME)
    arch = {id(p) for p in head.arch_parameters()}
    weights = {id(p) for p in head.weight_parameters()}
    assert arch.isdisjoint(weights)
    assert arch | weights == {id(p) for p in head.parameters()}
    assert head.alphas.shape == (2, len(EDGES), 13)
    assert head.arch_weights().sum(-1).allclose(torch.ones(2, 6))
    derived = FADHead(C, 1, NUM_CLASSES, c_prime=C_PRIME, genotype=GENOTYPE)
    assert derived.arch_parameters() == []
    assert len(derived.weight_parameters()) == len(list(derived.parameters()))
    assert derived.genotype() == GENOTYPE


def test_derived_head_has_only_the_chosen_transformations_and_fewer_params():
    searchable = FADHead(C, 1, NUM_CLASSES, c_prime=C_PRIME)
    derived = FADHead(C, 1, NUM_CLASSES, c_prime=C_PRIME, genotype=GENOTYPE)
    n_search = sum(p.numel() for p in searchable.parameters())
    n_derived = sum(p.numel() for p in derived.parameters())
    assert n_derived < n_search
    edges = [m for m in derived.modules() if isinstance(m, DerivedEdge)]
    chosen = [op for cell in GENOTYPE.groups for op in cell if op != NONE]
    assert sorted(e.transformation_name for e in edges) == sorted(chosen)
    units = sum(isinstance(m, Unit) for m in derived.modules())
    assert units == sum(
        sum(isinstance(m, Unit) for m in build_transformation(op, C_PRIME).modules()) for op in chosen
    )
    cost_s = head_cost(searchable, [(8, 8), (4, 4)], C)
    cost_d = head_cost(derived, [(8, 8), (4, 4)], C)
    assert cost_d["params"] == n_derived and 0 < cost_d["flops"] < cost_s["flops"]


def test_searchable_head_derives_a_valid_genotype_and_rebuilds_it():
    head = FADHead(C, 1, NUM_CLASSES, c_prime=C_PRIME)
    with torch.no_grad():
        head.alphas.normal_()
    genotype = head.genotype()
    FADSpace().validate(genotype)
    rebuilt = fad_head_factory("fcos", c_prime=C_PRIME, genotype=genotype)(C, 1, NUM_CLASSES)
    assert rebuilt.genotype() == genotype and not rebuilt.searchable


@pytest.mark.parametrize(
    "block_kwargs",
    [
        {"repshare": False},
        {"decouple": False},
        {"streams": ("std",)},
        {"rf_max": 5},
        {"repshare": False, "ops": "darts"},
    ],
)
def test_ablation_heads_build_and_run(block_kwargs):
    head = fad_head_factory("fcos", c_prime=C_PRIME, **block_kwargs)(C, 1, NUM_CLASSES)
    ops = block_kwargs.get("ops", "fad")
    n = len(candidate_names(ops, block_kwargs.get("streams", ("std", "sep")), block_kwargs.get("rf_max", 9)))
    assert head.alphas.shape == (2, 6, n)
    out = head([torch.randn(1, C, 8, 8)])
    assert out["cls_logits"].shape == (1, 64, NUM_CLASSES)
    derived = fad_head_factory("fcos", c_prime=C_PRIME, genotype=head.genotype())(C, 1, NUM_CLASSES)
    assert set(derived.genotype().group1 + derived.genotype().group2) <= set(head.candidates)


def test_alpha_step_moves_only_alphas():
    head = FADHead(C, 1, NUM_CLASSES, c_prime=C_PRIME)
    weights_before = [p.detach().clone() for p in head.weight_parameters()]
    alphas_before = head.alphas.detach().clone()
    arch_opt = torch.optim.Adam(head.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    head([torch.randn(1, C, 8, 8)])["cls_logits"].sigmoid().mean().backward()
    arch_opt.step()
    assert not torch.equal(head.alphas, alphas_before)
    assert all(torch.equal(a, b) for a, b in zip(weights_before, head.weight_parameters()))


def test_module_groups_shortcut_and_cells_per_group():
    module = FADModule(C, C_PRIME, cells_per_group=2)
    assert [len(g) for g in module.groups] == [2, 2]
    assert all(isinstance(c, SearchCell) for g in module.groups for c in g)
    weights = torch.softmax(torch.randn(2, 6, 13), -1)
    x = torch.randn(1, C, 8, 8)
    reg, cls = module(x, weights)
    expected_cls = module.groups[1][1](module.groups[1][0](reg + x, weights[1]), weights[1])
    assert torch.allclose(cls, expected_cls, atol=1e-6)  # group 2 reads group1(x) + x
    with pytest.raises(ValueError, match="softmax"):
        module(x)
    with pytest.raises(ValueError, match="shape"):
        module(x, weights[:, :5])


def test_errors():
    with pytest.raises(ValueError, match="kind"):
        fad_head_factory("yolo")
    with pytest.raises(ValueError, match="only apply to the searchable head"):
        fad_head_factory(genotype=GENOTYPE, decouple=False)
    with pytest.raises(ValueError, match="node 1: no incoming edge"):
        FADHead(C, 1, NUM_CLASSES, genotype=FADGenotype((NONE,) * 6, GENOTYPE.group2))
    with pytest.raises(ValueError, match="expected 2 cell group.*a mask head"):
        FADHead(C, 1, NUM_CLASSES, genotype=FADGenotype(GENOTYPE.group1))


def test_a_darts_ops_genotype_retrains_through_the_config_builder():
    from raynas.models.build import build_model
    from raynas.models.config import ModelConfig

    darts_ops = candidate_names(ops="darts")
    genotype = FADSpace(candidates=darts_ops).sample(random.Random(0))
    model_cfg = ModelConfig(kind="retinanet", backbone="resnet18", out_channels=C, min_size=64, max_size=64)
    head = {"type": "fad", "genotype": FADSpace(candidates=darts_ops).to_config(genotype), "c_prime": C_PRIME}
    model = build_model(model_cfg, NUM_CLASSES, None, head)
    assert model.head.genotype() == genotype
    with pytest.raises(ValueError, match="unknown candidate .conv9."):
        build_model(
            model_cfg, NUM_CLASSES, None, {**head, "genotype": {**head["genotype"], "g1_e0_1": "conv9"}}
        )
