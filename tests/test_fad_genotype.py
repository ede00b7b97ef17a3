"""FAD genotype, discrete space (SearchSpace protocol) and derivation from alphas (Sec. 3.2 end)."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from raynas.spaces.base import SearchSpace, arch_from_json, arch_to_json
from raynas.spaces.fad.cells import EDGES
from raynas.spaces.fad.genotype import FADGenotype, FADSpace, derive, representation_to_transformation
from raynas.spaces.fad.ops import FAD_TRANSFORMATIONS, NONE, candidate_names

CANDS = candidate_names()
# edge order (0,1) (0,2) (1,2) (0,3) (1,3) (2,3)
GOOD = FADGenotype(
    ("std_3x3x3", "sep_3x3_dil3", "std_3x3", "std_3x3x2_dil2", NONE, "sep_3x3"),
    ("sep_3x3x2", "std_3x3_dil2", "sep_3x3x3", NONE, "std_3x3x2", "sep_3x3x2_dil2"),
)


def _kept_per_node(cell: tuple[str, ...]) -> dict[int, int]:
    return {j: sum(op != NONE for (_, dst), op in zip(EDGES, cell) if dst == j) for j in (1, 2, 3)}


def test_edge_order_is_fixed():
    assert EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def test_size_is_13_pow_12():
    space = FADSpace()
    assert space.name == "fad"
    assert space.size == 13**12 and f"{space.size:.1e}" == "2.3e+13"  # Sec. 3.1 "roughly 2.3x10^13"
    assert FADSpace(candidate_names(rf_max=5)).size == 5**12
    assert isinstance(space, SearchSpace)


def test_num_derivable_matches_enumeration():
    space = FADSpace(candidates=("std_3x3", "sep_3x3", NONE))
    per_group = sum(
        1
        for cell in itertools.product(space.candidates, repeat=len(EDGES))
        if _kept_per_node(cell) == {1: 1, 2: 2, 3: 2}
    )
    assert space.num_derivable == per_group**2
    assert FADSpace().num_derivable == (12 * 12**2 * 3 * 12**2) ** 2


def test_validate_accepts_good_and_names_bad_fields():
    space = FADSpace()
    space.validate(GOOD)
    assert space.is_valid(GOOD)
    with pytest.raises(ValueError, match="group1: expected 6 edges"):
        space.validate(FADGenotype(GOOD.group1[:5], GOOD.group2))
    with pytest.raises(ValueError, match=r"group2 edge 1->2: unknown candidate 'std_5x5'"):
        space.validate(FADGenotype(GOOD.group1, ("sep_3x3", "std_3x3", "std_5x5", NONE, NONE, "sep_3x3")))
    with pytest.raises(ValueError, match="group1 node 3: no incoming edge"):
        space.validate(FADGenotype(("std_3x3", "std_3x3", NONE, NONE, NONE, NONE), GOOD.group2))
    with pytest.raises(ValueError, match="group2 node 3: 3 incoming edges"):
        space.validate(FADGenotype(GOOD.group1, ("sep_3x3",) * 6))
    with pytest.raises(ValueError, match="FADGenotype"):
        space.validate(("std_3x3",) * 12)
    assert not space.is_valid(FADGenotype(GOOD.group1, ("sep_3x3",) * 6))


def test_subset_space_rejects_ops_outside_it():
    with pytest.raises(ValueError, match="unknown candidate 'std_3x3x3'"):
        FADSpace(candidate_names(rf_max=5)).validate(GOOD)


def test_sample_is_the_random_baseline():
    space, rng = FADSpace(), random.Random(0)
    for _ in range(200):
        g = space.sample(rng)
        space.validate(g)
        for cell in g.groups:
            assert _kept_per_node(cell) == {1: 1, 2: 2, 3: 2}


def test_mutate_and_crossover_stay_valid_and_prob_zero_is_identity():
    space, rng = FADSpace(), random.Random(1)
    parents = [space.sample(rng) for _ in range(20)]
    for a, b in zip(parents, parents[1:]):
        assert space.mutate(a, 0.0, rng) == a
        for prob in (0.3, 1.0):
            space.validate(space.mutate(a, prob, rng))
        child = space.crossover(a, b, rng)
        space.validate(child)
        for cg, ag, bg in zip(child.groups, a.groups, b.groups):
            assert all(op in (x, y) for op, x, y in zip(cg, ag, bg))
    mutated = {space.mutate(parents[0], 0.5, rng) for _ in range(50)}
    assert len(mutated) > 1


def test_config_and_json_round_trip():
    space = FADSpace()
    config = space.to_config(GOOD)
    assert config["g1_e0_1"] == "std_3x3x3" and config["g2_e2_3"] == "sep_3x3x2_dil2"
    assert len(config) == 12 and all(isinstance(v, str) for v in config.values())
    assert space.from_config({**config, "lr": 0.1, "seed": 3}) == GOOD
    assert arch_from_json(space, arch_to_json(space, GOOD)) == GOOD
    assert hash(GOOD) == hash(FADGenotype(list(GOOD.group1), list(GOOD.group2)))
    missing = dict(config)
    del missing["g2_e1_3"]
    with pytest.raises(ValueError, match="g2_e1_3"):
        space.from_config(missing)
    bad = arch_to_json(space, GOOD).replace("sep_3x3x3", "sep_9x9")
    with pytest.raises(ValueError, match="unknown candidate 'sep_9x9'"):
        arch_from_json(space, bad)


def test_derive_picks_best_non_none_op_and_top2_edges():
    n = len(CANDS)
    alphas = torch.zeros(2, 6, n)
    none = CANDS.index(NONE)
    alphas[..., none] = 10.0  # none dominates every edge, yet is never chosen
    for g in range(2):
        for e in range(6):
            alphas[g, e, (e + g) % 12] = 1.0 + 0.1 * e  # best real op of edge e; strength grows with e
    genotype = derive(alphas, CANDS)
    for g, cell in enumerate(genotype.groups):
        assert _kept_per_node(cell) == {1: 1, 2: 2, 3: 2}
        assert cell[3] == NONE  # node 3: (0,3) is the weakest of (0,3) (1,3) (2,3)
        for e in (0, 1, 2, 4, 5):
            assert cell[e] == CANDS[(e + g) % 12]
    FADSpace().validate(genotype)


def test_derive_ranks_edges_by_best_weight_not_raw_alpha_order():
    alphas = torch.zeros(2, 6, len(CANDS))
    alphas[:, 3, CANDS.index("sep_3x3_dil3")] = 5.0  # (0,3) strong
    alphas[:, 5, CANDS.index("std_3x3")] = 4.0  # (2,3) second
    alphas[:, 4, CANDS.index("std_3x3x2")] = 0.5  # (1,3) weak: dropped
    cell = derive(alphas, CANDS).group1
    assert cell[3:] == ("sep_3x3_dil3", NONE, "std_3x3")


def test_derive_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(2, 6, 13\)"):
        derive(torch.zeros(2, 6, 12), CANDS)
    with pytest.raises(ValueError, match="none"):
        derive(torch.zeros(2, 6, 2), ("std_3x3", "sep_3x3"))


def test_derive_on_subset_candidates():
    cands = candidate_names(streams=("sep",), rf_max=7)
    genotype = derive(torch.randn(2, 6, len(cands)), cands)
    FADSpace(cands).validate(genotype)


def test_representation_to_transformation_is_explicit_identity_on_fad_names():
    for name in FAD_TRANSFORMATIONS:
        assert representation_to_transformation(name) == name
    assert representation_to_transformation("dil_conv_5x5") == "dil_conv_5x5"
