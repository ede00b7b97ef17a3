"""First-order DARTS on Ray Train, for both spaces: the FAD head (FAD Sec. 3.2) and the OPANAS neck
(the DARTS / Fair DARTS baselines of OPANAS Table 6).

One trainer serves both through the differentiable-search contract of the searchable module (the
detector's head, else its neck; ``raynas.spaces.base.DartsSearchable``): ``arch_parameters()``,
``arch_penalty()`` (Fair DARTS's zero-one loss or ``None``), ``derive()`` and ``search_space()``, plus
``arch_weights()`` and ``candidates`` for the per-epoch heatmap. Each step first updates the architecture
weights (alphas) with Adam on a batch of the architecture data, then the network weights with SGD on a
batch of the weight data; alphas are never in the weight optimiser and the weights never move in the
alpha step. FAD splits the training set into two disjoint halves (the paper's bilevel setting); OPANAS
uses the training split for weights and the held-out search split for alphas. Gradients of both are
averaged over ranks explicitly, and every rank starts from the same seed, so all ranks hold the same
alphas and derive the same architecture.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from raynas.data.loaders import build_dataset, make_loader
from raynas.io import atomic_write_json
from raynas.models.build import build_model
from raynas.models.detector import INSTANCE_SEGMENTATION
from raynas.spaces.base import DartsSearchable, arch_to_json
from raynas.spaces.fad import FADSpace
from raynas.training.config import DartsConfig, OPANASDartsConfig
from raynas.training.engine import Task, check_finite, ranks_agree, sync_gradients, unwrap
from raynas.training.launch import fit
from raynas.training.run_folder import TrainResult


def searchable_of(model: nn.Module) -> DartsSearchable:
    """The module whose architecture is searched (a :class:`DartsSearchable` with alphas): a searchable head
    (FAD), Mask R-CNN's searchable mask head (FAD for instance segmentation), else the neck (OPANAS)."""
    detector = unwrap(model)
    mask_head = getattr(getattr(detector, "roi_heads", None), "mask_head", None)
    for module in (getattr(detector, "head", None), mask_head, getattr(detector.backbone, "neck", None)):
        if isinstance(module, DartsSearchable) and module.arch_parameters():
            return module
    raise ValueError("the detector has no searchable head or neck (no architecture parameters)")


def peak_memory_mb(device: torch.device) -> float:
    """The search's memory high-water mark (FAD Table 2's memory column): allocated CUDA memory on a GPU,
    else the peak resident size of this worker process (data and Python included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def split_halves(dataset) -> tuple[Subset, Subset]:
    """Disjoint halves of the training set: even indices train weights, odd ones alphas."""
    if len(dataset) < 2:
        raise ValueError("DARTS needs at least 2 training images (one per half)")
    return Subset(dataset, range(0, len(dataset), 2)), Subset(dataset, range(1, len(dataset), 2))


class DartsTask(Task):
    use_ddp = False
    config_class = DartsConfig

    def build_model(self, num_classes: int) -> nn.Module:
        return build_model(self.cfg.model, num_classes, self.cfg.neck, self.cfg.head)

    def train_loaders(self, train_dataset) -> dict[str, Any]:
        weights_half, alphas_half = split_halves(train_dataset)
        d, seed = self.cfg.data, self.cfg.run.seed
        return {
            "weights": make_loader(weights_half, d.batch_size, True, d.loader_workers, seed),
            "alphas": make_loader(alphas_half, d.batch_size, True, d.loader_workers, seed + 1),
        }

    def build_optimizers(self, model: nn.Module, iters_per_epoch: int) -> dict[str, Any]:
        searchable = searchable_of(model)
        alphas = {id(p) for p in searchable.arch_parameters()}
        weights = [p for p in model.parameters() if p.requires_grad and id(p) not in alphas]
        settings = self.cfg.arch_settings()
        optim = super().build_optimizers(nn.ParameterList(weights), iters_per_epoch)
        optim["arch_optimizer"] = torch.optim.Adam(
            searchable.arch_parameters(),
            lr=settings.arch_lr,
            betas=tuple(settings.arch_betas),
            weight_decay=settings.arch_weight_decay,
        )
        self._optim = optim
        self._weights = weights
        self._first_alpha_step = settings.arch_warmup_epochs * iters_per_epoch
        return optim

    def alpha_step(self, model: nn.Module, batch, step: int) -> float:
        """Adam step on the alphas from a batch of the architecture data (plus the space's penalty,
        e.g. Fair DARTS's zero-one loss); computes no weight gradient."""
        searchable = searchable_of(model)
        alphas = searchable.arch_parameters()
        images, targets = batch
        with self.autocast():
            arch_loss = sum(model(images, targets).values())
        penalty = searchable.arch_penalty()
        if penalty is not None:
            arch_loss = arch_loss + penalty
        check_finite(arch_loss, f"step {step} (alpha step)")
        grads = torch.autograd.grad(arch_loss, alphas)
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad
        sync_gradients(alphas)
        self._optim["arch_optimizer"].step()
        for alpha in alphas:
            alpha.grad = None
        return float(arch_loss.detach())

    def weight_step(self, model: nn.Module, batch, step: int) -> float:
        """SGD step on the network weights from a batch of the weight data, alphas frozen meanwhile."""
        alphas = searchable_of(model).arch_parameters()
        images, targets = batch
        optimizer = self._optim["optimizer"]
        optimizer.zero_grad(set_to_none=True)
        for alpha in alphas:
            alpha.requires_grad_(False)
        try:
            with self.autocast():
                loss = sum(model(images, targets).values())
            check_finite(loss, f"step {step} (weight step)")
            loss.backward()
        finally:
            for alpha in alphas:
                alpha.requires_grad_(True)
        sync_gradients(self._weights)
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self._weights, self.cfg.optim.grad_clip)
        optimizer.step()
        self._optim["scheduler"].step()
        return float(loss.detach())

    def train_step(self, model: nn.Module, batch, step: int, extra_batches: dict) -> dict[str, float]:
        """First-order DARTS: alpha step on ``extra_batches["alphas"]``, then weight step on ``batch``; in
        the ``arch_warmup_epochs`` before, the weight step alone (the alphas stay where they started)."""
        if step < self._first_alpha_step:
            return {"loss": self.weight_step(model, batch, step)}
        arch_loss = self.alpha_step(model, extra_batches["alphas"], step)
        loss = self.weight_step(model, batch, step)
        return {"loss": loss, "arch_loss": arch_loss}

    def epoch_metrics(self, model: nn.Module) -> dict[str, Any]:
        """The architecture derived now (logged every epoch) and whether all ranks derived the same."""
        searchable = searchable_of(model)
        config = searchable.search_space().to_config(searchable.derive())
        digest = int(hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:15], 16)
        return {
            "genotype": json.dumps(config, sort_keys=True),
            "ranks_same_genotype": ranks_agree(digest, self.device),
            "peak_memory_mb": peak_memory_mb(self.device),
        }

    def extra_state(self, model: nn.Module) -> dict[str, Any]:
        searchable = searchable_of(model)
        return {
            "genotype": searchable.search_space().to_config(searchable.derive()),
            "candidates": list(searchable.candidates),
            "alphas": searchable.alphas.detach().cpu().clone(),
        }

    def write_curves(self, writer, model: nn.Module, epoch: int) -> None:
        """The architecture weights (softmax of each alpha tensor over its last axis) as histograms, and the
        searchable module's own weights (softmax, or Fair DARTS's sigmoids) as a heatmap PNG per epoch,
        ``<run_dir>/arch_weights/epoch_<N>.png``, next to the ``tensorboard`` folder."""
        from raynas.viz import plot_arch_weights

        searchable = searchable_of(model)
        for index, alphas in enumerate(searchable.arch_parameters()):
            writer.add_histogram(f"arch_weights/{index}", torch.softmax(alphas.detach().float(), -1), epoch)
        path = Path(writer.logdir).parent / "arch_weights" / f"epoch_{epoch}.png"
        plot_arch_weights(searchable.arch_weights(), searchable.candidates, path, f"epoch {epoch}")


class OPANASDartsTask(DartsTask):
    """DARTS / Fair DARTS on the OPANAS DAG: weights on the training split, alphas on the search split."""

    config_class = OPANASDartsConfig

    def train_loaders(self, train_dataset) -> dict[str, Any]:
        d, seed = self.cfg.data, self.cfg.run.seed
        search = self.features(build_dataset(d, "search", train_transforms=True), "search")
        return {
            "weights": make_loader(train_dataset, d.batch_size, True, d.loader_workers, seed),
            "alphas": make_loader(search, d.batch_size, True, d.loader_workers, seed + 1),
        }


@dataclass
class FADResult(TrainResult):
    genotype: Any = None
    genotype_path: Path | None = None


def search_opanas_darts(cfg: OPANASDartsConfig, resume_from: str | Path | None = None) -> FADResult:
    """DARTS / Fair DARTS on the OPANAS DAG; writes ``arch.json`` (loads as a neck spec's arch) and
    ``arch.png`` into the run directory. ``genotype`` is the derived ``OPANASArch``."""
    from raynas.spaces.opanas import OPANASSpace
    from raynas.viz import draw_opanas_arch

    result = fit("opanas_darts", cfg, resume_from=resume_from)
    space = OPANASSpace(cfg.darts.num_nodes)
    arch = space.from_config(result.load_state()["genotype"])
    path = result.run_dir / "arch.json"
    atomic_write_json(path, json.loads(arch_to_json(space, arch)))
    draw_opanas_arch(arch, result.run_dir / "arch.png", f"{cfg.darts.relaxation} relaxation")
    return FADResult(result.run_dir, result.checkpoint_dir, result.metrics, arch, path)


def search_fad(cfg: DartsConfig, resume_from: str | Path | None = None) -> FADResult:
    """Run the DARTS search; writes ``genotype.json`` and ``genotype.png`` into the run directory."""
    from raynas.viz import draw_fad_genotype

    result = fit("darts", cfg, resume_from=resume_from)
    state = result.load_state()
    groups = 1 if cfg.model.kind in INSTANCE_SEGMENTATION else 2
    space = FADSpace(candidates=state["candidates"], num_groups=groups)
    genotype = space.from_config(state["genotype"])
    path = result.run_dir / "genotype.json"
    atomic_write_json(path, json.loads(arch_to_json(space, genotype)))
    draw_fad_genotype(genotype, result.run_dir / "genotype.png")
    return FADResult(result.run_dir, result.checkpoint_dir, result.metrics, genotype, path)
