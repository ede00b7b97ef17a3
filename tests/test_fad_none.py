"""FAD's ``none`` candidate has DARTS semantics (issue: the GroupNorm in ``f_out`` used to cancel it)."""

from __future__ import annotations

import torch

from raynas.spaces.fad.cells import MixedEdge
from raynas.spaces.fad.ops import NONE
from raynas.spaces.fad.repshare import BlockConfig

C, C_PRIME = 16, 8


def edge_and_input(seed: int = 0) -> tuple[MixedEdge, torch.Tensor]:
    torch.manual_seed(seed)
    return MixedEdge(C, C_PRIME, BlockConfig()), torch.randn(2, C, 12, 12)


def test_none_weight_scales_the_edge_output_to_zero() -> None:
    edge, x = edge_and_input()
    n = len(edge.block.candidates)
    none = edge.block.candidates.index(NONE)
    outputs = []
    for alpha_none in (0.0, 2.0, 6.0, 30.0):
        alphas = torch.zeros(n)
        alphas[none] = alpha_none
        w = torch.softmax(alphas, dim=0)
        out = edge(x, w)
        outputs.append(out)
        # the output is exactly (1 - w_none) times the output without none
        w_real = w.clone()
        w_real[none] = 0
        torch.testing.assert_close(out, (1 - w[none]) * edge(x, w_real / w_real.sum()), rtol=1e-5, atol=1e-6)
    norms = [float(o.detach().abs().mean()) for o in outputs]
    assert norms[0] > norms[1] > norms[2] > norms[3] and norms[3] < 1e-9 * norms[0] + 1e-12


def test_alpha_none_gets_a_gradient_of_the_order_of_the_others() -> None:
    edge, x = edge_and_input(1)
    n = len(edge.block.candidates)
    none = edge.block.candidates.index(NONE)
    alphas = (1e-3 * torch.randn(n)).requires_grad_()
    target = torch.randn(2, C, 12, 12)
    loss = (edge(x, torch.softmax(alphas, dim=0)) - target).square().mean()
    (grad,) = torch.autograd.grad(loss, alphas)
    others = grad[[k for k in range(n) if k != none]].abs()
    assert grad[none].abs() > 0.1 * others.median()  # was ~1e-3 x before the fix (GroupNorm's epsilon)
    assert grad[none].abs() < 100 * others.max()
