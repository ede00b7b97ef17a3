"""The one training loop every raynas job runs inside Ray Train (standalone, super-net, DARTS).

A :class:`Task` says what one optimisation step is; :func:`worker_loop` owns everything else:
seeding, data loaders (sharded with the run seed, see ``make_loader``), device placement, resuming from
``ray.train.get_checkpoint()``, the NaN/Inf guard, per-epoch evaluation on rank 0 and reporting
metrics *together with* a checkpoint (Ray Train V2 keeps only metrics that come with one).
"""

from __future__ import annotations

import abc
import contextlib
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from raynas.checkpoints import load_state, write_checkpoint
from raynas.config import from_dict
from raynas.data.loaders import base_dataset, build_dataset, make_loader
from raynas.models.detector import INSTANCE_SEGMENTATION, iou_types
from raynas.registry import TASKS, resolve
from raynas.training.config import TrainConfig
from raynas.training.inputs import ensure_inputs


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf: the run stops, the last checkpoint (the last good state) stays."""


def world_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Raise :class:`NonFiniteLossError` on every rank when the loss of *any* rank is not finite.

    The flag is all-reduced so all ranks stop together instead of one hanging in a collective.
    """
    finite = torch.isfinite(loss.detach()).all().to(torch.float32).reshape(1)
    _, world = world_info()
    if world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if finite.item() < 1:
        raise NonFiniteLossError(
            f"non-finite loss ({loss.detach().flatten()[:4].tolist()}) at {where}; the run stops "
            "and its last checkpoint is the last good state. Lower optim.lr, raise optim.warmup_iters "
            "or set optim.grad_clip, then resume from that checkpoint."
        )


def ranks_agree(value: int, device: torch.device) -> bool:
    """Whether every rank holds the same ``value`` (a digest of what each rank sampled or derived); always
    ``True`` outside a distributed run. Gathered on ``device``: NCCL (GPU runs) gathers CUDA tensors only."""
    _, world = world_info()
    if world == 1:
        return True
    gathered = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(gathered, torch.tensor([value], dtype=torch.int64, device=device))
    return len({int(t.item()) for t in gathered}) == 1


def sync_gradients(parameters: list[nn.Parameter]) -> None:
    """Average gradients over ranks in one flat all-reduce (for tasks that do not use DDP).

    Super-net and DARTS steps run several forward/backward passes over *different* sub-graphs
    before one update; DDP's reducer assumes one graph per backward, so those tasks reduce the
    accumulated gradients explicitly instead.
    """
    _, world = world_info()
    if world == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    # a parameter no rank used this step (a path no sampled sub-net took) keeps grad None, so the
    # optimiser skips it (no weight decay or momentum) exactly as in a single-process run
    device = params[0].device if params else torch.device("cpu")
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(used, op=dist.ReduceOp.MAX)
    params = [p for p, u in zip(params, used.tolist()) if u]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def warmup_step_lambda(warmup_iters: int, warmup_factor: float, milestones_iters: list[int], decay: float):
    """LR factor per iteration: linear warm-up, then x``decay`` at each milestone (in iterations)."""

    def factor(it: int) -> float:
        warm = 1.0
        if it < warmup_iters:
            alpha = it / max(1, warmup_iters)
            warm = warmup_factor * (1 - alpha) + alpha
        return warm * decay ** sum(it >= m for m in milestones_iters)

    return factor


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class Task(abc.ABC):
    """One kind of training job. Subclasses build the model and define ``train_step``."""

    #: wrap the model in DDP via ``prepare_model``; tasks with several sub-graphs per step set False
    use_ddp: bool = True
    config_class: type = TrainConfig

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.device = torch.device("cpu")
        #: the detector whose frozen body's cached outputs the job reads (``model.cache_features``), else None
        self.frozen: nn.Module | None = None

    def autocast(self):
        """Context for forward passes: bf16 autocast on CUDA when ``run.amp``, else a no-op."""
        return autocast_context(self.device, self.cfg.run.amp)

    # -- building ---------------------------------------------------------------------------
    @abc.abstractmethod
    def build_model(self, num_classes: int) -> nn.Module:
        """The detector this job trains, for a dataset of ``num_classes`` (background included)."""

    def build_optimizers(self, model: nn.Module, iters_per_epoch: int) -> dict[str, Any]:
        """``{"optimizer": ..., "scheduler": ...}`` (more entries allowed; all are checkpointed)."""
        opt = self.cfg.optim
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
        milestones = [m * iters_per_epoch for m in opt.milestones]
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_step_lambda(opt.warmup_iters, opt.warmup_factor, milestones, opt.decay)
        )
        return {"optimizer": optimizer, "scheduler": scheduler}

    def train_loaders(self, train_dataset) -> dict[str, Any]:
        """Named training loaders; the first one drives the epoch. Each is a ``make_loader(..., shuffle=True,
        seed=<from cfg.run.seed>)``, so the run seed sets the data order on every worker count."""
        d = self.cfg.data
        return {"train": make_loader(train_dataset, d.batch_size, True, d.loader_workers, self.cfg.run.seed)}

    def features(self, dataset, split: str):
        """``dataset`` (the ``split`` images) as the frozen body's cached outputs once :attr:`frozen` is set
        (made on the driver by ``ensure_inputs``; here only if missing); else ``dataset`` itself."""
        if self.frozen is None:
            return dataset
        from raynas.data.feature_cache import feature_dataset

        model = self.cfg.model
        return feature_dataset(dataset, split, self.frozen, self.cfg.data.root, model.cache_dtype)

    # -- stepping ---------------------------------------------------------------------------
    @abc.abstractmethod
    def train_step(self, model: nn.Module, batch, step: int, extra_batches: dict) -> dict[str, float]:
        """One optimisation step on ``batch``; returns the scalars to log (``loss`` among them)."""

    def evaluate(self, model: nn.Module, val_loader, device: torch.device) -> dict[str, float]:
        from raynas.evaluation import evaluate_coco

        kinds = iou_types(self.cfg.model.kind)
        return evaluate_coco(unwrap(model), val_loader, device=device, iou_types=kinds)

    def extra_state(self, model: nn.Module) -> dict[str, Any]:
        """Task-specific values to store in the checkpoint (e.g. the derived genotype)."""
        return {}

    def epoch_metrics(self, model: nn.Module) -> dict[str, Any]:
        return {}

    def write_curves(self, writer, model: nn.Module, epoch: int) -> None:  # noqa: B027 (optional hook)
        """Task-specific TensorBoard entries beyond the epoch's scalars (e.g. DARTS's alphas)."""


def autocast_context(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA (no loss scaler needed); a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def worker_loop(loop_config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` of every raynas ``TorchTrainer``.

    ``loop_config = {"task": "module.TaskClass", "config": <config dict>, "resume_from": Checkpoint | None,
    "run_dir": str}``; a checkpoint of this run (a restart after a worker failure) takes precedence over
    ``resume_from``. Rank 0 writes every epoch's numeric metrics as TensorBoard scalars under
    ``<run_dir>/tensorboard`` (``tensorboard --logdir runs``).
    """
    task_cls = resolve(TASKS, loop_config["task"])
    cfg = from_dict(task_cls.config_class, loop_config["config"])
    task = task_cls(cfg)
    rank, world = world_info()
    torch.manual_seed(cfg.run.seed)

    ensure_inputs(cfg, progress=False, features=False)  # the features for this worker's body: below
    masks = cfg.model.kind in INSTANCE_SEGMENTATION
    train_dataset = build_dataset(cfg.data, "train", masks=masks)
    val_dataset = build_dataset(cfg.data, "val", masks=masks)
    num_classes = base_dataset(train_dataset).num_classes

    device = ray.train.torch.get_device()
    task.device = device
    model = task.build_model(num_classes)
    if cfg.model.cache_features:  # the neck and head run on the frozen body's outputs, computed once
        from raynas.models.cached import CachedBodyDetector

        task.frozen = model
        train_dataset, val_dataset = task.features(train_dataset, "train"), task.features(val_dataset, "val")
        model = CachedBodyDetector(model)
    model = ray.train.torch.prepare_model(model, parallel_strategy="ddp" if task.use_ddp else None)
    loaders = _prepare_train_loaders(task.train_loaders(train_dataset), world)
    main_loader = next(iter(loaders.values()))
    iters_per_epoch = len(main_loader)
    optim = task.build_optimizers(unwrap(model), iters_per_epoch)

    start_epoch, step = 0, 0
    checkpoint = ray.train.get_checkpoint() or loop_config.get("resume_from")
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(directory)
        unwrap(model).load_state_dict(state["model"])
        for key, obj in optim.items():
            obj.load_state_dict(state["optim"][key])
        start_epoch, step = state["epoch"], state["step"]
        if rank == 0:
            print(f"[raynas] resumed from epoch {start_epoch} (step {step})", flush=True)

    val_loader = make_loader(val_dataset, cfg.data.batch_size, False, cfg.data.loader_workers)
    curves = _curve_writer(loop_config.get("run_dir")) if rank == 0 else None
    for epoch in range(start_epoch, cfg.optim.epochs):
        model.train()
        for loader in loaders.values():
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
        extra_iters = {name: iter(loader) for name, loader in list(loaders.items())[1:]}
        started, losses = time.perf_counter(), []
        for batch in main_loader:
            extra = {}
            for name, iterator in extra_iters.items():
                try:
                    extra[name] = next(iterator)
                except StopIteration:
                    extra_iters[name] = iter(loaders[name])
                    extra[name] = next(extra_iters[name])
            values = task.train_step(model, batch, step, extra)
            losses.append(values["loss"])
            step += 1
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": float(sum(losses) / max(1, len(losses))),
            "lr": float(optim["optimizer"].param_groups[0]["lr"]),
            "epoch_time_s": time.perf_counter() - started,
            # > 0 shows this attempt resumed (a worker restart or resume_from) instead of starting over
            "started_at_epoch": start_epoch,
        }
        metrics.update(task.epoch_metrics(model))
        last = epoch + 1 == cfg.optim.epochs
        if rank == 0 and ((epoch + 1) % cfg.run.eval_every == 0 or last):
            metrics.update(task.evaluate(model, val_loader, device))
        metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                write_checkpoint(
                    tmp,
                    cfg,
                    loop_config["task"],
                    unwrap(model).state_dict(),
                    num_classes,
                    epoch + 1,
                    step,
                    optim={key: obj.state_dict() for key, obj in optim.items()},
                    metrics=metrics,
                    extra=task.extra_state(unwrap(model)),
                )
                print(f"[raynas] epoch {epoch + 1}/{cfg.optim.epochs}: {_fmt(metrics)}", flush=True)
                if curves is not None:
                    _write_curves(curves, task, model, metrics, epoch + 1)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            else:
                ray.train.report(metrics)
    if curves is not None:
        curves.close()  # tensorboardX writes from a thread: close() waits for it, flush() does not


def _prepare_train_loaders(loaders: dict[str, DataLoader], world: int) -> dict[str, DataLoader]:
    """The task's training loaders, moved to the device but keeping their own samplers.

    ``add_dist_sampler=False``: Ray's sampler has seed 0 whatever the run seed, so seeds would share a data
    order with 2+ workers; :func:`raynas.data.loaders.make_loader` shards with the run seed instead, and a
    loader that does not shard would train every rank on the whole dataset, so it is refused.
    """
    for name, loader in loaders.items():
        if world > 1 and not isinstance(loader.sampler, DistributedSampler):
            raise RuntimeError(
                f"training loader {name!r} reads the whole dataset on each of {world} ranks; build it with "
                "raynas.data.loaders.make_loader(..., shuffle=True, seed=cfg.run.seed)"
            )
    return {
        name: ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)
        for name, loader in loaders.items()
    }


def _curve_writer(run_dir: str | None):
    """A TensorBoard writer (tensorboardX, which Ray Tune installs) for the run's curves, or None."""
    if run_dir is None:
        return None
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(Path(run_dir) / "tensorboard"), flush_secs=5)


def _write_curves(writer, task: Task, model: nn.Module, metrics: dict[str, Any], epoch: int) -> None:
    for key, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key not in ("epoch", "step"):
            writer.add_scalar(key, value, epoch)
    task.write_curves(writer, unwrap(model), epoch)
    writer.flush()


def _fmt(metrics: dict[str, Any]) -> str:
    keys = ("train_loss", "AP", "AP50", "epoch_time_s")
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in keys if isinstance(metrics.get(k), int | float))
