"""DARTS and Fair DARTS on the OPANAS DAG (OPANAS Table 6): the mixed neck, derivation, the shared trainer."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from tiny_data import TINY_DIGITS

from raynas.config import ConfigError
from raynas.data.config import DataConfig
from raynas.data.loaders import build_dataset
from raynas.models.build import searched_neck_spec
from raynas.models.config import ModelConfig
from raynas.spaces.opanas import OPANASSpace
from raynas.spaces.opanas.mixed import OPANASMixedNeck, derive, derive_arch
from raynas.training.config import OPANASDartsConfig, OPANASDartsSettings, OptimConfig, RunConfig
from raynas.training.darts import OPANASDartsTask, search_opanas_darts

NUM_CLASSES = 11
SPACE = OPANASSpace(5)


def tiny_config(root: Path, relaxation: str = "softmax", storage: Path | None = None, workers: int = 1):
    return OPANASDartsConfig(
        data=DataConfig(root=str(root), **TINY_DIGITS, batch_size=2, hflip=0.0, search_fraction=0.25),
        model=ModelConfig(kind="retinanet", backbone="resnet18", out_channels=16, min_size=64, max_size=64),
        optim=OptimConfig(epochs=1, lr=0.01, warmup_iters=2, milestones=[]),
        run=RunConfig(
            name=f"darts_{relaxation}", storage_path=str(storage or root / "runs"), num_workers=workers
        ),
        darts=OPANASDartsSettings(relaxation=relaxation, norm="gn"),
    )


def pyramid(channels: int = 8) -> dict[str, torch.Tensor]:
    return {str(k): torch.randn(1, channels, s, s) for k, s in enumerate((16, 8, 4))}


@pytest.mark.parametrize("relaxation", ["softmax", "sigmoid"])
def test_mixed_edges_give_gradients_to_every_path_and_every_alpha(relaxation: str) -> None:
    torch.manual_seed(0)
    neck = OPANASMixedNeck([8, 8, 8], 8, num_nodes=5, relaxation=relaxation)
    out = neck(pyramid())
    assert list(out) == ["0", "1", "2"] and out["0"].shape == (1, 8, 16, 16)
    loss = sum(level.square().mean() for level in out.values())
    penalty = neck.arch_penalty()
    if relaxation == "sigmoid":
        assert penalty is not None and penalty < 0  # Fair DARTS's zero-one loss
        loss = loss + penalty
    else:
        assert penalty is None
    loss.backward()
    assert neck.alphas.shape == (15, 6 if relaxation == "softmax" else 5)
    assert (neck.alphas.grad.abs() > 0).all()  # every architecture weight of every edge
    for key in SPACE.keys:
        for name, path in neck.edges[key].items():
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in path.parameters()), (key, name)


def test_zero_one_loss_pushes_sigmoids_away_from_one_half() -> None:
    neck = OPANASMixedNeck([8, 8], 8, num_nodes=2, relaxation="sigmoid")
    with torch.no_grad():
        neck.alphas.fill_(0.3)
    neck.arch_penalty().backward()
    assert (neck.alphas.grad < 0).all()  # gradient descent raises alphas above 0 further (towards 1)


def test_derivation_takes_the_strongest_path_and_stays_valid() -> None:
    candidates = ("top_down", "bottom_up", "scale_equalizing", "fusing_splitting", "skip", "none")
    weights = torch.full((15, 6), 0.1)
    strongest = [k % 6 for k in range(15)]
    for edge, c in enumerate(strongest):
        weights[edge, c] = 0.5
    arch = derive_arch(weights, candidates, "softmax")
    assert arch.edges == tuple(candidates[c] for c in strongest)
    # every input edge strongest at none: the input edge with the strongest real path keeps it
    inputs = [k for k, (i, _) in enumerate(SPACE.pairs) if i == 0]
    weights[inputs] = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.5])
    weights[inputs[2], 1] = 0.3
    arch = derive_arch(weights, candidates, "softmax")
    assert SPACE.is_valid(arch)
    assert [arch.edges[k] for k in inputs] == ["none", "none", "bottom_up", "none", "none"]
    # Fair DARTS: below the threshold an edge is absent
    sig = torch.full((15, 5), 0.2)
    sig[:, 0] = 0.9
    sig[3, 0] = 0.6
    arch = derive_arch(sig, candidates[:5], "sigmoid", threshold=0.85)
    assert arch.edges[3] == "none" and arch.edges[0] == "top_down"


def test_a_derivation_that_needed_the_repair_says_so() -> None:
    """Fair DARTS with no input edge's sigmoid above the threshold: the repair rule makes the neck (one input
    edge forced to its strongest path) and the derivation is flagged, the architecture unchanged."""
    candidates = ("top_down", "bottom_up", "scale_equalizing", "fusing_splitting", "skip")
    inputs = SPACE.input_edge_indices()
    sig = torch.full((15, 5), 0.3)
    sig[SPACE.keys.index("e1_2"), 4] = 0.95  # e1_2 passes, but no input edge does
    sig[inputs[2], 1] = 0.7  # e0_3's strongest real path, below the threshold
    repaired = derive(sig, candidates, "sigmoid", threshold=0.85)
    assert repaired.repaired and repaired.arch == derive_arch(sig, candidates, "sigmoid", threshold=0.85)
    assert [repaired.arch.edges[k] for k in inputs] == ["none", "none", "bottom_up", "none", "none"]
    assert repaired.how.startswith("repaired (no input edge passed 0.85; e0_3 set to bottom_up)")
    assert "1/15 edges passed" in repaired.how
    sig[inputs[0], 0] = 0.9  # e0_1 passes: a valid DAG by the rule alone
    kept = derive(sig, candidates, "sigmoid", threshold=0.85)
    assert not kept.repaired and kept.how == "argmax above 0.85 (2/15 edges passed)"
    assert kept.arch.edges[0] == "top_down" and kept.arch.edges[inputs[2]] == "none"
    softmax = torch.softmax(torch.randn(15, 6), dim=-1)
    softmax[inputs, 5] = 1.0  # every input edge's argmax is none (DARTS)
    flagged = derive(softmax, (*candidates, "none"), "softmax")
    assert flagged.repaired and flagged.how.startswith("repaired (every input edge's argmax is none;")
    assert SPACE.is_valid(flagged.arch)


def test_config_needs_a_search_split(tiny_digits: Path) -> None:
    cfg = tiny_config(tiny_digits)
    assert cfg.neck["type"] == "opanas_mixed" and cfg.neck["relaxation"] == "softmax"
    with pytest.raises(ConfigError, match="search_fraction > 0"):
        OPANASDartsConfig(data=DataConfig(root=str(tiny_digits)))
    with pytest.raises(ConfigError, match="darts.relaxation"):
        OPANASDartsSettings(relaxation="gumbel")


@pytest.mark.parametrize("relaxation", ["softmax", "sigmoid"])
def test_alpha_and_weight_steps_touch_only_their_own_parameters(tiny_digits: Path, relaxation: str) -> None:
    torch.manual_seed(0)
    task = OPANASDartsTask(tiny_config(tiny_digits, relaxation))
    model = task.build_model(NUM_CLASSES).train()
    loaders = task.train_loaders(build_dataset(task.cfg.data, "train"))
    optim = task.build_optimizers(model, len(loaders["weights"]))
    alphas = model.backbone.neck.alphas
    in_weight_opt = {id(p) for group in optim["optimizer"].param_groups for p in group["params"]}
    assert id(alphas) not in in_weight_opt
    assert [p for g in optim["arch_optimizer"].param_groups for p in g["params"]] == [alphas]
    # the architecture data is the search split (held out of the weight data: tests/test_search_split.py)
    assert len(loaders["alphas"].dataset) == len(build_dataset(task.cfg.data, "search")) == 2
    assert len(loaders["weights"].dataset) == 6

    weights = {n: p.detach().clone() for n, p in model.named_parameters() if not n.endswith("alphas")}
    alphas0 = alphas.detach().clone()
    task.alpha_step(model, next(iter(loaders["alphas"])), 0)
    assert all(torch.equal(weights[n], p) for n, p in model.named_parameters() if n in weights)
    assert not torch.equal(alphas.detach(), alphas0)
    moved = alphas.detach().clone()
    task.weight_step(model, next(iter(loaders["weights"])), 0)
    assert torch.equal(alphas.detach(), moved) and alphas.requires_grad
    assert any(not torch.equal(weights[n], p) for n, p in model.named_parameters() if n in weights)


@pytest.fixture(scope="module")
def two_worker_search(ray_session, tiny_digits: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = tiny_config(tiny_digits, "sigmoid", tmp_path_factory.mktemp("darts"), workers=2)
    return cfg, search_opanas_darts(cfg)


@pytest.mark.slow
def test_two_worker_fair_darts_search_derives_one_architecture(two_worker_search) -> None:
    cfg, result = two_worker_search
    assert result.metrics["ranks_same_genotype"] is True  # both ranks derived the same architecture
    assert SPACE.is_valid(result.genotype)
    payload = json.loads(result.genotype_path.read_text())
    assert payload["space"] == SPACE.name and SPACE.from_config(payload["arch"]) == result.genotype
    assert (result.run_dir / "arch.png").stat().st_size > 0
    state = result.load_state()
    assert state["task"] == "opanas_darts"
    assert state["alphas"].shape == (15, 5)
    # the derived architecture retrains as a discrete neck with the search's neck options
    spec = searched_neck_spec(payload["arch"], copy.copy(cfg.darts))
    assert spec["type"] == "opa_fpn" and spec["norm"] == "gn"


def test_cli_opanas_darts_with_a_bad_config_exits_2(tmp_path: Path, capsys) -> None:
    from raynas.cli import main as cli_main

    bad = tmp_path / "darts.yaml"
    bad.write_text("data:\n  search_fraction: 0.0\n")
    assert cli_main(["search", "opanas-darts", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "search_fraction > 0" in err and "Traceback" not in err
