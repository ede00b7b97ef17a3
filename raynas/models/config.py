"""The detector a job builds (:class:`ModelConfig`), and where the proxy-pretrained body lives.

Ray-free and import-light: the training, search and experiment configs nest it, and YAML loading
(``raynas.config.load_yaml``) builds it from its ``model:`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raynas.config import ConfigError, check_ranges

PROXY_WEIGHTS = "proxy"


def proxy_weights_path(data_root: str, backbone: str) -> str:
    """Where ``raynas pretrain`` keeps the body pretrained for the digits data at ``data_root``."""
    return f"{data_root.rstrip('/')}/pretrained/{backbone}.pt"


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

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {"out_channels": (1, None), "min_size": (32, None), "max_size": (32, None),
             "trainable_backbone_layers": (0, 6)},
            "model.",
        )  # fmt: skip
        if self.max_size < self.min_size:
            raise ConfigError(f"model.max_size ({self.max_size}) must be >= model.min_size ({self.min_size})")
