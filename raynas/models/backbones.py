"""Backbone bodies (torchvision classifiers cut into C-levels) and the body + neck module detectors see.

A *body* maps an image batch to ``OrderedDict[str, Tensor]`` of C-levels keyed ``"0", "1", ...`` (finest
first); a *neck* maps that dict to equal-channel pyramid levels. Level numbering follows torchvision's
``returned_layers``: level ``k`` in ``1..4`` is C(k+1), of stride ``2 ** (k + 1)`` (1 = C2/4 ... 4 = C5/32).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models._api import WeightsEnum
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

# resnet101, resnext101_64x4d and mobilenet_v2 are FAD's Table 3 backbones (fad-repshare.txt Sec. 4.1). Its
# ResNeXt-101 is 64x4d: Table 4 names FCOS's "ResNeXt-64x4d-101" (44.7 AP, Table 3's Res-X-101 FCOS row),
# and FCOS on it counts 90.2 M parameters here vs the paper's 90.0 M (32x8d: 95.5 M;
# benchmarks/fad_table3_params.py)
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext101_64x4d")
MOBILENETS = ("mobilenet_v2", "mobilenet_v3_large")
BACKBONES = RESNETS + MOBILENETS
NORMS = ("frozen_bn", "bn", "gn")

# A state dict saved from the torchvision classifier may or may not hold its classification head; the
# body never uses it, so its keys may be missing.
_CLASSIFIER_PREFIX = {"resnet": "fc.", "mobilenet": "classifier."}


def _group_norm(num_channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (Wu & He 2018); gcd keeps it valid for MobileNet's 24/40/72 channels."""
    return nn.GroupNorm(math.gcd(32, num_channels), num_channels, eps=eps)


def _norm_layer(norm: str, backbone: str) -> Callable[..., nn.Module] | None:
    """The ``norm_layer`` callable passed to the torchvision classifier ``backbone`` (a name, or its family
    "resnet"; None = the classifier's own default)."""
    # MobileNetV3 was trained with BatchNorm eps=1e-3 (MobileNetV2 and the ResNets with 1e-5); keep that
    # eps so loaded statistics mean the same.
    eps = 1e-3 if backbone.startswith("mobilenet_v3") else 1e-5
    if norm == "frozen_bn":
        return partial(FrozenBatchNorm2d, eps=eps)
    if norm == "gn":
        return partial(_group_norm, eps=eps)
    return None  # "bn": torchvision's own BatchNorm2d settings for that classifier


def _weights_enum_or_path(name: str, weights: str | Path | WeightsEnum) -> WeightsEnum | str | Path:
    """A torchvision weights name ("IMAGENET1K_V1", "DEFAULT") or enum stays as is; else it is a path."""
    if isinstance(weights, WeightsEnum):
        return weights
    enum_cls = torchvision.models.get_model_weights(name)
    if isinstance(weights, str) and weights.replace(enum_cls.__name__ + ".", "") in enum_cls.__members__:
        return weights
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights file '{path}' not found for backbone '{name}'; pass the path of a state dict "
            f"saved with torch.save(torchvision.models.{name}().state_dict(), path), or one of torchvision's "
            f"weight names {sorted(enum_cls.__members__)} (downloaded by torchvision, needs internet)"
        )
    return path


def _read_local_weights(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unreadable file: a foreign pickle, text, a truncated save)
        raise ValueError(
            f"backbone weights file '{path}' could not be read by torch.load "
            f"({' '.join(str(err).split())[:160]}); pass a state dict saved with "
            "torch.save(model.state_dict(), path)"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"backbone weights file '{path}' does not hold a state dict (a dict of tensors); save one with "
            "torch.save(model.state_dict(), path)"
        )
    return state


def _norm_of_state(state: dict[str, Tensor]) -> str:
    """The norm a classifier state dict was trained with: BatchNorm leaves running statistics, GroupNorm none.

    A detector must keep the norm its body was pretrained with (GroupNorm weights under FrozenBatchNorm would
    meet zero-mean unit-variance "statistics" they were never trained for)."""
    return "frozen_bn" if any(k.endswith("running_mean") for k in state) else "gn"


def _load_local_weights(model: nn.Module, state: dict[str, Tensor], path: Path, family: str) -> None:
    """Load a classifier state dict read from ``path``; any key that does not fit raises, naming the keys."""
    own = model.state_dict()
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError(f"backbone weights file '{path}' has tensors of the wrong shape: {mismatched[:10]}")
    result = model.load_state_dict(state, strict=False)
    missing = [
        k
        for k in result.missing_keys
        if not k.startswith(_CLASSIFIER_PREFIX[family]) and not k.endswith("num_batches_tracked")
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if result.unexpected_keys:
        unexpected = result.unexpected_keys
        problems.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if problems:
        raise ValueError(
            f"backbone weights file '{path}' does not match the {type(model).__name__} backbone: "
            + "; ".join(problems)
            + " (was it saved from the same torchvision model, with the same norm? GroupNorm has no BN stats)"
        )


def _freeze_resnet(model: nn.Module, trainable_layers: int) -> None:
    """torchvision's rule (``_resnet_fpn_extractor``): train the last ``trainable_layers`` of 5 stages."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers for a ResNet must be in [0, 5], got {trainable_layers}")
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        layers_to_train.append("bn1")
    for name, parameter in model.named_parameters():
        if not any(name.startswith(layer) for layer in layers_to_train):
            parameter.requires_grad_(False)


def _mobilenet_stage_starts(features: nn.Sequential) -> list[int]:
    """Indices where a stage starts: the stem, every strided block (``_is_cn``), and the last conv."""
    strided = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    return [0, *strided, len(features) - 1]


def _freeze_mobilenet(features: nn.Sequential, trainable_layers: int) -> None:
    """torchvision's rule (``_mobilenet_extractor``): train the last ``trainable_layers`` stages."""
    starts = _mobilenet_stage_starts(features)
    if not 0 <= trainable_layers <= len(starts):
        raise ValueError(
            f"trainable_layers for a MobileNet must be in [0, {len(starts)}], got {trainable_layers}"
        )
    freeze_before = len(features) if trainable_layers == 0 else starts[len(starts) - trainable_layers]
    for block in features[:freeze_before]:
        for parameter in block.parameters():
            parameter.requires_grad_(False)


def _mobilenet_level_ends(features: nn.Sequential) -> dict[int, int]:
    """Block index ending each stride level: ``{1: C2 end, 2: C3 end, 3: C4 end, 4: C5 end}``.

    torchvision's ``_mobilenet_extractor`` returns the *first* block of a stage, so its two FPN levels both
    sit at stride 32. A pyramid wants one map per stride, so we take the *last* block of each stride
    instead (for mobilenet_v3_large: blocks 3, 6, 12, 16 with 24, 40, 112, 960 channels at /4 ... /32;
    for mobilenet_v2, whose last conv the body drops: blocks 3, 6, 13, 17 with 24, 32, 96, 320).
    """
    strided = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    ends = [nxt - 1 for nxt in strided[1:]] + [len(features) - 1]
    return dict(enumerate(ends, start=1))


def build_backbone_body(
    name: str,
    trainable_layers: int | None = None,
    norm: str | None = None,
    weights: str | Path | WeightsEnum | None = None,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
) -> tuple[nn.Module, list[int]]:
    """Build a torchvision classifier cut into C-levels: ``(body, in_channels_list)``.

    ``body(x)`` returns ``OrderedDict`` keyed ``"0", "1", ...`` in the order of ``returned_layers``
    (``1..4`` = C2..C5); ``in_channels_list`` holds their channel counts, ready for an FPN.

    ``weights``: None (random init), the path of a local state dict of the torchvision classifier (its
    classification head may be absent), or a torchvision weights name/enum such as ``"IMAGENET1K_V1"``
    (torchvision downloads it; needs internet).

    ``norm`` (default: ``"gn"`` without weights; with a local state dict, the norm it was trained with:
    ``"frozen_bn"`` when it holds BatchNorm statistics, else ``"gn"``; ``"frozen_bn"`` with torchvision's
    weights): torchvision's reference detectors freeze BatchNorm (``FrozenBatchNorm2d``) because detection
    batches are too small to re-estimate ImageNet statistics. From random init there are no statistics to
    keep, and frozen identity BN would leave the network unnormalised. Detectors trained from scratch
    normalise with GroupNorm (He et al., "Rethinking ImageNet Pre-training", ICCV 2019), which does not
    depend on the per-worker batch of 2-8 images detection affords; measured here, FCOS-ResNet18 on the
    digits data reached AP50 28.3 with GroupNorm vs 10.4 with trained BatchNorm after 4 epochs (batch 8,
    same recipe). ``"bn"`` (torchvision's ``BatchNorm2d``) remains available for large per-GPU batches.

    ``trainable_layers`` (default: all without weights, 3 with weights, as torchvision): stages counted
    from the top that keep ``requires_grad``; ResNet and ResNeXt ``0..5``, MobileNet ``0..6``.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; valid backbones: {list(BACKBONES)}")
    source = None if weights is None else _weights_enum_or_path(name, weights)
    local_state = _read_local_weights(source) if isinstance(source, Path) else None
    if norm is None:
        norm = (
            "gn" if weights is None else "frozen_bn" if local_state is None else _norm_of_state(local_state)
        )
    if norm not in NORMS:
        raise ValueError(f"unknown norm '{norm}'; valid norms: {list(NORMS)}")
    returned_layers = list(returned_layers)
    if not returned_layers or any(k not in (1, 2, 3, 4) for k in returned_layers):
        raise ValueError(f"returned_layers must be a non-empty subset of [1, 2, 3, 4], got {returned_layers}")
    family = "resnet" if name in RESNETS else "mobilenet"

    torchvision_weights = source if isinstance(source, str | WeightsEnum) else None
    kwargs = {}
    norm_layer = _norm_layer(norm, name)
    if norm_layer is not None:
        kwargs["norm_layer"] = norm_layer
    model = torchvision.models.get_model(name, weights=torchvision_weights, **kwargs)
    if local_state is not None:
        _load_local_weights(model, local_state, source, family)

    if family == "resnet":
        if trainable_layers is None:
            trainable_layers = 5 if weights is None else 3
        _freeze_resnet(model, trainable_layers)
        return_layers = {f"layer{k}": str(i) for i, k in enumerate(returned_layers)}
        body = IntermediateLayerGetter(model, return_layers=return_layers)
        stage2 = model.inplanes // 8  # C2 channels x expansion: 64 (basic block) or 256 (bottleneck)
        in_channels_list = [stage2 * 2 ** (k - 1) for k in returned_layers]
        return body, in_channels_list

    features = model.features
    if name == "mobilenet_v2":
        # C5 is the last inverted residual (320 channels), without the 1x1 conv to 1280 after it (the
        # classifier's expansion): so FCOS-MobileNetV2 counts Table 3's 9.8 M parameters (10.5 M with it)
        features = features[:-1]
    if trainable_layers is None:
        trainable_layers = len(_mobilenet_stage_starts(features)) if weights is None else 3
    _freeze_mobilenet(features, trainable_layers)
    ends = _mobilenet_level_ends(features)
    return_layers = {str(ends[k]): str(i) for i, k in enumerate(returned_layers)}
    body = IntermediateLayerGetter(features, return_layers=return_layers)
    in_channels_list = [features[ends[k]].out_channels for k in returned_layers]
    return body, in_channels_list


class BackboneWithNeck(nn.Module):
    """``body`` then ``neck``: the ``backbone`` torchvision's detectors expect (with ``out_channels``).

    ``out_channels`` defaults to ``neck.out_channels``; pass it for a neck that lacks the attribute
    (torchvision's ``FeaturePyramidNetwork``).
    """

    def __init__(self, body: nn.Module, neck: nn.Module, out_channels: int | None = None) -> None:
        super().__init__()
        if out_channels is None:
            out_channels = getattr(neck, "out_channels", None)
        if not isinstance(out_channels, int):
            raise ValueError(
                f"neck {type(neck).__name__} has no integer .out_channels; set it on the neck "
                "(the channel count of every output level) or pass out_channels="
            )
        self.body = body
        self.neck = neck
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.neck(self.body(x))
