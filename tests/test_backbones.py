"""FAD's Table 3 backbones (MobileNetV2, ResNet-101, ResNeXt-101 64x4d) cut into C3..C5 like the ResNets.

The big bodies are built on the meta device (shapes only: no memory, no init time, a forward that checks
every level's channels and stride without computing); MobileNetV2's FCOS also runs for real at 64 px."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raynas.config import ConfigError
from raynas.evaluation import count_params
from raynas.models import build_backbone_body, build_detector
from raynas.models.config import ModelConfig

#: C2..C5 channels; FCOS parameters at FPN width 256 with 81 classes vs Table 3's default FCOS (M)
TABLE3_BACKBONES = {
    "mobilenet_v2": ([24, 32, 96, 320], 9.8),
    "resnet101": ([256, 512, 1024, 2048], 51.2),
    "resnext101_64x4d": ([256, 512, 1024, 2048], 90.0),
}


@pytest.mark.parametrize("name", sorted(TABLE3_BACKBONES))
def test_table3_backbones_give_one_level_per_stride_and_table3s_fcos_size(name):
    channels, paper_fcos = TABLE3_BACKBONES[name]
    with torch.device("meta"):
        body, in_channels = build_backbone_body(name)
        features = body(torch.empty(1, 3, 64, 64))
        fcos = build_detector("fcos", name, num_classes=81, out_channels=256)
    assert in_channels == channels
    assert [tuple(v.shape[1:]) for v in features.values()] == [
        (c, 64 // 2**k, 64 // 2**k) for c, k in zip(channels, range(2, 6))
    ]
    image = torch.empty(1, 3, 64, 64, device="meta")
    assert [v.shape[1] for v in fcos.backbone.body(image).values()] == channels[1:]  # FCOS reads C3..C5
    pyramid = [tuple(v.shape[1:]) for v in fcos.backbone(image).values()]  # P3..P7
    assert pyramid == [(256, 8, 8), (256, 4, 4), (256, 2, 2), (256, 1, 1), (256, 1, 1)]
    assert abs(count_params(fcos) / 1e6 - paper_fcos) <= 0.01 * paper_fcos  # within 1 % of the paper


def test_mobilenet_v2_fcos_detects_at_64_px_and_keeps_its_own_batchnorm_eps():
    model = build_detector("fcos", "mobilenet_v2", num_classes=3, out_channels=64, min_size=64).eval()
    with torch.inference_mode():
        assert set(model([torch.rand(3, 64, 64)])[0]) == {"boxes", "labels", "scores"}
    v2, _ = build_backbone_body("mobilenet_v2", norm="bn")
    v3, _ = build_backbone_body("mobilenet_v3_large", norm="bn")
    eps = {name: {m.eps for m in body.modules() if isinstance(m, nn.BatchNorm2d)} for name, body in
           (("v2", v2), ("v3", v3))}  # fmt: skip
    assert eps == {"v2": {1e-5}, "v3": {1e-3}}  # as torchvision trained each


def test_the_model_config_takes_the_new_backbones_and_names_the_valid_ones():
    for name in TABLE3_BACKBONES:
        assert ModelConfig(backbone=name).backbone == name
    with pytest.raises(ConfigError, match="model.backbone must be one of .*resnext101_64x4d.*'vgg16'"):
        ModelConfig(backbone="vgg16")
