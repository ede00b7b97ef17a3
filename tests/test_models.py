"""Backbones, BackboneWithNeck and build_detector: torchvision's reference sizes, forwards, plug-ins."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.misc import FrozenBatchNorm2d

from raynas.models import BackboneWithNeck, build_backbone_body, build_detector, default_anchor_sizes
from raynas.models.cascade import CascadeRCNN

SMALL = dict(min_size=64, out_channels=64)  # FCOS head: GroupNorm(32, out_channels)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _batch(num_images: int = 2, side: int = 64):
    torch.manual_seed(0)
    images = [torch.rand(3, side, side) for _ in range(num_images)]
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 20.0, 60.0, 50.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 3])} for _ in range(num_images)]
    return images, targets


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("fcos", 32_269_600), ("retinanet", 34_014_999), ("faster_rcnn", 41_755_286)],
)
def test_resnet50_parameter_counts_match_torchvision_reference(kind, expected):
    # torchvision's published sizes for fcos_resnet50_fpn / retinanet_resnet50_fpn / fasterrcnn_resnet50_fpn
    # (pretrained, hence FrozenBatchNorm2d whose affine terms are buffers, not parameters).
    model = build_detector(kind, "resnet50", num_classes=91, min_size=800, max_size=1333, norm="frozen_bn")
    assert _params(model) == expected


@pytest.mark.parametrize("kind", ["fcos", "retinanet", "faster_rcnn", "cascade_rcnn"])
def test_train_step_gives_losses_and_eval_gives_detections(kind):
    model = build_detector(kind, "resnet18", num_classes=4, **SMALL)
    classes = {"fcos": FCOS, "retinanet": RetinaNet, "faster_rcnn": FasterRCNN, "cascade_rcnn": CascadeRCNN}
    assert isinstance(model, classes[kind])
    assert isinstance(model.backbone, BackboneWithNeck)
    assert model.backbone.out_channels == 64
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.inference_mode():
        detections = model(images)
    assert len(detections) == 2
    assert set(detections[0]) == {"boxes", "labels", "scores"}
    assert detections[0]["boxes"].shape[-1] == 4


def test_pyramid_levels_follow_torchvision_reference_builders():
    images = torch.rand(1, 3, 64, 64)
    one_stage = build_detector("retinanet", **SMALL).backbone(images)
    assert list(one_stage) == ["0", "1", "2", "p6", "p7"]
    assert [v.shape[-1] for v in one_stage.values()] == [8, 4, 2, 1, 1]
    two_stage = build_detector("faster_rcnn", **SMALL).backbone(images)
    assert list(two_stage) == ["0", "1", "2", "3", "pool"]
    assert all(v.shape[1] == 64 for v in two_stage.values())


def test_mobilenet_body_has_one_level_per_stride():
    body, channels = build_backbone_body("mobilenet_v3_large")
    assert channels == [24, 40, 112, 960]
    features = body(torch.rand(1, 3, 64, 64))
    shapes = [tuple(v.shape[1:]) for v in features.values()]
    assert shapes == [(24, 16, 16), (40, 8, 8), (112, 4, 4), (960, 2, 2)]
    model = build_detector("fcos", "mobilenet_v3_large", **SMALL)
    model.eval()
    with torch.inference_mode():
        assert len(model([torch.rand(3, 64, 64)])) == 1


def test_custom_neck_factory_plugs_in():
    built = {}

    class TinyNeck(nn.Module):
        def __init__(self, in_channels_list, out_channels, extra_blocks):
            super().__init__()
            self.fpn = FeaturePyramidNetwork(in_channels_list, out_channels, extra_blocks=extra_blocks)
            self.out_channels = out_channels
            built["in_channels_list"] = in_channels_list

        def forward(self, features):
            return self.fpn(features)

    model = build_detector("fcos", neck=TinyNeck, **SMALL)
    assert isinstance(model.backbone.neck, TinyNeck)
    assert built["in_channels_list"] == [128, 256, 512]  # resnet18 C3-C5
    images, targets = _batch()
    assert torch.isfinite(sum(model(images, targets).values()))


class OneConvFCOSHead(FCOSHead):
    def __init__(self, in_channels, num_anchors, num_classes):
        super().__init__(in_channels, num_anchors, num_classes, num_convs=1)


class PlainRetinaNetHead(RetinaNetHead):
    pass


@pytest.mark.parametrize(("kind", "head_cls"), [("fcos", OneConvFCOSHead), ("retinanet", PlainRetinaNetHead)])
def test_custom_head_factory_plugs_in(kind, head_cls):
    calls = []

    def factory(in_channels, num_anchors, num_classes):
        calls.append((in_channels, num_anchors, num_classes))
        return head_cls(in_channels, num_anchors, num_classes)

    model = build_detector(kind, head=factory, num_classes=4, **SMALL)
    assert calls == [(64, 1 if kind == "fcos" else 9, 4)]
    assert type(model.head) is head_cls
    images, targets = _batch()
    assert torch.isfinite(sum(model(images, targets).values()))


@pytest.mark.parametrize("kind", ["faster_rcnn", "cascade_rcnn"])
def test_two_stage_detectors_reject_custom_head(kind):
    with pytest.raises(ValueError, match="one-stage"):
        build_detector(kind, head=lambda c, a, k: nn.Identity(), **SMALL)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="fcos.*retinanet.*faster_rcnn.*cascade_rcnn"):
        build_detector("yolo")
    with pytest.raises(ValueError, match="resnet18.*mobilenet_v3_large"):
        build_detector("fcos", backbone="vgg16")
    with pytest.raises(ValueError, match="fpn"):
        build_detector("fcos", neck="bifpn")
    with pytest.raises(ValueError, match="multiple of 32"):
        build_detector("fcos", out_channels=32)
    with pytest.raises(ValueError, match="frozen_bn.*bn.*gn"):
        build_backbone_body("resnet18", norm="syncbn")


def test_anchors_at_800_are_torchvision_defaults():
    backbone = build_detector("fcos", **SMALL).backbone
    for kind, cls in [("fcos", FCOS), ("retinanet", RetinaNet), ("faster_rcnn", FasterRCNN)]:
        reference = cls(backbone, num_classes=91)
        generator = reference.rpn.anchor_generator if kind == "faster_rcnn" else reference.anchor_generator
        assert default_anchor_sizes(kind, 800) == generator.sizes
        ours = build_detector(kind, min_size=800, out_channels=64)
        ours_generator = ours.rpn.anchor_generator if kind == "faster_rcnn" else ours.anchor_generator
        assert ours_generator.sizes == generator.sizes
        assert ours_generator.aspect_ratios == generator.aspect_ratios


def test_anchors_scale_with_min_size_down_to_4px():
    assert default_anchor_sizes("retinanet", 400)[0] == (16.0, 20.0, 25.0)
    assert default_anchor_sizes("faster_rcnn", 128)[0] == (5.12,)  # 32 * 128 / 800
    assert default_anchor_sizes("fcos", 128) == ((4.0,), (8.0,), (16.0,), (32.0,), (64.0,))  # 4 px floor
    assert default_anchor_sizes("fcos", 1600) == default_anchor_sizes("fcos", 800)
    model = build_detector("retinanet", min_size=128, out_channels=64)
    assert model.anchor_generator.sizes == default_anchor_sizes("retinanet", 128)


def test_anchor_sizes_override_and_validation():
    model = build_detector("fcos", anchor_sizes=(2, 4, 8, 16, 32), **SMALL)
    assert model.anchor_generator.sizes == ((2,), (4,), (8,), (16,), (32,))
    with pytest.raises(ValueError, match="levels"):
        build_detector("fcos", anchor_sizes=(2, 4, 8), **SMALL)
    with pytest.raises(ValueError, match="one anchor size per level"):
        build_detector("fcos", anchor_sizes=[(2, 3)] * 5, **SMALL)


def test_norm_and_trainable_layer_defaults():
    body, _ = build_backbone_body("resnet18")  # random init: GroupNorm, every stage trained
    assert any(isinstance(m, nn.GroupNorm) for m in body.modules())
    assert not any(isinstance(m, nn.BatchNorm2d | FrozenBatchNorm2d) for m in body.modules())
    assert all(p.requires_grad for p in body.parameters())
    bn_body, _ = build_backbone_body("resnet18", norm="bn")
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn_body.modules())
    frozen, _ = build_backbone_body("resnet18", norm="frozen_bn", trainable_layers=2)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    trainable = {name.split(".")[0] for name, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}


def test_backbone_weights_from_local_file(tmp_path):
    torch.manual_seed(1)
    classifier = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pt"
    torch.save({k: v for k, v in classifier.state_dict().items() if not k.startswith("fc.")}, path)
    body, _ = build_backbone_body("resnet18", weights=path)
    assert torch.equal(body.conv1.weight, classifier.conv1.weight)
    assert torch.equal(body.layer4[1].bn2.running_var, classifier.layer4[1].bn2.running_var)
    # pretrained defaults: frozen BN, last 3 stages trainable (torchvision's)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert not body.conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad
    model = build_detector("fcos", backbone_weights=str(path), **SMALL)
    assert torch.equal(model.backbone.body.conv1.weight, classifier.conv1.weight)


def test_backbone_weights_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt.*IMAGENET1K_V1"):
        build_backbone_body("resnet18", weights=tmp_path / "missing.pt")
    wrong = tmp_path / "resnet34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), wrong)
    with pytest.raises(ValueError, match=r"unexpected keys \['layer1.2"):
        build_backbone_body("resnet18", weights=wrong)
    partial = tmp_path / "partial.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, partial)
    with pytest.raises(ValueError, match=r"missing keys \['bn1.weight"):
        build_backbone_body("resnet18", weights=partial)
    shape = tmp_path / "shape.pt"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7)}, shape)
    with pytest.raises(ValueError, match="conv1.weight: file"):
        build_backbone_body("resnet18", weights=shape)


def test_torchvisions_fpn_with_groupnorm_is_a_neck_spec() -> None:
    """``{"type": "fpn", "norm": "gn"}``: torchvision's own FPN and its ``norm_layer``, no conv bias."""
    from raynas.models.build import neck_factory

    assert neck_factory({"type": "fpn"}) == "fpn" and neck_factory(None) == "fpn"
    neck = neck_factory({"type": "fpn", "norm": "gn"})([64, 128], 64, None)
    assert isinstance(neck, FeaturePyramidNetwork) and neck.out_channels == 64
    conv, norm = neck.layer_blocks[0]
    assert isinstance(norm, torch.nn.GroupNorm) and conv.bias is None
    out = neck({"0": torch.rand(1, 64, 16, 16), "1": torch.rand(1, 128, 8, 8)})
    assert [tuple(v.shape) for v in out.values()] == [(1, 64, 16, 16), (1, 64, 8, 8)]
    with pytest.raises(ValueError, match="norm"):
        neck_factory({"type": "fpn", "norm": "bn"})
    with pytest.raises(ValueError, match="unknown key"):
        neck_factory({"type": "fpn", "width": 3})
