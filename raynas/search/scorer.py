"""Inference-only scoring of OPANAS sub-nets with the super-net's weights (Sec. 3.2.2).

A :class:`SupernetScorer` loads the trained super-net once and the validation images once. The
backbone does not change during the search, so it runs the detector's transform and backbone body
over the validation set a single time and replays those tensors for every candidate: a candidate
costs only neck + head + post-processing + COCO evaluation. ``cache_features=False`` runs the full
forward instead (the benchmark's reference, and the equivalence test).

The cache is bounded by ``cache_bytes`` (default 2 GiB, on the scorer's device): batches are cached in
order until the next one would pass the budget, and the rest run the full forward. At paper scale (5k
images, ResNet-50, 800 px) every body feature map would take hundreds of GB; the budget keeps the
speed-up where it fits and the memory where it does not. ``cached_batches`` / ``cache_nbytes`` say how
much was cached.

The class is plain Python (usable in a loop); :class:`ScorerPool` runs several of them as Ray
actors that restart on failure and retry the interrupted call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from raynas.config import from_dict
from raynas.data.loaders import base_dataset, build_dataset, make_loader
from raynas.evaluation import coco_metrics_from_detections
from raynas.io import select_device
from raynas.models.build import build_model
from raynas.models.cached import forward_from_body
from raynas.search.neck_cost import neck_cost, reference_features
from raynas.spaces.opanas import OPANASSpace
from raynas.training.config import SupernetConfig
from raynas.training.inputs import ensure_inputs

DEFAULT_CACHE_BYTES = 2 * 1024**3


def state_to_numpy(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The object-store form of weights: numpy arrays are shared zero-copy by actors on a node."""
    return {key: value.detach().cpu().numpy() for key, value in state_dict.items()}


class SupernetScorer:
    """Scores architectures of a trained OPANAS super-net on the search split (held out of training; never
    the val split that results are reported on). ``max_images`` caps the search split (a seeded subset)."""

    def __init__(
        self,
        weights: dict[str, np.ndarray],
        config: dict[str, Any],
        num_classes: int,
        max_images: int | None = None,
        batch_size: int = 8,
        device: str = "auto",
        cache_features: bool = True,
        num_threads: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.cfg = from_dict(SupernetConfig, config, where="scorer config")
        self.device = select_device(device)
        self.space = OPANASSpace(num_nodes=self.cfg.opanas.num_nodes)
        if max_images is not None:
            self.cfg.data.max_search_images = max_images
        # the data and the body file, before the model reads it (its own body outputs: in memory, below)
        ensure_inputs(self.cfg, progress=False, features=False)
        model = build_model(self.cfg.model, num_classes, self.cfg.neck, self.cfg.head)
        model.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in weights.items()})
        self.model = model.to(self.device).eval()
        self.supernet = self.model.backbone.neck
        dataset = build_dataset(self.cfg.data, "search", train_transforms=False)
        self.coco = base_dataset(dataset).coco
        self.batches = [
            ([img.to(self.device) for img in images], targets)
            for images, targets in make_loader(dataset, batch_size, shuffle=False)
        ]
        self.image_ids = [int(t["image_id"]) for _, targets in self.batches for t in targets]
        self.cache_features = cache_features
        self.cache_bytes = cache_bytes
        self.cache_nbytes = 0
        self._cache: list[tuple[Any, Any]] = []
        if cache_features:
            self._fill_cache()
        self._costs: dict[Any, tuple[int, int]] = {}
        self._reference: dict[str, torch.Tensor] | None = None  # reference_features, made once

    @property
    def cached_batches(self) -> int:
        return len(self._cache)

    @torch.inference_mode()
    def _fill_cache(self) -> None:
        """Cache batches in order while they fit in ``cache_bytes``; the first that does not ends it. Only
        the body's outputs and the image sizes are kept, not the transformed images."""
        for images, _ in self.batches:
            image_list, _ = self.model.transform(images)
            features = self.model.backbone.body(image_list.tensors)
            nbytes = sum(f.nbytes for f in features.values())
            if self.cache_nbytes + nbytes > self.cache_bytes:
                break
            self._cache.append((features, tuple(image_list.tensors.shape[-2:]), image_list.image_sizes))
            self.cache_nbytes += nbytes

    @torch.inference_mode()
    def _detect(self, index: int, images: list[torch.Tensor]):
        if index >= len(self._cache):
            return self.model(images)
        features, padded_size, image_sizes = self._cache[index]
        originals = [tuple(image.shape[-2:]) for image in images]
        return forward_from_body(self.model, features, padded_size, image_sizes, originals)

    def costs(self, arch) -> tuple[int, int]:
        """``(params, flops)`` of the discrete OPA-FPN neck the architecture describes (the constraint's
        definition: :mod:`raynas.search.neck_cost`)."""
        if arch not in self._costs:
            if self._reference is None:
                self._reference = reference_features(self.model, self.cfg.model.min_size)
            self._costs[arch] = neck_cost(self.supernet, arch, self._reference)
        return self._costs[arch]

    def score(self, config: dict[str, Any]) -> dict[str, Any]:
        """COCO metrics of the sub-net in ``config`` (a ``to_config`` dict), plus neck params/FLOPs."""
        arch = self.space.from_config(config)
        self.space.validate(arch)
        detections = []
        with self.supernet.using(arch):
            for index, (images, targets) in enumerate(self.batches):
                for output, target in zip(self._detect(index, images), targets):
                    detections.extend(_to_coco(output, int(target["image_id"])))
        metrics = coco_metrics_from_detections(self.coco, detections, self.image_ids)
        params, flops = self.costs(arch)
        return {**metrics, "neck_params": params, "neck_flops": flops}


def _to_coco(output: dict[str, torch.Tensor], image_id: int) -> list[dict[str, Any]]:
    boxes = output["boxes"].float().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores, labels = output["scores"].float().cpu().tolist(), output["labels"].cpu().tolist()
    return [
        {"image_id": image_id, "category_id": int(c), "bbox": b, "score": float(s)}
        for b, s, c in zip(xywh, scores, labels)
    ]
