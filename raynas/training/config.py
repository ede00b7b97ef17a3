"""Typed configs of the training jobs (standalone, OPANAS super-net, FAD DARTS).

Every field has a default that runs on a 2-core CPU in minutes on the embedded digits data; the
paper settings are given in the docstrings and in ``experiments/configs/*paper*.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raynas.config import ConfigError, check_local_storage, check_ranges, check_run_name
from raynas.data.config import DataConfig
from raynas.models.config import PROXY_BODIES, PROXY_WEIGHTS, ModelConfig, proxy_weights_path
from raynas.registry import ONE_STAGE


@dataclass
class OptimConfig:
    """SGD with linear warm-up and step decay (OPANAS Sec. 4.1.3: lr 0.02, momentum 0.9, wd 1e-4,
    decay x0.1 at epochs 8 and 11 of 12; the defaults here are scaled for tiny CPU batches)."""

    epochs: int = 12
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    milestones: list[int] = field(default_factory=lambda: [8, 11])
    decay: float = 0.1
    grad_clip: float | None = 10.0

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {"epochs": (1, None), "lr": (0.0, None, "low_open"), "momentum": (0.0, 1.0),
             "weight_decay": (0.0, None), "warmup_iters": (0, None), "warmup_factor": (0.0, 1.0, "low_open"),
             "milestones": (1, None), "decay": (0.0, None, "low_open"), "grad_clip": (0.0, None, "low_open")},
            "optim.",
        )  # fmt: skip


def check_adam_betas(betas: list[float], where: str) -> None:
    """Adam takes exactly two betas; a wrong count would only fail inside a Ray Train worker."""
    if len(betas) != 2:
        raise ConfigError(f"{where} must be two numbers (Adam's beta1 and beta2), got {betas!r}")


@dataclass
class RunConfig:
    """How and where the job runs on Ray."""

    name: str = "train"
    storage_path: str = "runs"
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    amp: bool = True  # bf16 autocast, CUDA only
    max_failures: int = 1
    num_to_keep: int | None = 2
    seed: int = 0
    address: str | None = None  # attach to a running cluster ("auto" or "ray://..."); None: local
    eval_every: int = 1  # epochs

    def __post_init__(self) -> None:
        check_local_storage(self.storage_path, "run.storage_path")
        check_run_name(self.name)
        check_ranges(
            self,
            {"num_workers": (1, None), "cpus_per_worker": (1, None), "max_failures": (-1, None),
             "num_to_keep": (1, None), "seed": (0, None), "eval_every": (1, None)},
            "run.",
        )  # fmt: skip


@dataclass
class TrainConfig:
    """Standalone detector training (the baseline and the full-training phase)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    neck: dict | None = None  # {"type": "fpn"} or {"type": "opa_fpn", "arch": {...}, ...}
    head: dict | None = None  # {"type": "fad", "genotype": {...}, "c_prime": 96}

    def __post_init__(self) -> None:
        if self.model.backbone_weights == PROXY_WEIGHTS:
            if self.data.format not in ("digits", "scenes"):
                raise ValueError(
                    'model.backbone_weights: "proxy" is the body pretrained on an embedded proxy (digits, '
                    f"scenes); with data.format {self.data.format!r} give the path of a torchvision state "
                    "dict instead"
                )
            body = PROXY_BODIES[self.data.format]
            self.model.backbone_weights = proxy_weights_path(
                self.data.root, self.model.backbone, body, self.model.body_steps
            )
        if self.model.kind == "mask_rcnn" and self.data.format == "voc":
            raise ValueError(
                "model.kind mask_rcnn trains on instance masks, and Pascal VOC detection annotations hold "
                "boxes only; use COCO-format data with 'segmentation' (the digits data have masks)"
            )


@dataclass
class OPANASConfig:
    """Super-net settings (OPANAS Sec. 3.2.1 / 4.1.2): N=5 nodes, K=4 fair sub-nets per step,
    gamma initialised to 1 with an L1 term of weight mu=1e-4. ``deformable`` is the paper's
    setting; it is off by default because deformable convs are slow on CPU."""

    num_nodes: int = 5
    deformable: bool = False
    norm: str | None = None
    k: int = 4
    mu: float = 1e-4
    # Sec. 3.2.1: weights are updated "after accumulating gradients from the K sampled sub-nets" (a sum,
    # as in FairNAS); "mean" divides by K, i.e. a K times smaller step for the shared body and head
    reduce: Literal["mean", "sum"] = "sum"
    eval_subnets: int = 2
    # the ablations of Table 5/6: "uniform" is SPOS (one sub-net per step, k unused); "gamma: false"
    # trains without edge importance weights (fixed ones, no L1 term); "train_paths: all" also draws
    # skip/none during training (our deviation; see raynas.spaces.opanas.sampling)
    sampling: Literal["fair", "uniform"] = "fair"
    gamma: bool = True
    train_paths: Literal["parameterised", "all"] = "parameterised"

    def __post_init__(self) -> None:
        from raynas.spaces.opanas.sampling import SAMPLING_RULES, TRAIN_PATHS

        for name, choices in (("sampling", SAMPLING_RULES), ("train_paths", tuple(TRAIN_PATHS))):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"opanas.{name} must be one of {list(choices)}, got {getattr(self, name)!r}"
                )
        check_ranges(
            self,
            {
                "num_nodes": (1, None),
                "k": (1, len(TRAIN_PATHS[self.train_paths])),
                "mu": (0.0, None),
                "eval_subnets": (1, None),
            },
            "opanas.",
        )

    def subnets_per_step(self) -> int:
        return 1 if self.sampling == "uniform" else self.k


@dataclass
class SupernetConfig(TrainConfig):
    """OPANAS super-net training. ``neck`` is derived from ``opanas`` (leave it unset)."""

    opanas: OPANASConfig = field(default_factory=OPANASConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        spec = {
            "type": "opanas_supernet",
            "num_nodes": self.opanas.num_nodes,
            "deformable": self.opanas.deformable,
            "norm": self.opanas.norm,
            "gamma": self.opanas.gamma,
        }
        # a checkpoint written before the gamma switch has no "gamma" key in its neck: learned gamma
        written = None if self.neck is None else {"gamma": True, **self.neck}
        if written not in (None, spec):
            raise ValueError("SupernetConfig derives `neck` from `opanas`; remove the `neck` key")
        self.neck = spec


@dataclass
class FADConfig:
    """FAD head search (Sec. 3.2, supplementary): first-order DARTS, Adam on alphas with lr 3e-4,
    betas (0.5, 0.999), wd 1e-3. ``c_prime`` is the block width (Table 3: 256 -> 96). The switches
    are the ablations of Table 2. ``arch_warmup_epochs``: the search's first epochs train the weights only
    (alphas still), a deviation off by default: DARTS's reference code steps the alphas from the first
    batch, and the paper's supplementary, which holds FAD's search schedule, is not in our copy; on the
    proxy a short search otherwise picks alphas on nearly untrained operations (issue 28's sweep)."""

    c_prime: int = 96
    cells_per_group: int = 1
    repshare: bool = True
    decouple: bool = True
    streams: list[str] = field(default_factory=lambda: ["std", "sep"])
    rf_max: int = 9
    ops: Literal["fad", "darts", "darts_primitives"] = "fad"
    arch_lr: float = 3e-4
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    arch_warmup_epochs: int = 0

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {"c_prime": (1, None), "cells_per_group": (1, None), "rf_max": (3, None),
             "arch_lr": (0.0, None, "low_open"), "arch_betas": (0.0, 1.0, "high_open"),
             "arch_weight_decay": (0.0, None), "arch_warmup_epochs": (0, None)},
            "fad.",
        )  # fmt: skip
        check_adam_betas(self.arch_betas, "fad.arch_betas")


def check_arch_warmup(cfg: TrainConfig, warmup_epochs: int, field_name: str) -> None:
    """A search whose weights-only warm-up fills every epoch would never move its alphas: refused."""
    if warmup_epochs >= cfg.optim.epochs:
        raise ConfigError(
            f"{field_name} ({warmup_epochs}) must be below optim.epochs ({cfg.optim.epochs}): the alphas "
            "move only after the warm-up; lower it or search longer"
        )


@dataclass
class DartsConfig(TrainConfig):
    """FAD DARTS search of an FCOS / RetinaNet head, or of Mask R-CNN's mask head (one group of cells).
    ``head`` is derived from ``fad``."""

    fad: FADConfig = field(default_factory=FADConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model.kind not in (*ONE_STAGE, "mask_rcnn"):
            raise ValueError(
                "FAD searches the head of a one-stage detector or the mask head of Mask R-CNN: model.kind "
                f"must be fcos or retinanet (the head) or mask_rcnn (the mask head), not {self.model.kind!r}"
            )
        spec = {
            "type": "fad_search",
            "c_prime": self.fad.c_prime,
            "cells_per_group": self.fad.cells_per_group,
            "repshare": self.fad.repshare,
            "decouple": self.fad.decouple,
            "streams": list(self.fad.streams),
            "rf_max": self.fad.rf_max,
            "ops": self.fad.ops,
        }
        if self.head not in (None, spec):
            raise ValueError("DartsConfig derives `head` from `fad`; remove the `head` key")
        self.head = spec
        check_arch_warmup(self, self.fad.arch_warmup_epochs, "fad.arch_warmup_epochs")

    def arch_settings(self) -> FADConfig:
        """Where the architecture optimiser's settings live (arch_lr, arch_betas, arch_weight_decay)."""
        return self.fad


@dataclass
class OPANASDartsSettings:
    """Differentiable baselines on the OPANAS DAG (OPANAS Table 6; raynas.spaces.opanas.mixed):
    ``relaxation: softmax`` is DARTS, ``sigmoid`` Fair DARTS (zero-one loss weight 10, derivation
    threshold 0.85). The architecture optimiser is DARTS's (Adam, lr 3e-4, betas (0.5, 0.999), wd 1e-3);
    ``arch_warmup_epochs`` as in :class:`FADConfig` (weights only first; 0, DARTS's reference, by default)."""

    relaxation: Literal["softmax", "sigmoid"] = "softmax"
    num_nodes: int = 5
    deformable: bool = False
    norm: str | None = None
    zero_one_weight: float = 10.0
    threshold: float = 0.85
    arch_lr: float = 3e-4
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    arch_warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if self.relaxation not in ("softmax", "sigmoid"):
            raise ConfigError(f"darts.relaxation must be softmax or sigmoid, got {self.relaxation!r}")
        check_ranges(
            self,
            {"num_nodes": (1, None), "zero_one_weight": (0.0, None), "threshold": (0.0, 1.0),
             "arch_lr": (0.0, None, "low_open"), "arch_betas": (0.0, 1.0, "high_open"),
             "arch_weight_decay": (0.0, None), "arch_warmup_epochs": (0, None)},
            "darts.",
        )  # fmt: skip
        check_adam_betas(self.arch_betas, "darts.arch_betas")


@dataclass
class OPANASDartsConfig(TrainConfig):
    """DARTS / Fair DARTS search of the OPANAS neck: weights on the training split, alphas on the search
    split (``data.search_fraction`` > 0). ``neck`` is derived from ``darts``."""

    darts: OPANASDartsSettings = field(default_factory=OPANASDartsSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data.search_fraction == 0:
            raise ConfigError(
                "the OPANAS DARTS search updates the architecture on the search split: set "
                "data.search_fraction > 0 (e.g. 0.2)"
            )
        d = self.darts
        spec = {
            "type": "opanas_mixed",
            "num_nodes": d.num_nodes,
            "deformable": d.deformable,
            "norm": d.norm,
            "relaxation": d.relaxation,
            "zero_one_weight": d.zero_one_weight,
            "threshold": d.threshold,
        }
        if self.neck not in (None, spec):
            raise ValueError("OPANASDartsConfig derives `neck` from `darts`; remove the `neck` key")
        self.neck = spec
        check_arch_warmup(self, d.arch_warmup_epochs, "darts.arch_warmup_epochs")

    def arch_settings(self) -> OPANASDartsSettings:
        return self.darts
