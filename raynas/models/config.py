"""The detector a job builds (:class:`ModelConfig`), and where the proxy-pretrained body lives.

Ray-free and import-light: the training, search and experiment configs nest it, and YAML loading
(``raynas.config.load_yaml``) builds it from its ``model:`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raynas.config import ConfigError, check_ranges
from raynas.models.backbones import BACKBONES
from raynas.registry import ONE_STAGE

PROXY_WEIGHTS = "proxy"
ANCHOR_LEVELS = 5  # pyramid levels of every detector build_detector makes


#: the body ``backbone_weights: proxy`` names on each embedded proxy: pretrained on glyph crops (digits), or
#: on glyph crops and the dense context task (scenes: its coarse levels must carry the zone types that a
#: top-down path brings to small glyphs; docs/proxy.md, raynas.training.pretrain)
PROXY_BODIES = {"digits": "glyphs", "scenes": "context"}
#: the pretraining recipe's length (``raynas pretrain``); a body of another length has its own file
RECIPE_BODY_STEPS = 700


def proxy_weights_path(data_root: str, backbone: str, body: str = "glyphs", steps: int | None = None) -> str:
    """Where ``raynas pretrain`` keeps a body pretrained for the proxy data at ``data_root``:
    ``pretrained/<backbone>.pt`` for the glyph body, ``pretrained/<backbone>-<body>.pt`` for another, and
    ``...-<steps>steps.pt`` for one pretrained for other than the recipe's number of steps (a shorter body
    is another body, never mistaken for the recipe's)."""
    length = "" if steps in (None, RECIPE_BODY_STEPS) else f"-{steps}steps"
    suffix = ("" if body == "glyphs" else f"-{body}") + length
    return f"{data_root.rstrip('/')}/pretrained/{backbone}{suffix}.pt"


@dataclass
class ModelConfig:
    """The detector: kind, body, neck width and input size (the job config's ``neck``/``head`` specs say
    which searched parts replace torchvision's; :mod:`raynas.models.build` builds it)."""

    kind: Literal["fcos", "retinanet", "faster_rcnn", "cascade_rcnn", "mask_rcnn"] = "fcos"
    backbone: str = "resnet18"
    out_channels: int = 64
    min_size: int = 128
    max_size: int = 128
    # None (random init), a local state dict of the torchvision classifier, or "proxy": the body
    # pretrained on the digits proxy (`raynas pretrain`), kept at {data.root}/pretrained/{backbone}.pt
    # and made when absent
    backbone_weights: str | None = None
    norm: str | None = None  # None: the builder's default for random init / the weights' own norm
    trainable_backbone_layers: int | None = None
    # with backbone_weights "proxy": its pretraining steps (None: the recipe's RECIPE_BODY_STEPS; the main
    # job's scenes budget pretrains a shorter body, kept in its own file: proxy_weights_path)
    body_steps: int | None = None
    # one anchor size (px) per pyramid level (5: P3-P7, or P2-P6 + pool for the R-CNNs); None: torchvision's
    # scaled to min_size (default_anchor_sizes). FCOS gives level k the locations whose max(l, t, r, b) is
    # 4-8 x its size: the scenes proxy uses raynas.data.scenes.scenes_anchor_sizes (docs/proxy.md)
    anchor_sizes: list[float] | None = None
    # the frozen body's outputs for every image, computed once and kept beside the data
    # ({data.root}/features): the neck and head train on them (NAS-FCOS); needs trainable_backbone_layers 0
    cache_features: bool = False
    cache_dtype: Literal["float16", "float32"] = "float16"

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {"out_channels": (1, None), "min_size": (32, None), "max_size": (32, None),
             "trainable_backbone_layers": (0, 6), "body_steps": (1, None),
             "anchor_sizes": (0.0, None, "low_open")},
            "model.",
        )  # fmt: skip
        if self.max_size < self.min_size:
            raise ConfigError(f"model.max_size ({self.max_size}) must be >= model.min_size ({self.min_size})")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"model.backbone must be one of {list(BACKBONES)}, got {self.backbone!r}")
        if self.anchor_sizes is not None and len(self.anchor_sizes) != ANCHOR_LEVELS:
            raise ConfigError(
                f"model.anchor_sizes needs one size per pyramid level ({ANCHOR_LEVELS}), got "
                f"{self.anchor_sizes}"
            )
        if self.cache_dtype not in ("float16", "float32"):
            raise ConfigError(f"model.cache_dtype must be float16 or float32, got {self.cache_dtype!r}")
        if self.cache_features:
            self._check_cacheable()

    def _check_cacheable(self) -> None:
        """Cached body outputs are only right for a body that never changes and a detector whose targets
        are boxes (the cache resizes boxes, not masks)."""
        if self.trainable_backbone_layers != 0:
            raise ConfigError(
                "model.cache_features needs a frozen body: set model.trainable_backbone_layers: 0 (got "
                f"{self.trainable_backbone_layers}), or model.cache_features: false"
            )
        if self.kind not in ONE_STAGE:
            raise ConfigError(
                f"model.cache_features is for model.kind fcos or retinanet, not {self.kind!r}; "
                "set model.cache_features: false"
            )
        if self.norm == "bn":
            raise ConfigError(
                "model.cache_features with model.norm: bn would train on statistics the cache does not "
                "have (BatchNorm normalises each batch); use frozen_bn or gn, or model.cache_features: false"
            )
