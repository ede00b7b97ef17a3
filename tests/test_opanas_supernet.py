"""The OPANAS super-net (Sec. 3.2.1, Eq. 10-12), the discrete OPA-FPN, and their use as torchvision necks."""

from __future__ import annotations

import functools
import pickle
import random
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from raynas.spaces.opanas import (
    OPAFPN,
    OPANASArch,
    OPANASSpace,
    OPANASSupernet,
    opa_fpn_factory,
)

SPACE = OPANASSpace()
C = 8
IN4 = [4, 8, 16, 16]  # Faster R-CNN style: C2-C5, "pool" after the DAG
IN3 = [8, 16, 16]  # RetinaNet/FCOS style: C3-C5 + P6, P7 before the DAG


def body_features(in_channels, top=(26, 19), batch=1) -> OrderedDict[str, torch.Tensor]:
    """Backbone maps with odd sizes: each level is ceil(previous / 2), like ResNet stages."""
    torch.manual_seed(0)
    h, w = top
    feats = OrderedDict()
    for k, c in enumerate(in_channels):
        feats[str(k)] = torch.randn(batch, c, h, w)
        h, w = (h + 1) // 2, (w + 1) // 2
    return feats


def arch_of(**edges: str) -> OPANASArch:
    return SPACE.from_config({key: edges.get(key, "none") for key in SPACE.keys})


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def supernet4() -> OPANASSupernet:
    torch.manual_seed(0)
    net = OPANASSupernet(IN4, C, LastLevelMaxPool())
    with torch.no_grad():  # distinct gammas, so the tests see them in the outputs
        net.gamma.copy_(torch.linspace(0.5, 1.5, SPACE.num_edges))
    return net


def test_output_names_shapes_and_out_channels(supernet4):
    feats = body_features(IN4)
    with supernet4.using(SPACE.sample(random.Random(0))):
        out = supernet4(feats)
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(26, 19), (13, 10), (7, 5), (4, 3), (2, 2)]
    assert all(v.shape[1] == C for v in out.values())
    assert supernet4.out_channels == C
    assert supernet4.num_levels == 4 and supernet4.extra_on == "output"


def test_p6p7_extends_the_pyramid_before_the_dag():
    net = OPANASSupernet(IN3, C, LastLevelP6P7(IN3[-1], C), num_nodes=2)
    assert net.num_levels == 5 and net.extra_on == "input"
    assert len(net.edges["e0_1"]["top_down"].convs) == 5
    out = net(body_features(IN3), arch=OPANASSpace(2).sample(random.Random(1)))
    assert list(out) == ["0", "1", "2", "p6", "p7"]
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(26, 19), (13, 10), (7, 5), (4, 3), (2, 2)]


def test_using_is_explicit_and_nests(supernet4):
    feats = body_features(IN4)
    with pytest.raises(RuntimeError, match="no active sub-net.*supernet.using"):
        supernet4(feats)
    a, b = SPACE.sample(random.Random(1)), SPACE.sample(random.Random(2))
    with supernet4.using(a):
        with supernet4.using(b):
            assert supernet4.active_arch == b
        assert supernet4.active_arch == a
        torch.testing.assert_close(supernet4(feats)["0"], supernet4(feats, arch=a)["0"])
    assert supernet4.active_arch is None
    with pytest.raises(ValueError, match="disconnected"), supernet4.using(OPANASArch(("none",) * 15)):
        pass


def test_only_active_paths_and_gammas_get_gradients():
    torch.manual_seed(0)
    net = OPANASSupernet(IN4, C, LastLevelMaxPool(), num_nodes=3)
    space = OPANASSpace(3)
    arch = OPANASArch(
        ("top_down", "none", "scale_equalizing", "skip", "fusing_splitting", "bottom_up")
    )  # e0_1, e0_2, e1_2, e0_3, e1_3, e2_3
    sum(v.sum() for v in net(body_features(IN4), arch=arch).values()).backward()
    for key, name in zip(space.keys, arch.edges):
        for path_name, path in net.edges[key].items():
            grads = [p.grad for p in path.parameters()]
            if path_name == name:
                assert all(g is not None for g in grads), (key, path_name)
            else:
                assert all(g is None for g in grads), (key, path_name)
    assert net.gamma.grad is not None
    active = torch.tensor([name != "none" for name in arch.edges])
    assert (net.gamma.grad[active] != 0).all() and (net.gamma.grad[~active] == 0).all()


def test_gamma_l1_and_gamma_scales_edges():
    net = OPANASSupernet(IN4, C, num_nodes=2, gamma_init=1.0)
    assert net.gamma.requires_grad and torch.equal(net.gamma.detach(), torch.ones(3))
    assert net.gamma_l1().item() == pytest.approx(3.0)
    with torch.no_grad():
        net.gamma.copy_(torch.tensor([0.5, -2.0, 0.25]))
    assert net.gamma_l1().item() == pytest.approx(2.75)
    # Only skip edges: x1 = g01 P, x2 = g02 P + g12 x1, output = x1 + x2 (Sec. 3.2: nodes summed into O).
    arch = OPANASSpace(2).from_config({"e0_1": "skip", "e0_2": "skip", "e1_2": "skip"})
    feats = body_features(IN4)
    out = net(feats, arch=arch)
    lateral = net.lateral[0](feats["0"])
    torch.testing.assert_close(out["0"], (0.5 + -2.0 + 0.25 * 0.5) * lateral)


def test_dead_nodes_are_skipped():
    torch.manual_seed(0)
    net = OPANASSupernet(IN4, C, num_nodes=3)
    space = OPANASSpace(3)
    live = space.from_config({"e0_1": "top_down", "e0_2": "none", "e1_2": "none", "e0_3": "none",
                              "e1_3": "skip", "e2_3": "none"})  # fmt: skip
    dead = space.from_config({**space.to_config(live), "e2_3": "bottom_up"})  # node 2 is dead
    feats = body_features(IN4)
    out_live, out_dead = net(feats, arch=live), net(feats, arch=dead)
    for key in out_live:
        torch.testing.assert_close(out_live[key], out_dead[key])
    sum(v.sum() for v in out_dead.values()).backward()
    assert all(p.grad is None for p in net.edges["e2_3"]["bottom_up"].parameters())


@pytest.mark.parametrize("seed", [0, 1])
def test_opafpn_extracted_from_supernet_matches_supernet(supernet4, seed):
    feats = body_features(IN4, batch=2)
    arch = SPACE.sample(random.Random(seed))
    fpn = supernet4.extract(arch)
    with torch.no_grad(), supernet4.using(arch):
        expected = supernet4(feats)
        got = fpn(feats)
    assert list(got) == list(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])
    assert count(fpn) < count(supernet4)


def test_opafpn_p6p7_extracted_from_supernet_matches_with_gn_and_deformable():
    torch.manual_seed(0)
    net = OPANASSupernet(IN3, C, LastLevelP6P7(C, C), num_nodes=2, deformable=True, norm="gn")
    arch = OPANASSpace(2).from_config(
        {"e0_1": "scale_equalizing", "e0_2": "fusing_splitting", "e1_2": "top_down"}
    )
    feats = body_features(IN3, top=(13, 10))
    fpn = net.extract(arch)
    with torch.no_grad():
        expected, got = net(feats, arch=arch), fpn(feats)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_opafpn_params_depend_on_the_arch():
    heavy = arch_of(**{key: "fusing_splitting" for key in SPACE.keys})
    light = arch_of(e0_1="top_down", e1_2="skip", e0_3="skip")
    bare = arch_of(e0_1="skip")
    sizes = [count(OPAFPN(a, IN4, C, LastLevelMaxPool())) for a in (heavy, light, bare)]
    assert sizes[0] > sizes[1] > sizes[2]
    assert sizes[2] == sum(c * C + C for c in IN4)  # only the lateral 1x1 convs
    assert sizes[0] < count(OPANASSupernet(IN4, C, LastLevelMaxPool()))


def test_opafpn_fixed_gamma_is_a_buffer():
    arch = arch_of(e0_1="skip", e0_2="skip")
    fpn = OPAFPN(arch, IN4, C, gamma=[2.0] + [1.0] * 14)
    assert "gamma" in dict(fpn.named_buffers()) and "gamma" not in dict(fpn.named_parameters())
    feats = body_features(IN4)
    torch.testing.assert_close(fpn(feats)["0"], 3.0 * fpn.lateral[0](feats["0"]))
    with pytest.raises(ValueError, match="gamma must hold 15 values"):
        OPAFPN(arch, IN4, C, gamma=[1.0])


def test_neck_factories_have_the_contract_signature():
    arch = arch_of(e0_1="top_down", e1_2="bottom_up")
    factory = opa_fpn_factory(arch, norm="gn")
    neck = pickle.loads(pickle.dumps(factory))(IN4, C, LastLevelMaxPool())
    assert isinstance(neck, OPAFPN) and neck.out_channels == C and neck.arch == arch
    supernet = functools.partial(OPANASSupernet, num_nodes=2)(IN3, C, LastLevelP6P7(C, C))
    assert supernet.space.num_edges == 3
    with pytest.raises(ValueError, match="built for 3 backbone levels but got 4"):
        supernet(body_features(IN4), arch=OPANASSpace(2).sample(random.Random(0)))


class TinyBackbone(nn.Module):
    """A three-stage conv body + neck, shaped like torchvision's BackboneWithFPN (strides 8, 16, 32)."""

    def __init__(self, neck: nn.Module) -> None:
        super().__init__()
        chans = [3, *IN3]
        self.stages = nn.ModuleList(
            nn.Conv2d(chans[k], chans[k + 1], 3, stride=8 if k == 0 else 2, padding=1) for k in range(3)
        )
        self.neck = neck
        self.out_channels = neck.out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = OrderedDict()
        for k, stage in enumerate(self.stages):
            x = torch.relu(stage(x))
            feats[str(k)] = x
        return self.neck(feats)


def compute_loss_for(net, feats, arch):
    return sum(v.square().mean() for v in net(feats, arch=arch).values())
