"""OPANAS super-net training on Ray Train (Sec. 3.2.1): strict fair sampling + edge importance.

Each step draws K=4 sub-nets in which every edge takes each parameterised path exactly once,
runs forward+backward for each, adds ``mu * ||gamma||_1`` once, averages gradients over ranks and
takes one optimiser step. The ablations of Tables 5/6 are config switches (``opanas.sampling: uniform``
is SPOS's one uniform sub-net per step; ``opanas.gamma: false`` has no gamma and no L1 term;
``opanas.train_paths: all`` also draws skip/none), see :mod:`raynas.spaces.opanas.sampling`.

How ``mu`` relates to Eq. 12: the step minimises ``sum_k L_bbox(a_k) + mu * ||gamma||_1`` over the K fair
sub-nets ``a_k`` (``reduce: sum``, the default: gradients "accumulated" from the K sub-nets, Sec. 3.2.1),
i.e. Eq. 12 with its detection term summed over the step's sub-nets and the L1 term counted once, so
``mu = 1e-4`` is the paper's value as written. With ``reduce: mean`` the detection term is divided by K
while the L1 term is not, which weights the L1 term K times more relative to the detection loss.

The draw is seeded from ``(run.seed, step)`` so every rank samples the *same* K sub-nets without
communicating.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raynas.models.build import build_model
from raynas.models.cached import CachedBodyDetector
from raynas.models.replay import replaying
from raynas.spaces.opanas import OPANASSpace, fair_sample, fair_step_seed
from raynas.spaces.opanas.sampling import training_subnets
from raynas.training.config import SupernetConfig
from raynas.training.engine import Task, check_finite, ranks_agree, sync_gradients, unwrap
from raynas.training.launch import fit
from raynas.training.run_folder import TrainResult

#: fixed seed of the sub-nets evaluated after each epoch (the same ones every epoch)
EVAL_SEED = 20_210_601


def supernet_of(model: nn.Module):
    return unwrap(model).backbone.neck


class SupernetTask(Task):
    """Super-net training; gradients are reduced explicitly (several sub-graphs per step)."""

    use_ddp = False
    config_class = SupernetConfig

    def __init__(self, cfg: SupernetConfig):
        super().__init__(cfg)
        self.space = OPANASSpace(num_nodes=cfg.opanas.num_nodes)
        self._digest = hashlib.sha256()

    def build_model(self, num_classes: int) -> nn.Module:
        return build_model(self.cfg.model, num_classes, self.cfg.neck, self.cfg.head)

    def build_optimizers(self, model: nn.Module, iters_per_epoch: int) -> dict[str, Any]:
        self._optim = super().build_optimizers(model, iters_per_epoch)
        return self._optim

    def accumulate_gradients(self, model: nn.Module, batch, step: int) -> float:
        """Gradients of the step's sub-nets (K fair ones, summed or averaged with ``reduce: mean``; or one
        uniform one) and of the gamma L1 term; returns the loss. The backbone body is the same in all K
        sub-nets and sees the same batch, so it runs forward and backward once: each sub-net's loss is
        back-propagated to detached copies of the body features, whose summed gradients then go through
        the body in one backward. The gradients equal K full forward/backward passes; only BatchNorm's running
        statistics are updated once per step instead of K times (with the same batch statistics). On cached
        body outputs (``model.cache_features``) the frozen body does not run at all."""
        images, targets = batch
        opanas = self.cfg.opanas
        detector = unwrap(model)
        supernet = supernet_of(model)
        seed = fair_step_seed(self.cfg.run.seed, step)
        archs = training_subnets(self.space, opanas.sampling, opanas.train_paths, opanas.k, seed)
        for arch in archs:
            self._digest.update(repr(arch).encode())
        cached = isinstance(detector, CachedBodyDetector)  # the frozen body ran when the cache was made
        features, leaves = {}, {}
        if not cached:
            with self.autocast():
                transformed = detector.transform(images, targets)
                features = detector.backbone.body(transformed[0].tensors)
            # a frozen body's outputs need no gradient: no leaf asks for one
            leaves = OrderedDict((k, f.detach().requires_grad_(f.requires_grad)) for k, f in features.items())
        scale = 1.0 / len(archs) if opanas.reduce == "mean" else 1.0
        total = 0.0
        for index, arch in enumerate(archs):
            replay = contextlib.nullcontext() if cached else replaying(detector, transformed, leaves)
            with supernet.using(arch), replay, self.autocast():
                loss = sum(detector(images, targets).values())
            check_finite(loss, f"step {step}, fair sub-net {index}")
            (loss * scale).backward()
            total += float(loss.detach()) * scale
        used = [
            (f, leaf.grad) for f, leaf in zip(features.values(), leaves.values()) if leaf.grad is not None
        ]
        if used:
            torch.autograd.backward([f for f, _ in used], [g for _, g in used])
        l1 = supernet.gamma_l1()
        if l1 is None:
            return total
        l1 = opanas.mu * l1
        l1.backward()
        return total + float(l1.detach())

    def train_step(self, model: nn.Module, batch, step: int, extra_batches: dict) -> dict[str, float]:
        optimizer = self._optim["optimizer"]
        optimizer.zero_grad(set_to_none=True)
        loss = self.accumulate_gradients(model, batch, step)
        parameters = list(unwrap(model).parameters())
        sync_gradients(parameters)
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(parameters, self.cfg.optim.grad_clip)
        optimizer.step()
        self._optim["scheduler"].step()
        return {"loss": loss}

    def epoch_metrics(self, model: nn.Module) -> dict[str, Any]:
        """The digest of every sub-net drawn so far, and whether all ranks drew the same ones."""
        digest = int(self._digest.hexdigest()[:15], 16)
        gamma = supernet_of(model).gamma.detach()
        return {
            "subnet_digest": digest,
            "ranks_sampled_same_subnets": ranks_agree(digest, self.device),
            "gamma_l1": float(gamma.abs().sum()),
        }

    def evaluate(self, model: nn.Module, val_loader, device: torch.device) -> dict[str, float]:
        """Mean COCO metrics of a few fixed fair-sampled sub-nets (the paper's Fig. 4 'mmAP')."""
        from raynas.evaluation import evaluate_coco

        supernet = supernet_of(model)
        # the same sub-nets for every sampling rule, so the variants' curves compare
        archs = fair_sample(self.space, seed=EVAL_SEED)[: self.cfg.opanas.eval_subnets]
        results = []
        for arch in archs:
            with supernet.using(arch):
                results.append(evaluate_coco(unwrap(model), val_loader, device=device))
        return {key: sum(r[key] for r in results) / len(results) for key in results[0]}


def train_supernet(cfg: SupernetConfig, resume_from: str | Path | None = None) -> TrainResult:
    """Train the OPANAS super-net on Ray Train; its checkpoint feeds the evolutionary search."""
    return fit("supernet", cfg, resume_from=resume_from)
