"""Detectors from a config: the ``neck`` / ``head`` specs name what the searches produced.

``neck``: ``None`` or ``{"type": "fpn"}`` (torchvision FPN), ``{"type": "opa_fpn", "arch": {...}}``
(a discrete OPANAS neck), ``{"type": "opanas_supernet"}`` or ``{"type": "opanas_mixed"}`` (the DARTS
relaxation of the OPANAS DAG). ``head``: ``None`` (torchvision's
head) or ``{"type": "fad", "genotype": {...} | "path/to/genotype.json"}`` / ``{"type": "fad_search"}``, with
optional ``c_prime`` and ``cells_per_group``: how often each group's cell repeats (own weights, one
genotype); 1 when absent, so a spec or checkpoint from before the key builds the head it trained (the
experiments retrain with ``raynas.spaces.fad.head.RETRAIN_CELLS_PER_GROUP``, Table 3's depth).
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from raynas.models.config import ModelConfig
from raynas.models.detector import INSTANCE_SEGMENTATION, TWO_STAGE, build_detector
from raynas.spaces.base import from_config_strict

NECK_TYPES = ("fpn", "opa_fpn", "opanas_supernet", "opanas_mixed")
HEAD_TYPES = ("fad", "fad_search")


def _options(spec: dict[str, Any], allowed: set[str], what: str) -> dict[str, Any]:
    unknown = sorted(set(spec) - allowed - {"type"})
    if unknown:
        raise ValueError(f"{what} spec has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return {k: v for k, v in spec.items() if k != "type"}


def neck_factory(spec: dict[str, Any] | None):
    """A neck factory ``(in_channels_list, out_channels, extra_blocks) -> nn.Module`` or ``"fpn"``.

    ``{"type": "fpn", "norm": "gn"}`` is torchvision's FPN with GroupNorm after each of its convs (its own
    ``norm_layer``): the OPANAS paths are built with GroupNorm, so this FPN tells the path apart from the
    norm where a frozen body's features meet an un-normalised neck (docs/proxy.md)."""
    if spec is None or spec.get("type", "fpn") == "fpn":
        norm = _options(spec or {}, {"norm"}, "neck").get("norm")
        if norm is None:
            return "fpn"
        if norm != "gn":
            raise ValueError(f'neck spec {{"type": "fpn"}} takes norm: gn (or none), got {norm!r}')
        return functools.partial(_torchvision_fpn, norm)
    kind = spec.get("type")
    if kind == "opa_fpn":
        from raynas.spaces.opanas import OPANASSpace

        options = _options(spec, {"arch", "num_nodes", "deformable", "norm"}, "neck")
        if "arch" not in options:
            raise ValueError('neck spec {"type": "opa_fpn"} needs an "arch" mapping (e0_1: top_down, ...)')
        space = OPANASSpace(num_nodes=options.pop("num_nodes", 5))
        if not isinstance(options["arch"], dict):
            raise ValueError(
                f'neck spec "arch" must be a mapping of edges (e0_1: top_down, ...), got {options["arch"]!r}'
            )
        arch = from_config_strict(space, options.pop("arch"), 'neck spec "arch"')
        space.validate(arch)
        return functools.partial(_opa_fpn, arch, options)
    if kind == "opanas_supernet":
        from raynas.spaces.opanas import OPANASSupernet

        options = _options(spec, {"num_nodes", "deformable", "norm", "gamma"}, "neck")
        options["learn_gamma"] = options.pop("gamma", True)
        return functools.partial(_supernet, OPANASSupernet, options)
    if kind == "opanas_mixed":
        from raynas.spaces.opanas.mixed import OPANASMixedNeck

        allowed = {"num_nodes", "deformable", "norm", "relaxation", "zero_one_weight", "threshold"}
        return functools.partial(_supernet, OPANASMixedNeck, _options(spec, allowed, "neck"))
    raise ValueError(f"unknown neck type {kind!r}; valid: {list(NECK_TYPES)}")


def searched_neck_spec(arch_config: dict[str, Any], opanas: Any) -> dict[str, Any]:
    """The ``opa_fpn`` neck spec of a searched architecture, built with the options of the super-net it
    was found in (``OPANASConfig``: ``num_nodes``, ``deformable``, ``norm``), so a retrained neck is the
    network that was searched."""
    from raynas.spaces.opanas import OPANASSpace

    space = OPANASSpace(num_nodes=opanas.num_nodes)
    return {
        "type": "opa_fpn",
        "arch": space.to_config(space.from_config(arch_config)),
        "num_nodes": opanas.num_nodes,
        "deformable": opanas.deformable,
        "norm": opanas.norm,
    }


def _torchvision_fpn(norm, in_channels_list, out_channels, extra_blocks):
    from torchvision.ops import FeaturePyramidNetwork

    from raynas.spaces.opanas.paths import make_norm

    fpn = FeaturePyramidNetwork(
        in_channels_list,
        out_channels,
        extra_blocks=extra_blocks,
        norm_layer=functools.partial(make_norm, norm=norm),
    )
    fpn.out_channels = out_channels  # the neck contract; torchvision's FPN does not set it
    return fpn


def _opa_fpn(arch, options, in_channels_list, out_channels, extra_blocks):
    from raynas.spaces.opanas import OPAFPN

    return OPAFPN(arch, in_channels_list, out_channels, extra_blocks=extra_blocks, **options)


def _supernet(cls, options, in_channels_list, out_channels, extra_blocks):
    return cls(in_channels_list, out_channels, extra_blocks=extra_blocks, **options)


def head_factory(spec: dict[str, Any] | None, kind: str):
    """A head factory or ``None``: for one-stage detectors ``(in_channels, num_anchors, num_classes) ->
    nn.Module``; for Mask R-CNN a mask-head factory ``in_channels -> nn.Module`` (the spec's FAD module is
    then one group of cells, fad-repshare.txt Sec. 3.1 "FAD for Instance Segmentation")."""
    if spec is None:
        return None
    head_type = spec.get("type")
    if head_type not in HEAD_TYPES:
        raise ValueError(f"unknown head type {head_type!r}; valid: {list(HEAD_TYPES)}")
    from raynas.spaces.fad import derived_space, fad_head_factory, fad_mask_head_factory

    mask = kind in INSTANCE_SEGMENTATION

    options = _options(
        spec,
        {"genotype", "c_prime", "repshare", "decouple", "streams", "rf_max", "ops", "cells_per_group"},
        "head",
    )
    genotype = options.pop("genotype", None)
    cells = options.get("cells_per_group", 1)
    if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
        raise ValueError(f'head spec "cells_per_group" must be a whole number >= 1, got {cells!r}')
    if head_type == "fad":
        if genotype is None:
            raise ValueError('head spec {"type": "fad"} needs a "genotype" mapping (g1_e0_1: ..., ...)')
        # any ablation's genotype (DARTS ops, stream subsets) retrains
        space = derived_space(num_groups=1 if mask else 2)
        if isinstance(genotype, str):  # the genotype.json a search wrote
            genotype = _genotype_file(genotype)
        if not isinstance(genotype, dict):
            raise ValueError(f'head spec "genotype" must be a mapping (g1_e0_1: ..., ...), got {genotype!r}')
        genotype = from_config_strict(space, genotype, 'head spec "genotype"')
        space.validate(genotype)
    if mask:
        return fad_mask_head_factory(genotype=genotype, cells=options.pop("cells_per_group", 1), **options)
    if kind in TWO_STAGE:
        raise ValueError(
            f"a head spec replaces the head of a one-stage detector (fcos, retinanet) or the mask head of "
            f"mask_rcnn; {kind} keeps torchvision's heads (remove `head`)"
        )
    return fad_head_factory(kind=kind, genotype=genotype, **options)


def _genotype_file(path: str) -> dict[str, Any]:
    """The ``arch`` mapping of a ``genotype.json`` written by ``raynas search fad`` / ``search_fad``."""
    import json
    from pathlib import Path

    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f'head spec "genotype": {path!r} is not a file; give a genotype.json or a mapping')
    try:
        payload = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f'head spec "genotype": {path!r} is not JSON ({err})') from err
    if (
        not isinstance(payload, dict)
        or payload.get("space") != "fad"
        or not isinstance(payload.get("arch"), dict)
    ):
        raise ValueError(
            f'head spec "genotype": {path!r} is not a FAD genotype.json ({{"space": "fad", "arch": ...}})'
        )
    return payload["arch"]


def build_model(
    model: ModelConfig, num_classes: int, neck: dict | None = None, head: dict | None = None
) -> nn.Module:
    """The detector a config describes, with searched neck/head plugged in where given (for Mask R-CNN the
    head spec is its mask head)."""
    role = "mask_head" if model.kind in INSTANCE_SEGMENTATION else "head"
    head_or_mask = {role: head_factory(head, model.kind)}
    return build_detector(
        model.kind,
        backbone=model.backbone,
        neck=neck_factory(neck),
        **head_or_mask,
        num_classes=num_classes,
        min_size=model.min_size,
        max_size=model.max_size,
        out_channels=model.out_channels,
        backbone_weights=model.backbone_weights,
        norm=model.norm,
        trainable_backbone_layers=model.trainable_backbone_layers,
        anchor_sizes=model.anchor_sizes,
    )
