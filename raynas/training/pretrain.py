"""A body pretrained on the proxy's digit glyphs: the papers' ImageNet pretraining, made locally.

Both papers start every detector and super-net from an ImageNet-pretrained ResNet (OPANAS Sec. 4.1;
FAD Sec. 4.1). Nothing is downloaded here, so ``raynas pretrain`` trains the same torchvision ResNet as
a 10-way classifier of single-digit crops drawn from the digits generator's *training* scans
(:func:`raynas.data.digits.digit_crops`) and saves its state dict without the classifier, in
torchvision's key format, so ``backbone_weights`` loads it like any torchvision checkpoint.

The scenes proxy (:mod:`raynas.data.scenes`) pretrains the same way on its own material
(``source="scenes"``): 10-way crops of its font glyphs (the characters its classes are made of) on its
textured backgrounds, so its body has seen the glyphs and textures it will detect, and nothing of its
annotations (the tags a / b that the context rules decide are never a pretraining label). Its fonts are
shared by every split, so the held-out accuracy measures unseen renderings, not unseen fonts.

With ``context_weight > 0`` (scenes only) the body also learns a dense *context* task on freshly rendered
scenes (:mod:`raynas.data.scene_context`): a 1x1 conv on C4 and one on C5 say, at every cell, whether its
centre lies outside every zone or in a zone of type a or b. It stands for what ImageNet gives a real body:
coarse levels that carry scene-level cues, which a top-down neck path can then bring to small objects
(docs/proxy.md, "context probe"). The two convs are dropped with the classifier.

Measured choices (``shared/notes/proxy-pretraining-calibration.md``): GroupNorm in the classifier,
because the detector must keep the norm it was pretrained with and GroupNorm does not depend on the
small detection batches; 32 px crops (digits 12-32 px), which learn within a few hundred AdamW steps
where 64 px crops stayed at chance.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torchvision
from torch import nn

from raynas.config import ConfigError, check_writable_folder
from raynas.data.digits import digit_crops
from raynas.data.scene_context import NO_ZONE, context_crops, context_scenes
from raynas.data.scene_layout import LAYOUTS, REFERENCE_SIZE
from raynas.io import atomic_torch_save, atomic_write_json, file_lock, run_info
from raynas.models.backbones import RESNETS, _norm_layer
from raynas.models.config import RECIPE_BODY_STEPS

PRETRAIN_SOURCES = ("digits", "scenes")

# torchvision's detection transform normalises with these (GeneralizedRCNNTransform's defaults), so the
# classifier sees images normalised the way the detector will show them.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class PretrainConfig:
    """Classifier pretraining of a detector body on digit crops (about 2 minutes on 2 CPU cores)."""

    backbone: str = "resnet18"
    source: Literal["digits", "scenes"] = "digits"  # which proxy's crops (the data the body will detect)
    norm: Literal["gn", "bn"] = "gn"
    steps: int = RECIPE_BODY_STEPS
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    crop_size: int = 32
    min_side: int = 12
    eval_crops: int = 1000
    seed: int = 0
    context_weight: float = 0.0  # > 0: the dense zone-type task on C4 / C5 as well (scenes only)
    context_scenes: int = 256  # fresh scenes rendered once for it (plus 32 held out)
    context_crop: int = 192  # px crops of them, a multiple of 32
    context_batch: int = 8
    context_layout: str = "v1"  # the scenes layout of those scenes (the data's: raynas.data.scene_layout)

    def __post_init__(self) -> None:
        if self.source not in PRETRAIN_SOURCES:
            raise ValueError(f"pretrain: source must be one of {list(PRETRAIN_SOURCES)}, got {self.source!r}")
        if self.backbone not in RESNETS:
            raise ValueError(f"pretrain: backbone must be one of {list(RESNETS)}, got {self.backbone!r}")
        for name in ("steps", "batch_size", "eval_crops"):
            if getattr(self, name) < 1:
                raise ValueError(f"pretrain: {name} must be >= 1, got {getattr(self, name)}")
        if not 16 <= self.crop_size <= 256 or not 4 <= self.min_side <= self.crop_size:
            raise ValueError(
                f"pretrain: need 16 <= crop_size <= 256 and 4 <= min_side <= crop_size, got "
                f"crop_size={self.crop_size}, min_side={self.min_side}"
            )
        if self.context_weight < 0 or (self.context_weight > 0 and self.source != "scenes"):
            raise ValueError(
                f"pretrain: context_weight must be >= 0 and only > 0 with source 'scenes', got "
                f"{self.context_weight} with source {self.source!r}"
            )
        if self.context_weight > 0 and (
            self.context_scenes < 1 or self.context_batch < 1
            or not 32 <= self.context_crop <= REFERENCE_SIZE or self.context_crop % 32
        ):  # fmt: skip
            raise ValueError(
                f"pretrain: the context task needs context_scenes >= 1, context_batch >= 1 and context_crop "
                f"a multiple of 32 in [32, {REFERENCE_SIZE}], got {self.context_scenes}, "
                f"{self.context_batch}, {self.context_crop}"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"pretrain: lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )


def glyph_crops(
    rng: np.random.Generator, count: int, size: int = 32, min_side: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` single-glyph classification crops of the scenes proxy: uint8 ``[count, size, size, 3]`` and
    int64 labels (the index of the character in :data:`raynas.data.scene_layout.GLYPHS`). One glyph a crop,
    its longer side log-uniform in ``[min_side, size]``, at a random position on a scenes background."""
    from raynas.data import glyphs
    from raynas.data.scene_layout import GLYPHS, MAX_ROTATION, MIN_CONTRAST

    images = np.empty((count, size, size, 3), dtype=np.uint8)
    labels = rng.integers(len(GLYPHS), size=count)
    log_min, log_max = np.log(min_side), np.log(size)
    for index, label in enumerate(labels):
        canvas = glyphs.background(rng, size)
        side = min(size, round(float(np.exp(rng.uniform(log_min, log_max)))))
        alpha = glyphs.glyph_alpha(rng, GLYPHS[int(label)], side, MAX_ROTATION)
        h, w = alpha.shape
        top, left = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
        region = canvas[top : top + h, left : left + w]
        colour = glyphs.any_colour(rng, region.mean(axis=(0, 1)), MIN_CONTRAST)
        region += (colour - region) * alpha[..., None]
        canvas += rng.normal(0.0, rng.uniform(2.0, 8.0), canvas.shape)
        images[index] = canvas.round().clip(0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


CONTEXT_STRIDES = (16, 32)  # C4, C5 of a ResNet
CONTEXT_HELD_OUT = 32  # scenes


def _normalised(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGE_STD).view(1, 3, 1, 1)


def _batch(cfg: PretrainConfig, rng: np.random.Generator, count: int, split: str):
    if cfg.source == "scenes":
        images, labels = glyph_crops(rng, count, size=cfg.crop_size, min_side=cfg.min_side)
    else:
        images, labels = digit_crops(rng, count, size=cfg.crop_size, split=split, min_side=cfg.min_side)
    return _normalised(images), torch.from_numpy(labels)


class ContextHeads(nn.Module):
    """The dense context task's two 1x1 convs (C4, C5 -> no zone / type a / type b), run on a torchvision
    ResNet classifier's trunk. Dropped after pretraining, like the classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        c5 = model.fc.in_features
        self.c4, self.c5 = nn.Conv2d(c5 // 2, 3, 1), nn.Conv2d(c5, 3, 1)

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        c4 = model.layer3(model.layer2(model.layer1(x)))
        return self.c4(c4), self.c5(model.layer4(c4))


def _context_loss(heads: ContextHeads, model: nn.Module, crops: np.ndarray, labels: dict) -> torch.Tensor:
    logits = heads(model, _normalised(crops))
    losses = [
        nn.functional.cross_entropy(out, torch.from_numpy(labels[s]))
        for out, s in zip(logits, CONTEXT_STRIDES)
    ]
    return sum(losses) / len(losses)


@torch.inference_mode()
def _context_accuracy(heads: ContextHeads, model: nn.Module, cfg: PretrainConfig) -> dict[str, float]:
    """Held-out accuracy of the zone type (a vs b) at the C4 and C5 cells whose centre lies in a zone, on
    whole fresh scenes (32, or as many as the training pool); chance is about 50 %."""
    rng, count = np.random.default_rng([cfg.seed, 3]), min(CONTEXT_HELD_OUT, cfg.context_scenes)
    images, maps = context_scenes(rng, count, REFERENCE_SIZE, cfg.context_layout)
    crops, labels = context_crops(rng, images, maps, count, REFERENCE_SIZE, CONTEXT_STRIDES)
    model.eval()
    logits = heads(model, _normalised(crops))
    model.train()
    result = {}
    for name, out, stride in zip(("C4", "C5"), logits, CONTEXT_STRIDES):
        target = torch.from_numpy(labels[stride])
        inside = target != NO_ZONE
        zone_logits = out[:, 1:].argmax(1) + 1  # a or b, where the cell lies in a zone
        result[name] = float((zone_logits == target)[inside].float().mean())
    return result


@torch.inference_mode()
def _accuracy(model: nn.Module, cfg: PretrainConfig) -> float:
    model.eval()
    x, y = _batch(cfg, np.random.default_rng([cfg.seed, 1]), cfg.eval_crops, "val")
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(256), y.split(256)))
    model.train()
    return correct / len(y)


def pretrain_body(cfg: PretrainConfig, out_path: str | Path, log_every: int = 100) -> dict:
    """Train the classifier, save the body's state dict to ``out_path`` (plus ``<name>.run_info.json``).

    A file already at ``out_path`` is replaced only when raynas wrote it (its run record is beside it):
    ``--out`` may name a user's own weights, which are never silently overwritten.

    Returns the run record: held-out accuracy on crops of unseen scans, final loss, wall time.
    """
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ConfigError(f"pretrain output {str(out_path)!r} is a folder; give the path of a .pt file")
    if out_path.exists() and not out_path.with_suffix(".run_info.json").is_file():
        raise ConfigError(
            f"pretrain output {str(out_path)!r} exists and raynas did not write it (no "
            f"{out_path.with_suffix('.run_info.json').name} beside it); give another --out, or move that file"
        )
    check_writable_folder(str(out_path.parent), "pretrain output folder")  # before minutes of training
    torch.manual_seed(cfg.seed)
    model = torchvision.models.get_model(
        cfg.backbone, weights=None, num_classes=10, norm_layer=_norm_layer(cfg.norm, "resnet")
    )
    heads = ContextHeads(model) if cfg.context_weight > 0 else None
    if heads is not None:
        print(f"[pretrain] rendering {cfg.context_scenes} scenes for the context task", flush=True)
        pool = context_scenes(
            np.random.default_rng([cfg.seed, 2]), cfg.context_scenes, REFERENCE_SIZE, cfg.context_layout
        )
    parameters = list(model.parameters()) + (list(heads.parameters()) if heads is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1, anneal_strategy="cos"
    )
    started, losses = time.perf_counter(), []
    model.train()
    for step in range(cfg.steps):
        x, y = _batch(cfg, np.random.default_rng([cfg.seed, 0, step]), cfg.batch_size, "train")
        loss = nn.functional.cross_entropy(model(x), y)
        if heads is not None:
            crops, labels = context_crops(
                np.random.default_rng([cfg.seed, 4, step]),
                *pool,
                cfg.context_batch,
                cfg.context_crop,
                CONTEXT_STRIDES,
            )
            loss = loss + cfg.context_weight * _context_loss(heads, model, crops, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log_every and ((step + 1) % log_every == 0 or step + 1 == cfg.steps):
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            print(f"[pretrain] step {step + 1}/{cfg.steps}: loss {recent:.3f}", flush=True)
    accuracy = _accuracy(model, cfg)
    context = _context_accuracy(heads, model, cfg) if heads is not None else {}
    wall = time.perf_counter() - started
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    atomic_torch_save(body, out_path)
    record = run_info(
        asdict(cfg),
        task="raynas.training.pretrain",
        weights=str(out_path),
        heldout_accuracy=accuracy,
        heldout_context_accuracy=context,
        final_loss=sum(losses[-20:]) / len(losses[-20:]),
        wall_time_s=wall,
    )
    atomic_write_json(out_path.with_suffix(".run_info.json"), record)
    reads = "".join(f", zone type at {level} {value:.3f}" for level, value in context.items())
    print(
        f"[pretrain] {cfg.backbone}: held-out accuracy {accuracy:.3f}{reads} in {wall:.0f} s -> {out_path}",
        flush=True,
    )
    return record


#: the pretrained bodies, by name: glyph crops only, or with the dense context task as well (scenes only;
#: the body ``backbone_weights: proxy`` names on each proxy: ``raynas.models.config.PROXY_BODIES``)
BODIES = {"glyphs": {}, "context": {"context_weight": 1.0}}


def context_settings(layout: str) -> dict:
    """The context task's settings for scenes of ``layout``: the layout and, where it needs other crops
    than the default (:attr:`raynas.data.scene_layout.Layout.context_crop`), their size and count."""
    crop, batch = LAYOUTS[layout].context_crop
    default = PretrainConfig(source="scenes")
    differ = (crop, batch) != (default.context_crop, default.context_batch)
    return {"context_layout": layout, **({"context_crop": crop, "context_batch": batch} if differ else {})}


#: what makes two bodies different bodies, beyond their length of training: which task and on what scenes
BODY_KEYS = ("context_weight", "context_layout", "context_crop", "context_batch")


def _check_same_body(path: Path, settings: dict) -> None:
    """A body raynas pretrained (its run record beside it) is reused only for the body this job asks for:
    another task, layout or crop is another body (a user's own weights, without a record, are theirs)."""
    record = path.with_suffix(".run_info.json")
    if not record.is_file():
        return
    try:
        recorded = json.loads(record.read_text()).get("config", {})
    except (OSError, ValueError, AttributeError):
        return  # the weights are still the user's to use; the record only guards a mix-up
    default = asdict(PretrainConfig())
    differ = [key for key in BODY_KEYS if recorded.get(key, default[key]) != settings.get(key, default[key])]
    if differ:
        was = ", ".join(f"{key}={recorded.get(key, default[key])!r}" for key in differ)
        wanted = ", ".join(f"{key}={settings.get(key, default[key])!r}" for key in differ)
        raise ConfigError(
            f"{path} is a body pretrained with {was}, and this job needs {wanted}; delete it (and "
            f"{record.name}) to pretrain it again, or point backbone_weights at another file"
        )


def check_body(body: str, source: str) -> None:
    """One line for a body this source has no recipe for (the context task needs scenes)."""
    if body not in BODIES or (BODIES[body] and source != "scenes"):
        names = [name for name in BODIES if source == "scenes" or not BODIES[name]]
        raise ConfigError(f"body {body!r} is not one of {names} for {source} data")


def ensure_proxy_weights(
    path: str | Path,
    backbone: str,
    source: str = "digits",
    body: str = "glyphs",
    steps: int | None = None,
    layout: str = "v1",
    *,
    smoke: bool = False,
) -> Path:
    """Pretrain the body ``body`` on ``source``'s material into ``path`` unless it is there
    (deterministic; one writer per node); its context task on scenes of ``layout`` (the data's), for
    ``steps`` (None: the recipe's). ``smoke``: small pools too, for a seconds-scale body of a smoke run."""
    check_body(body, source)
    path = Path(path)
    settings = dict(BODIES[body])
    if settings:
        settings.update(context_settings(layout))
    if path.is_file():
        _check_same_body(path, settings)
        return path
    if steps is not None:
        settings["steps"] = steps
    if smoke:
        settings.update(eval_crops=64, **({"context_scenes": 4} if BODIES[body] else {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / f".{path.name}.lock"):
        if not path.is_file():
            if not smoke:
                print(f"[pretrain] no pretrained body at {path}: pretraining {backbone} ({body}) on {source}",
                      flush=True)  # fmt: skip
            config = PretrainConfig(backbone=backbone, source=source, **settings)
            pretrain_body(config, path, log_every=0 if smoke else 100)
    return path
