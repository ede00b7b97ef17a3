"""FAD units and transformation blocks: RFs, representation counts (26 vs 12), ablations, Eq. 2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raynas.spaces.fad.ops import (
    DARTS_TRANSFORMATIONS,
    FAD_TRANSFORMATIONS,
    NONE,
    Unit,
    build_transformation,
    candidate_names,
    gn_groups,
    receptive_field,
)
from raynas.spaces.fad.repshare import (
    REPRESENTATION_TO_TRANSFORMATION,
    BlockConfig,
    Decouple,
    NaiveBlock,
    RepShareBlock,
    representation_name,
)

C = 8
EXPECTED_RF = {"3x3": 3, "3x3x2": 5, "3x3x3": 7, "3x3_dil2": 7, "3x3x2_dil2": 9, "3x3_dil3": 9}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _one_hot(block, name: str) -> torch.Tensor:
    w = torch.zeros(len(block.candidates))
    w[block.candidates.index(name)] = 1.0
    return w


def _count_unit_calls(block, x, weights) -> int:
    calls = []
    units = [m for m in block.modules() if isinstance(m, Unit)]
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in units]
    block(x, weights)
    for h in handles:
        h.remove()
    return len(calls)


def _for_rf(block: nn.Module) -> nn.Module:
    """No GroupNorm (it mixes all pixels) and positive weights (every ReLU open): support = RF exactly."""
    for name, child in block.named_children():
        if isinstance(child, nn.GroupNorm):
            setattr(block, name, nn.Identity())
        else:
            _for_rf(child)
    for p in block.parameters():
        nn.init.constant_(p, 0.05)
    return block


def _measured_rf(block, name: str, size: int = 25) -> int:
    x = torch.rand(1, block_channels(block), size, size).add_(0.1).requires_grad_()
    y = block(x, _one_hot(block, name))
    y[0, :, size // 2, size // 2].sum().backward()
    support = x.grad.abs().sum(dim=(0, 1)) > 0
    rows = support.any(dim=1).nonzero().flatten()
    cols = support.any(dim=0).nonzero().flatten()
    assert int(rows[-1] - rows[0] + 1) == int(cols[-1] - cols[0] + 1)
    return int(rows[-1] - rows[0] + 1)


def block_channels(block) -> int:
    return next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels


def test_gn_groups_divide_small_and_paper_widths():
    for c in (4, 8, 12, 16, 24, 96, 128, 256):
        assert c % gn_groups(c) == 0
    assert gn_groups(256) == 32 and gn_groups(96) == 32 and gn_groups(8) == 8 and gn_groups(12) == 4


def test_candidates_and_static_rfs():
    names = candidate_names()
    assert len(names) == 13 and names[-1] == NONE
    assert names[:6] == tuple(f"std_{s}" for s in EXPECTED_RF)
    assert names[6:12] == tuple(f"sep_{s}" for s in EXPECTED_RF)
    for name in names[:-1]:
        assert receptive_field(name) == EXPECTED_RF[name.split("_", 1)[1]]
    assert receptive_field(NONE) == 0


@pytest.mark.parametrize(
    ("kwargs", "n_trans", "rfs"),
    [
        ({"rf_max": 5}, 4, {3, 5}),  # Table 2 Subset 1
        ({"rf_max": 7}, 8, {3, 5, 7}),  # Subset 2
        ({"streams": ("sep",)}, 6, {3, 5, 7, 9}),
        ({"streams": ("std",)}, 6, {3, 5, 7, 9}),
        ({}, 12, {3, 5, 7, 9}),
        ({"ops": "darts"}, 7, {3, 5, 7, 9}),  # conv RFs 5,7,9 + the two 3x3 pools
    ],
)
def test_table2_ablation_sizes(kwargs, n_trans, rfs):
    names = candidate_names(**kwargs)
    assert len(names) == n_trans + 1 and names[-1] == NONE
    assert {receptive_field(n) for n in names[:-1]} == rfs


def test_darts_op_set_is_seven_with_conv_rfs_5_7_9():
    conv = {n: rf for n, rf in DARTS_TRANSFORMATIONS.items() if "pool" not in n}
    assert len(DARTS_TRANSFORMATIONS) == 7 and set(conv.values()) == {5, 7, 9}


def test_bad_block_options_raise():
    with pytest.raises(ValueError, match="rf_max"):
        candidate_names(rf_max=11)
    with pytest.raises(ValueError, match="streams"):
        candidate_names(streams=("dw",))
    with pytest.raises(ValueError, match="op set"):
        candidate_names(ops="nasnet")
    with pytest.raises(ValueError, match="repshare=False"):
        BlockConfig(ops="darts")
    with pytest.raises(ValueError, match="unknown transformation"):
        build_transformation("std_5x5", C)
    with pytest.raises(ValueError, match="13 candidate weights"):
        RepShareBlock(C)(torch.zeros(1, C, 8, 8), torch.zeros(12))


def test_representations_26_naive_12_repshare_counted_by_hooks():
    x, w = torch.randn(1, C, 8, 8), torch.softmax(torch.randn(13), 0)
    naive, shared = NaiveBlock(C), RepShareBlock(C, decouple=True)
    assert naive.representations_per_forward == _count_unit_calls(naive, x, w) == 26
    # H outputs are not representations: 12 with or without decoupling
    assert shared.representations_per_forward == _count_unit_calls(shared, x, w) == 12
    assert RepShareBlock(C, decouple=False).representations_per_forward == 12


@pytest.mark.parametrize(
    ("kwargs", "naive_reps", "shared_reps"),
    [({"rf_max": 5}, 6, 4), ({"rf_max": 7}, 16, 8), ({"streams": ("std",)}, 13, 6)],
)
def test_representation_counts_of_ablations(kwargs, naive_reps, shared_reps):
    x = torch.randn(1, C, 8, 8)
    naive, shared = NaiveBlock(C, **kwargs), RepShareBlock(C, **kwargs)
    w = torch.softmax(torch.randn(len(naive.candidates)), 0)
    assert _count_unit_calls(naive, x, w) == naive.representations_per_forward == naive_reps
    assert _count_unit_calls(shared, x, w) == shared.representations_per_forward == shared_reps


@pytest.mark.parametrize("block_cls", [NaiveBlock, RepShareBlock])
def test_measured_receptive_fields(block_cls):
    torch.manual_seed(0)
    block = _for_rf(block_cls(4))
    for name in block.candidates[:-1]:
        block.zero_grad()
        assert _measured_rf(block, name) == receptive_field(name) == EXPECTED_RF[name.split("_", 1)[1]], name


def test_measured_receptive_fields_darts_ops():
    block = _for_rf(NaiveBlock(4, ops="darts"))
    for name in block.candidates[:-1]:
        if name == "max_pool_3x3":  # a max routes the gradient to one pixel: no support to measure
            continue
        assert _measured_rf(block, name) == receptive_field(name), name


@pytest.mark.parametrize("block", [NaiveBlock(C), RepShareBlock(C), RepShareBlock(C, decouple=False)])
def test_blocks_are_differentiable_in_alphas(block):
    alphas = torch.randn(13, requires_grad=True)
    block(torch.randn(2, C, 8, 8), torch.softmax(alphas, 0)).pow(2).mean().backward()
    assert alphas.grad is not None and torch.isfinite(alphas.grad).all()
    assert (alphas.grad[:-1] != 0).all()


def test_none_takes_weight_but_adds_nothing():
    block = RepShareBlock(C)
    x = torch.randn(1, C, 8, 8)
    assert torch.equal(block(x, _one_hot(block, NONE)), torch.zeros_like(x))
    w = torch.softmax(torch.randn(13), 0)
    w_no_none = w.clone()
    w_no_none[-1] = 0
    assert torch.allclose(block(x, w), block(x, w_no_none))


def test_output_is_eq2_weighted_sum():
    block = NaiveBlock(C)
    x = torch.randn(1, C, 8, 8)
    w = torch.softmax(torch.randn(13), 0)
    expected = sum(w[k] * block.transformations[n](x) for k, n in enumerate(block.candidates[:-1]))
    assert torch.allclose(block(x, w), expected, atol=1e-6)


@pytest.mark.parametrize("streams", [("std", "sep"), ("std",), ("sep",)])
def test_decouple_adds_exactly_two_1x1_convs_per_stream(streams):
    on, off = RepShareBlock(C, streams=streams), RepShareBlock(C, streams=streams, decouple=False)
    extra = {n for n, _ in on.named_parameters()} - {n for n, _ in off.named_parameters()}
    assert {n for n, _ in off.named_parameters()} <= {n for n, _ in on.named_parameters()}
    decouplers = [m for m in on.modules() if isinstance(m, Decouple)]
    assert len(decouplers) == 2 * len(streams)
    assert all(m.conv.kernel_size == (1, 1) for m in decouplers)
    assert len(extra) == 2 * 2 * len(streams)  # weight + bias of each H conv
    assert sorted(on.decouplers) == sorted(f"{s}_{t}" for s in streams for t in ("3x3", "3x3x2"))
    n_on = sum(p.numel() for p in on.parameters())
    n_off = sum(p.numel() for p in off.parameters())
    assert n_on - n_off == 2 * len(streams) * (C * C + C)


def test_subset1_decouples_only_the_shared_p1():
    block = RepShareBlock(C, rf_max=5)  # p2 feeds no other conv without t3/t5
    assert sorted(block.decouplers) == ["sep_3x3", "std_3x3"]


def test_repshare_representations_map_to_real_transformations():
    assert len(REPRESENTATION_TO_TRANSFORMATION) == 12
    assert sorted(REPRESENTATION_TO_TRANSFORMATION.values()) == sorted(FAD_TRANSFORMATIONS)
    assert REPRESENTATION_TO_TRANSFORMATION["std:dil2(p1)"] == "std_3x3_dil2"
    assert REPRESENTATION_TO_TRANSFORMATION["sep:p3"] == "sep_3x3x3"
    torch.manual_seed(0)
    block = RepShareBlock(C, decouple=False)
    x = torch.randn(1, C, 8, 8)
    for name in block.candidates[:-1]:
        path = block.path(name)
        real = build_transformation(REPRESENTATION_TO_TRANSFORMATION[representation_name(name)], C)
        assert [type(u) for u in path] == [type(u) for u in real]
        for src, dst in zip(path, real):
            dst.load_state_dict(src.state_dict())  # same shapes: the path IS the transformation
        assert torch.allclose(block(x, _one_hot(block, name)), real(x), atol=1e-6), name


def test_darts_primitives_are_the_seven_darts_searches() -> None:
    """``ops="darts_primitives"``: DARTS's PRIMITIVES (skip included, no RF-7 op) + none; a derived head
    with ``skip_connect`` builds and runs."""
    from raynas.spaces.fad import FADGenotype, fad_head_factory
    from raynas.spaces.fad.ops import DARTS_PRIMITIVES

    names = candidate_names("darts_primitives")
    assert names == (
        "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
        "dil_conv_5x5", NONE,
    )  # fmt: skip
    assert 7 not in DARTS_PRIMITIVES.values() and "conv_7x1_1x7" not in names
    x = torch.randn(1, 8, 6, 6)
    assert torch.equal(build_transformation("skip_connect", 8)(x), x)
    cell = ("skip_connect", "sep_conv_3x3", "max_pool_3x3", NONE, "dil_conv_5x5", "skip_connect")
    head = fad_head_factory("fcos", c_prime=8, genotype=FADGenotype(cell, cell))(32, 1, 11)
    out = head([torch.randn(1, 32, 8, 8)])
    assert out["cls_logits"].shape == (1, 64, 11)
    searchable = fad_head_factory("fcos", c_prime=8, ops="darts_primitives", repshare=False)(32, 1, 11)
    assert searchable.candidates == names
