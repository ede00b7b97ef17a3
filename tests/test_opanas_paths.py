"""The six OPANAS information paths (Sec. 3.1, Eq. 1-6): shapes, odd sizes, locality, special paths."""

from __future__ import annotations

import pytest
import torch

from raynas.spaces.opanas.paths import (
    PARAMETERISED_PATHS,
    PATH_NAMES,
    Conv3x3,
    NonePath,
    SkipPath,
    build_path,
    fusing_levels,
)

# The pyramid of a 100x75 image at strides 4..64 (odd sizes on purpose).
ODD_SIZES = [(25, 19), (13, 10), (7, 5), (4, 3), (2, 2)]
C = 8


def pyramid(num_levels: int, sizes=ODD_SIZES, batch: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, C, h, w) for h, w in sizes[:num_levels]]


def test_constants_follow_eq13_order():
    assert PATH_NAMES == ("top_down", "bottom_up", "scale_equalizing", "fusing_splitting", "skip", "none")
    assert PARAMETERISED_PATHS == ("top_down", "bottom_up", "scale_equalizing", "fusing_splitting")


@pytest.mark.parametrize("num_levels", [4, 5])
@pytest.mark.parametrize("name", PARAMETERISED_PATHS + ("skip",))
@pytest.mark.parametrize("norm", [None, "gn"])
def test_path_keeps_every_level_shape_on_odd_sizes(name, num_levels, norm):
    levels = pyramid(num_levels)
    out = build_path(name, C, num_levels, norm=norm)(levels)
    assert [o.shape for o in out] == [x.shape for x in levels]
    assert all(torch.isfinite(o).all() for o in out)


@pytest.mark.parametrize("name", PARAMETERISED_PATHS)
def test_deformable_paths_run_and_keep_shapes(name):
    levels = pyramid(4, sizes=[(13, 10), (7, 5), (4, 3), (2, 2)], batch=1)
    path = build_path(name, C, 4, deformable=True)
    out = path(levels)
    assert [o.shape for o in out] == [x.shape for x in levels]
    sum(o.sum() for o in out).backward()
    assert any(isinstance(m, Conv3x3) and m.offset is not None for m in path.modules())


def test_deformable_conv_starts_as_plain_conv():
    conv = Conv3x3(C, C, stride=2, deformable=True)
    x = torch.randn(1, C, 9, 7)
    torch.testing.assert_close(conv(x), conv(x, deform=False))


def test_top_down_finest_level_conv_is_plain_as_w2():
    path = build_path("top_down", C, 4, deformable=True)
    assert path.convs[0].conv.offset is None
    assert all(c.conv.offset is not None for c in path.convs[1:])


def test_skip_is_identity_and_none_contributes_nothing():
    levels = pyramid(4)
    out = SkipPath()(levels)
    assert all(a is b for a, b in zip(out, levels))
    assert NonePath()(levels) is None
    assert sum(p.numel() for p in SkipPath().parameters()) == 0
    assert sum(p.numel() for p in NonePath().parameters()) == 0


def _changed_levels(name: str, num_levels: int, perturbed_level: int) -> list[bool]:
    """Which outputs change when one input level changes (checks the information flow of each equation)."""
    levels = pyramid(num_levels)
    path = build_path(name, C, num_levels).eval()
    with torch.no_grad():
        before = path(levels)
        levels[perturbed_level] = levels[perturbed_level] + 1.0
        after = path(levels)
    return [not torch.equal(a, b) for a, b in zip(before, after)]


def test_top_down_flows_from_coarse_to_fine():
    # Eq. 1: F_i depends on P_i..P_{L-1}; a change in the finest input reaches only the finest output.
    assert _changed_levels("top_down", 4, 0) == [True, False, False, False]
    assert _changed_levels("top_down", 4, 3) == [True, True, True, True]


def test_bottom_up_flows_from_fine_to_coarse():
    # Eq. 2: F_i depends on P_0..P_i.
    assert _changed_levels("bottom_up", 4, 3) == [False, False, False, True]
    assert _changed_levels("bottom_up", 4, 0) == [True, True, True, True]


def test_scale_equalizing_mixes_only_adjacent_levels():
    # Eq. 3: F_i depends on P_{i-1}, P_i, P_{i+1}.
    assert _changed_levels("scale_equalizing", 5, 4) == [False, False, False, True, True]
    assert _changed_levels("scale_equalizing", 5, 0) == [True, True, False, False, False]


def test_fusing_splitting_reaches_every_level():
    # Eq. 4-6: beta_s and beta_l carry information of all levels.
    for level in range(5):
        assert all(_changed_levels("fusing_splitting", 5, level))


def test_fusing_levels_rule():
    assert fusing_levels(4) == (1, 2)  # P2-P5: alpha_l at P3, alpha_s at P4 (Eq. 4)
    assert fusing_levels(5) == (1, 2)  # P3-P7: alpha_l at P4, alpha_s at P5
    assert fusing_levels(3) == (0, 1)
    assert fusing_levels(2) == (0, 1)
    with pytest.raises(ValueError, match="at least 2"):
        fusing_levels(1)


def test_wrong_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="built for 4 pyramid levels but got 3"):
        build_path("top_down", C, 4)(pyramid(3))
    with pytest.raises(ValueError, match="unknown information path 'lateral'"):
        build_path("lateral", C, 4)
    with pytest.raises(ValueError, match="norm must be one of"):
        build_path("bottom_up", C, 4, norm="bn")
