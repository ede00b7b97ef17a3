"""OPANAS super-net training (Sec. 3.2.1): a real 2-worker Ray Train run, and the step in plain PyTorch.

One Ray Train run (RetinaNet-ResNet18, 16-channel super-net neck, 64 px, ``tiny_digits``): it completes,
every rank drew the same fair sub-nets, and its checkpoint scores sub-nets without Ray. The fair draw
and the gamma L1 term (Eq. 12) are checked on ``SupernetTask`` directly, without Ray.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from tiny_data import TINY_DIGITS

from raynas.checkpoints import load_detector
from raynas.config import ConfigError
from raynas.data.config import DataConfig
from raynas.data.loaders import build_dataset, make_loader
from raynas.models.config import ModelConfig
from raynas.search.scorer import SupernetScorer, state_to_numpy
from raynas.spaces.opanas import (
    PARAMETERISED_PATHS,
    PATH_NAMES,
    OPANASSpace,
    OPANASSupernet,
    fair_sample,
    fair_step_seed,
)
from raynas.spaces.opanas.sampling import training_subnets
from raynas.training.config import OPANASConfig, OptimConfig, RunConfig, SupernetConfig
from raynas.training.run_folder import TrainResult
from raynas.training.supernet import SupernetTask, train_supernet

AP_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl"}
STEPS = 2  # 8 images / 2 workers / batch 2, one epoch


def tiny_supernet_config(root: Path, storage: Path | str = "runs", **opanas) -> SupernetConfig:
    return SupernetConfig(
        data=DataConfig(root=str(root), **TINY_DIGITS, batch_size=2, hflip=0.0, search_fraction=0.25),
        model=ModelConfig(kind="retinanet", backbone="resnet18", out_channels=16, min_size=64, max_size=64),
        optim=OptimConfig(epochs=1, lr=0.01, warmup_iters=2, milestones=[]),
        run=RunConfig(name="supernet", storage_path=str(storage), num_workers=2, max_failures=0),
        opanas=OPANASConfig(**{"k": 4, "eval_subnets": 1, **opanas}),
    )


def expected_digest(seed: int, steps: int, k: int = 4) -> int:
    """The digest ``SupernetTask`` keeps of the sub-nets it trained, recomputed from the fair draws."""
    digest = hashlib.sha256()
    for step in range(steps):
        for arch in fair_sample(OPANASSpace(5), seed=fair_step_seed(seed, step), k=k):
            digest.update(repr(arch).encode())
    return int(digest.hexdigest()[:15], 16)


def val_images(root: Path, count: int = 2) -> list[torch.Tensor]:
    dataset = build_dataset(DataConfig(root=str(root), **TINY_DIGITS), "val")
    images, _ = next(iter(make_loader(dataset, count, shuffle=False)))
    return images


@pytest.fixture(scope="module")
def supernet_run(ray_session, tiny_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train_supernet(tiny_supernet_config(tiny_digits, tmp_path_factory.mktemp("runs")))


# -- the Ray Train run -------------------------------------------------------------------------------


def test_two_worker_supernet_run(supernet_run: TrainResult) -> None:
    metrics = supernet_run.metrics
    assert (metrics["epoch"], metrics["step"]) == (1, STEPS)
    assert set(metrics) >= AP_KEYS
    # rank 0 all-gathered every rank's digest of its sampled sub-nets: all equal ...
    assert metrics["ranks_sampled_same_subnets"] is True
    # ... and equal to the strict fair draws of steps 0 and 1 seeded from the step
    assert metrics["subnet_digest"] == expected_digest(seed=0, steps=STEPS)
    assert 0 < metrics["gamma_l1"] <= 15.0  # 15 edges, gamma initialised to 1, pulled down by mu

    state = supernet_run.load_state()
    assert state["task"] == "supernet"
    assert state["config"]["neck"]["type"] == "opanas_supernet"
    gamma = state["model"]["backbone.neck.gamma"]
    assert gamma.shape == (15,) and not torch.equal(gamma, torch.ones(15))  # gamma was trained


def test_checkpoint_loads_as_a_plain_pytorch_supernet(supernet_run: TrainResult, tiny_digits: Path) -> None:
    model, cfg, state = load_detector(supernet_run.checkpoint_dir, expect="opanas_supernet")
    neck = model.backbone.neck
    assert isinstance(neck, OPANASSupernet)
    assert torch.equal(neck.gamma.detach(), state["model"]["backbone.neck.gamma"])
    arch = OPANASSpace(cfg.opanas.num_nodes).sample(random.Random(0))
    images = val_images(tiny_digits)
    model.eval()
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="no active sub-net"):
            model(images)
        with neck.using(arch):
            outputs = model(images)
    assert len(outputs) == 2
    for output in outputs:
        assert {"boxes", "scores", "labels"} <= set(output)
        assert output["boxes"].shape[-1] == 4 and len(output["boxes"]) == len(output["scores"])


def test_checkpoint_scores_a_subnet_with_the_scorer(supernet_run: TrainResult) -> None:
    state = supernet_run.load_state()
    scorer = SupernetScorer(
        weights=state_to_numpy(state["model"]),
        config=state["config"],
        num_classes=state["num_classes"],
        batch_size=4,
        device="cpu",
    )
    space = OPANASSpace(5)
    arch = fair_sample(space, seed=1)[0]
    result = scorer.score({**space.to_config(arch), "unrelated_tune_key": 3})
    assert set(result) >= AP_KEYS
    # NaN where the validation images hold no object of that size (COCO's -1)
    assert all(math.isnan(result[k]) or 0.0 <= result[k] <= 1.0 for k in AP_KEYS)
    assert result["neck_params"] > 0 and result["neck_flops"] > 0


def test_supernet_checkpoint_is_not_an_fpn_checkpoint(supernet_run: TrainResult) -> None:
    with pytest.raises(ValueError, match="holds a 'opanas_supernet' neck, not 'fpn'"):
        load_detector(supernet_run.checkpoint_dir, expect="fpn")


# -- plain PyTorch ------------------------------------------------------------------------------------


def test_fair_draw_is_seeded_from_the_step(tiny_digits: Path) -> None:
    """Two task instances (two ranks) derive the same K sub-nets per step without communicating."""
    rank0 = SupernetTask(tiny_supernet_config(tiny_digits))
    rank1 = SupernetTask(tiny_supernet_config(tiny_digits))
    draws = []
    for step in range(4):
        a = fair_sample(rank0.space, seed=fair_step_seed(rank0.cfg.run.seed, step), k=rank0.cfg.opanas.k)
        b = fair_sample(rank1.space, seed=fair_step_seed(rank1.cfg.run.seed, step), k=rank1.cfg.opanas.k)
        assert a == b
        assert len(a) == 4
        for edge in range(rank0.space.num_edges):  # strict fairness: each path once per edge per step
            assert sorted(arch.edges[edge] for arch in a) == sorted(PARAMETERISED_PATHS)
        draws.append(tuple(a))
    assert len(set(draws)) == 4  # a new draw every step
    other_seed = fair_sample(rank0.space, seed=fair_step_seed(1, 0), k=4)
    assert other_seed != draws[0]
    assert fair_step_seed(0, 1) != fair_step_seed(1, 0)


def test_train_step_applies_the_gamma_l1_term(tiny_digits: Path) -> None:
    """One super-net step (K=4 sub-nets, then one update) with mu=0 and with mu=1 from the same weights:
    gamma gets gradients, the mu=1 gradient is larger by exactly mu * sign(gamma) = 1 per edge
    (Eq. 12), the loss by mu * ||gamma||_1 = 15, and gamma moves."""
    data = DataConfig(root=str(tiny_digits), **TINY_DIGITS, hflip=0.0)
    batch = next(iter(make_loader(build_dataset(data, "train"), 2, shuffle=False)))
    runs = {}
    for mu in (0.0, 1.0):
        cfg = tiny_supernet_config(tiny_digits, mu=mu)
        cfg.optim.grad_clip = None  # clipping would rescale the gradients compared here
        cfg.optim.warmup_iters = 0
        task = SupernetTask(cfg)
        torch.manual_seed(0)
        model = task.build_model(num_classes=11)
        model.train()
        task.build_optimizers(model, iters_per_epoch=1)
        gamma = model.backbone.neck.gamma
        assert torch.equal(gamma.detach(), torch.ones(15))  # initialised to 1 (Sec. 4.1.2)
        values = task.train_step(model, batch, step=0, extra_batches={})
        runs[mu] = (values["loss"], gamma.detach().clone(), gamma.grad.clone(), task.epoch_metrics(model))

    (loss0, _, grad0, metrics0), (loss1, gamma1, grad1, metrics1) = runs[0.0], runs[1.0]
    assert grad0.abs().sum() > 0  # the detection loss alone reaches gamma
    torch.testing.assert_close(grad1 - grad0, torch.ones(15), atol=1e-4, rtol=0)
    assert loss1 - loss0 == pytest.approx(15.0, abs=1e-3)
    lr, weight_decay = cfg.optim.lr, cfg.optim.weight_decay
    torch.testing.assert_close(gamma1, 1 - lr * (grad1 + weight_decay))  # one SGD step from gamma = 1
    assert (gamma1 < 1).all()
    # both instances trained the same fair sub-nets at step 0, the ones the step's seed gives
    assert metrics0["subnet_digest"] == metrics1["subnet_digest"] == expected_digest(seed=0, steps=1)
    assert metrics0["ranks_sampled_same_subnets"]
    assert metrics1["gamma_l1"] == pytest.approx(float(gamma1.sum()))


def test_shared_body_step_gives_the_gradients_of_k_full_passes(tiny_digits: Path) -> None:
    """The body runs once per fair step; every parameter's gradient must equal that of K separate
    forward/backward passes of the whole detector (the paper's definition of the step)."""
    dataset = build_dataset(DataConfig(root=str(tiny_digits), **TINY_DIGITS, hflip=0.0), "train")
    batch = next(iter(make_loader(dataset, 2, shuffle=False)))
    images, targets = batch
    task = SupernetTask(tiny_supernet_config(tiny_digits, mu=1e-4, reduce="sum"))
    torch.manual_seed(0)
    model = task.build_model(num_classes=11).train()
    supernet = model.backbone.neck

    model.zero_grad(set_to_none=True)
    for arch in fair_sample(task.space, seed=fair_step_seed(0, 3), k=4):
        with supernet.using(arch):
            sum(model(images, targets).values()).backward()
    (1e-4 * supernet.gamma_l1()).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    model.zero_grad(set_to_none=True)
    task.accumulate_gradients(model, batch, step=3)
    shared = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert shared.keys() == expected.keys()
    assert any(name.startswith("backbone.body.") for name in shared)  # the body is trained too
    # strict fairness: after one step every parameterised path of every edge has a gradient, and gamma too
    for key in supernet.space.keys:
        for path_name, path in supernet.edges[key].items():
            assert all(
                f"backbone.neck.edges.{key}.{path_name}.{n}" in shared for n, _ in path.named_parameters()
            )
    assert "backbone.neck.gamma" in shared
    for name, grad in expected.items():
        torch.testing.assert_close(shared[name], grad, rtol=1e-4, atol=1e-6, msg=name)


# -- the ablation switches (Table 5/6): uniform sampling (SPOS), no gamma, all six paths ----------------


def test_uniform_sampling_draws_one_subnet_per_step_with_equal_path_frequency() -> None:
    space = OPANASSpace(5)
    counts = Counter()
    steps = 2000
    for step in range(steps):
        archs = training_subnets(space, "uniform", "parameterised", k=4, seed=fair_step_seed(0, step))
        assert len(archs) == 1  # SPOS: one sub-net per step
        counts.update(archs[0].edges)
    assert set(counts) == set(PARAMETERISED_PATHS)  # skip/none have no weights: never trained
    expected = steps * space.num_edges / len(PARAMETERISED_PATHS)
    for path in PARAMETERISED_PATHS:  # equal frequency in expectation (binomial sd ~ 47)
        assert abs(counts[path] - expected) < 5 * math.sqrt(expected)
    # unlike fair sampling, a single step does not train every path of an edge
    first = training_subnets(space, "uniform", "parameterised", k=4, seed=fair_step_seed(0, 0))
    assert first == training_subnets(space, "uniform", "parameterised", k=4, seed=fair_step_seed(0, 0))


def test_training_over_all_six_paths_is_fair_and_connected() -> None:
    space = OPANASSpace(5)
    for step in range(50):
        archs = training_subnets(space, "fair", "all", k=6, seed=fair_step_seed(0, step))
        assert len(archs) == 6 and all(space.is_valid(a) for a in archs)
        for edge in range(space.num_edges):
            assert sorted(a.edges[edge] for a in archs) == sorted(PATH_NAMES)
    uniform = Counter()
    for step in range(600):
        (arch,) = training_subnets(space, "uniform", "all", k=6, seed=fair_step_seed(0, step))
        assert space.is_valid(arch)
        uniform.update(arch.edges)
    assert set(uniform) == set(PATH_NAMES)


def test_switches_are_checked_and_recorded(tiny_digits: Path) -> None:
    with pytest.raises(ConfigError, match="opanas.sampling must be one of"):
        OPANASConfig(sampling="spos")
    with pytest.raises(ConfigError, match=r"opanas.k must be >= 1 and <= 4"):
        OPANASConfig(k=6)
    assert OPANASConfig(k=6, train_paths="all").subnets_per_step() == 6
    assert OPANASConfig(sampling="uniform").subnets_per_step() == 1
    cfg = tiny_supernet_config(tiny_digits, gamma=False, sampling="uniform")
    assert cfg.neck["gamma"] is False
    # a checkpoint config written before the switch existed (no "gamma" key) still loads
    old_neck = {k: v for k, v in tiny_supernet_config(tiny_digits).neck.items() if k != "gamma"}
    assert SupernetConfig(data=cfg.data, model=cfg.model, neck=old_neck).neck["gamma"] is True


def test_gamma_off_has_no_gamma_parameter_and_no_l1_term(tiny_digits: Path) -> None:
    data = DataConfig(root=str(tiny_digits), **TINY_DIGITS, hflip=0.0)
    batch = next(iter(make_loader(build_dataset(data, "train"), 2, shuffle=False)))
    losses = {}
    for mu in (0.0, 1.0):
        cfg = tiny_supernet_config(tiny_digits, gamma=False, sampling="uniform", mu=mu)
        task = SupernetTask(cfg)
        torch.manual_seed(0)
        model = task.build_model(num_classes=11).train()
        neck = model.backbone.neck
        assert not any(name.endswith("gamma") for name, _ in model.named_parameters())
        assert "backbone.neck.gamma" in model.state_dict()  # a buffer of ones: the scorer loads it
        assert neck.gamma_l1() is None
        task.build_optimizers(model, iters_per_epoch=1)
        losses[mu] = task.train_step(model, batch, step=0, extra_batches={})["loss"]
        assert torch.equal(neck.gamma, torch.ones(15))
        # one uniform sub-net trained: the paths it did not take got no gradient
        (arch,) = training_subnets(task.space, "uniform", "parameterised", 4, fair_step_seed(0, 0))
        untouched = [
            p
            for key, taken in zip(neck.space.keys, arch.edges)
            for name, path in neck.edges[key].items()
            if name != taken
            for p in path.parameters()
        ]
        assert untouched and all(p.grad is None for p in untouched)
    assert losses[0.0] == pytest.approx(losses[1.0], rel=1e-6)  # mu has nothing to act on
