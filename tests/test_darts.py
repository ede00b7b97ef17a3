"""FAD first-order DARTS (Sec. 3.2): alternating alpha / weight updates, the data halves, a 2-worker Ray
Train search end to end, the derived head, the search configs (paper + Table 2 ablations) and the CLI.

The plain-PyTorch tests drive :class:`DartsTask` directly (no Ray); one module-scoped Ray instance serves
the single real Ray Train run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from tiny_data import TINY_DIGITS

from raynas.cli import main as cli_main
from raynas.config import ConfigError, load_yaml
from raynas.data.loaders import build_dataset
from raynas.models.build import build_model
from raynas.models.config import ModelConfig
from raynas.spaces.base import arch_from_json
from raynas.spaces.fad import EDGES, FADSpace, NaiveBlock, RepShareBlock, derive
from raynas.training.config import DartsConfig
from raynas.training.darts import DartsTask, search_fad, split_halves
from raynas.training.engine import NonFiniteLossError

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
SMOKE = CONFIGS / "fad_smoke.yaml"
NUM_CLASSES = 11  # digits: ids 1..10 + background


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: with the 2 cores shared, OpenMP spin-waits can stall a step for minutes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(root: Path, storage: Path | None = None, workers: int = 1) -> DartsConfig:
    """``fad_smoke.yaml`` pointed at the session's tiny digits: resnet18, FPN 32, c' = 8, 64 px, 1 epoch."""
    cfg = load_yaml(DartsConfig, SMOKE)
    cfg.data = dataclasses.replace(
        cfg.data,
        root=str(root),
        **TINY_DIGITS,
        max_train_images=None,
        max_val_images=None,
        batch_size=2,
        hflip=0.0,
    )
    cfg.model = dataclasses.replace(cfg.model, min_size=64, max_size=64)
    cfg.run = dataclasses.replace(cfg.run, num_workers=workers, storage_path=str(storage or root / "runs"))
    return cfg


# -- alternating updates, plain PyTorch ------------------------------------------------------------------


@pytest.fixture()
def darts(tiny_digits: Path):
    """A fresh task, model and optimisers plus one batch from each half (8 train images -> 4 + 4)."""
    torch.manual_seed(0)
    cfg = tiny_config(tiny_digits)
    task = DartsTask(cfg)
    model = task.build_model(NUM_CLASSES).train()
    loaders = task.train_loaders(build_dataset(cfg.data, "train"))
    optim = task.build_optimizers(model, len(loaders["weights"]))
    return task, model, optim, next(iter(loaders["weights"])), next(iter(loaders["alphas"]))


def weights_of(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if not name.endswith("alphas")}


def alpha_grad(model, batch) -> torch.Tensor:
    """d(detection loss)/d(alphas) on ``batch`` at the model's current weights (on a copy)."""
    model = copy.deepcopy(model)
    images, targets = batch
    (grad,) = torch.autograd.grad(sum(model(images, targets).values()), [model.head.alphas])
    return grad


def adam_first_step(alphas: torch.Tensor, grad: torch.Tensor, cfg: DartsConfig) -> torch.Tensor:
    """torch.optim.Adam's first update written out: L2 decay into the gradient, bias-corrected moments."""
    fad = cfg.fad
    (beta1, beta2), eps = fad.arch_betas, 1e-8
    g = grad + fad.arch_weight_decay * alphas
    m_hat = (1 - beta1) * g / (1 - beta1)
    v_hat = (1 - beta2) * g * g / (1 - beta2)
    return alphas - fad.arch_lr * m_hat / (v_hat.sqrt() + eps)


def test_full_step_moves_alphas_by_exactly_the_adam_step_of_the_alpha_batch(darts):
    task, model, _, weight_batch, alpha_batch = darts
    alphas0 = model.head.alphas.detach().clone()
    from_alpha_half = adam_first_step(alphas0, alpha_grad(model, alpha_batch), task.cfg)
    from_weight_half = adam_first_step(alphas0, alpha_grad(model, weight_batch), task.cfg)
    before = weights_of(model)

    values = task.train_step(model, weight_batch, 0, {"alphas": alpha_batch})

    alphas = model.head.alphas
    torch.testing.assert_close(alphas.detach(), from_alpha_half, rtol=1e-5, atol=1e-9)
    # the test can tell the halves apart: the weight batch would have moved the alphas elsewhere
    assert not torch.allclose(from_weight_half, from_alpha_half, rtol=1e-5, atol=1e-9)
    assert alphas.requires_grad and alphas.grad is None
    assert any(not torch.equal(before[n], p) for n, p in weights_of(model).items()), "weights did not move"
    assert set(values) == {"loss", "arch_loss"} and all(v > 0 for v in values.values())


def test_each_parameter_is_in_exactly_one_optimizer(darts):
    _, model, optim, _, _ = darts
    alphas = model.head.alphas
    in_weight_opt = [p for group in optim["optimizer"].param_groups for p in group["params"]]
    in_arch_opt = [p for group in optim["arch_optimizer"].param_groups for p in group["params"]]
    assert all(p is not alphas for p in in_weight_opt)
    assert len(in_arch_opt) == 1 and in_arch_opt[0] is alphas
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in in_weight_opt} | {id(alphas)} == trainable
    assert len(in_weight_opt) == len(trainable) - 1  # no duplicates


def test_alpha_step_changes_no_weight(darts):
    task, model, _, _, alpha_batch = darts
    alphas0, before = model.head.alphas.detach().clone(), weights_of(model)

    task.alpha_step(model, alpha_batch, 0)

    after = weights_of(model)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(p.grad is None for name, p in model.named_parameters()), "alpha step left gradients behind"
    assert not torch.equal(model.head.alphas.detach(), alphas0)


def test_weight_step_changes_no_alpha(darts):
    task, model, _, weight_batch, _ = darts
    alphas0, before = model.head.alphas.detach().clone(), weights_of(model)

    task.weight_step(model, weight_batch, 0)

    assert torch.equal(model.head.alphas.detach(), alphas0)
    assert model.head.alphas.grad is None and model.head.alphas.requires_grad
    assert any(not torch.equal(before[n], p) for n, p in weights_of(model).items())


def test_weight_step_restores_alpha_grad_when_the_loss_is_not_finite(darts):
    task, model, _, (images, targets), _ = darts
    broken = [torch.full_like(image, float("nan")) for image in images]
    with pytest.raises(NonFiniteLossError, match="weight step"):
        task.weight_step(model, (broken, targets), 3)
    assert model.head.alphas.requires_grad


def test_arch_warmup_steps_the_weights_alone_then_the_alphas_from_its_last_step(tiny_digits: Path):
    """``fad.arch_warmup_epochs``: weight steps only for that many epochs, then DARTS's alternation."""
    torch.manual_seed(0)
    cfg = tiny_config(tiny_digits)
    cfg = dataclasses.replace(
        cfg,
        optim=dataclasses.replace(cfg.optim, epochs=2),
        fad=dataclasses.replace(cfg.fad, arch_warmup_epochs=1),
    )
    task = DartsTask(cfg)
    model = task.build_model(NUM_CLASSES).train()
    loaders = task.train_loaders(build_dataset(cfg.data, "train"))
    iters = len(loaders["weights"])
    task.build_optimizers(model, iters)
    weight_batch, alpha_batch = next(iter(loaders["weights"])), next(iter(loaders["alphas"]))
    alphas0, before = model.head.alphas.detach().clone(), weights_of(model)

    for step in range(iters):  # the warm-up epoch
        assert set(task.train_step(model, weight_batch, step, {"alphas": alpha_batch})) == {"loss"}
    assert torch.equal(model.head.alphas.detach(), alphas0)
    assert any(not torch.equal(before[n], p) for n, p in weights_of(model).items()), "weights did not move"

    values = task.train_step(model, weight_batch, iters, {"alphas": alpha_batch})
    assert set(values) == {"loss", "arch_loss"}
    assert not torch.equal(model.head.alphas.detach(), alphas0)


@pytest.mark.parametrize("warmup", [2, 3])
def test_an_arch_warmup_as_long_as_the_search_is_refused(tiny_digits: Path, warmup: int):
    cfg = tiny_config(tiny_digits)
    with pytest.raises(ConfigError, match="fad.arch_warmup_epochs .* must be below optim.epochs"):
        dataclasses.replace(
            cfg,
            optim=dataclasses.replace(cfg.optim, epochs=2),
            fad=dataclasses.replace(cfg.fad, arch_warmup_epochs=warmup),
        )


# -- the two halves ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 7, 8])
def test_split_halves_are_disjoint_and_cover_the_training_set(n):
    weights, alphas = split_halves(list(range(n)))
    a, b = list(weights), list(alphas)
    assert not set(a) & set(b)
    assert sorted(a + b) == list(range(n))
    assert len(a) - len(b) in (0, 1)


@pytest.mark.parametrize("n", [0, 1])
def test_split_halves_needs_two_images(n):
    with pytest.raises(ValueError, match="at least 2 training images"):
        split_halves(list(range(n)))


def test_task_loaders_read_the_two_halves(darts):
    task, *_ = darts
    loaders = task.train_loaders(list(range(8)))
    weights, alphas = loaders["weights"].dataset.indices, loaders["alphas"].dataset.indices
    assert not set(weights) & set(alphas) and sorted([*weights, *alphas]) == list(range(8))
    assert list(loaders) == ["weights", "alphas"]  # the weight half drives the epoch


# -- a real 2-worker search on Ray Train -------------------------------------------------------------------


@pytest.fixture(scope="module")
def search(ray_session, tiny_digits: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = tiny_config(tiny_digits, tmp_path_factory.mktemp("fad_runs"), workers=2)
    return cfg, search_fad(cfg)


def test_two_worker_search_agrees_and_writes_the_genotype(search):
    cfg, result = search
    assert result.metrics["ranks_same_genotype"] is True
    assert result.metrics["epoch"] == 1
    state = result.load_state()
    space = FADSpace(candidates=state["candidates"])
    assert len(space.candidates) == 13

    genotype = arch_from_json(space, result.genotype_path.read_text())
    assert result.genotype_path == result.run_dir / "genotype.json"
    assert genotype == result.genotype == derive(state["alphas"], state["candidates"])
    assert json.loads(result.metrics["genotype"]) == space.to_config(genotype)
    from helpers_supernet import tensorboard_tags

    assert {"train_loss", "arch_weights/0"} <= tensorboard_tags(result.run_dir / "tensorboard")
    assert (result.run_dir / "arch_weights" / "epoch_1.png").stat().st_size > 0  # the heatmap per epoch
    png = result.run_dir / "genotype.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for ops in genotype.groups:
        for node in (1, 2, 3):
            kept = [op for (_, dst), op in zip(EDGES, ops) if dst == node and op != "none"]
            assert 1 <= len(kept) <= 2, (node, ops)

    # 4 + 4 images over 2 workers at batch 2: exactly one alpha step and one weight step per worker
    (arch_state,) = state["optim"]["arch_optimizer"]["state"].values()
    assert float(arch_state["step"]) == 1 and arch_state["exp_avg"].abs().max() > 0
    assert state["optim"]["scheduler"]["last_epoch"] == 1


def test_derived_head_builds_from_the_genotype_and_is_smaller(search):
    cfg, result = search
    genotype = FADSpace(candidates=result.load_state()["candidates"]).to_config(result.genotype)
    derived = build_model(cfg.model, NUM_CLASSES, None, {"type": "fad", "genotype": genotype, "c_prime": 8})
    searchable = build_model(cfg.model, NUM_CLASSES, cfg.neck, cfg.head)
    assert not derived.head.searchable and derived.head.genotype() == result.genotype
    size = lambda m: sum(p.numel() for p in m.head.parameters())  # noqa: E731
    assert size(derived) < size(searchable)
    derived.eval()
    with torch.no_grad():  # two images: at 64 px p7 is 1x1 and GroupNorm(8, 8) needs > 1 value per group
        outputs = derived([torch.rand(3, 64, 64), torch.rand(3, 64, 64)])
    assert all(set(out) == {"boxes", "scores", "labels"} for out in outputs)


# -- configs -----------------------------------------------------------------------------------------------

EXPECTED_CANDIDATES = {
    "fad_smoke": 13,
    "fad_paper": 13,
    "fad_ablation_norepshare": 13,
    "fad_ablation_nodecouple": 13,
    "fad_ablation_std_only": 7,
    "fad_ablation_sep_only": 7,
    "fad_ablation_subset1": 5,
    "fad_ablation_subset2": 9,
    "fad_ablation_darts_ops": 8,
}


def test_every_fad_config_is_covered():
    assert {p.stem for p in CONFIGS.glob("fad_*.yaml")} == set(EXPECTED_CANDIDATES)


@pytest.mark.parametrize("name", sorted(EXPECTED_CANDIDATES))
def test_config_loads_and_builds_its_searchable_head(name):
    cfg = load_yaml(DartsConfig, CONFIGS / f"{name}.yaml")
    # the paper configs name ImageNet weights (a download): build from random init here
    model = build_model(dataclasses.replace(cfg.model, backbone_weights=None), 21, cfg.neck, cfg.head)
    head = model.head
    assert head.searchable and len(head.candidates) == EXPECTED_CANDIDATES[name]
    assert head.alphas.shape == (2, 6, EXPECTED_CANDIDATES[name])
    blocks = [m for m in head.modules() if isinstance(m, NaiveBlock | RepShareBlock)]
    assert len(blocks) == 2 * 6 * cfg.fad.cells_per_group
    assert all(isinstance(b, RepShareBlock if cfg.fad.repshare else NaiveBlock) for b in blocks)
    if cfg.fad.repshare:
        assert all(bool(b.decouplers) == cfg.fad.decouple for b in blocks)
    if name != "fad_smoke":
        assert (cfg.model.backbone, cfg.fad.c_prime, cfg.fad.cells_per_group) == ("resnet50", 96, 1)


def test_darts_config_rejects_a_two_stage_detector(tmp_path: Path):
    with pytest.raises(ValueError, match="fcos or retinanet"):
        DartsConfig(model=ModelConfig(kind="faster_rcnn"))
    path = tmp_path / "frcnn.yaml"
    path.write_text("model:\n  kind: faster_rcnn\n")
    with pytest.raises(ConfigError, match="fcos or retinanet") as err:
        load_yaml(DartsConfig, path)
    assert str(path) in str(err.value)


# -- CLI ---------------------------------------------------------------------------------------------------


def test_cli_search_fad_with_a_missing_config_exits_2(tmp_path: Path, capsys):
    missing = tmp_path / "nope.yaml"
    assert cli_main(["search", "fad", "--config", str(missing)]) == 2
    captured = capsys.readouterr()
    assert "error" in captured.err and str(missing) in captured.err and "does not exist" in captured.err
    assert "Traceback" not in captured.err


def test_cli_search_fad_with_faster_rcnn_exits_2(tmp_path: Path, capsys):
    path = tmp_path / "frcnn.yaml"
    path.write_text("model:\n  kind: faster_rcnn\n")
    assert cli_main(["search", "fad", "--config", str(path)]) == 2
    assert "fcos or retinanet" in capsys.readouterr().err


def test_cli_search_fad_with_a_warmup_as_long_as_the_search_exits_2(tmp_path: Path, capsys):
    path = tmp_path / "warm.yaml"
    path.write_text("optim:\n  epochs: 2\nfad:\n  arch_warmup_epochs: 2\n")
    assert cli_main(["search", "fad", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fad.arch_warmup_epochs (2) must be below optim.epochs (2)" in err[0], err
