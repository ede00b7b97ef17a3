"""The OPANAS search space (Sec. 3.2) and strict fair sampling (Sec. 3.2.1, Eq. 13)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from raynas.spaces.base import SearchSpace, arch_from_json, arch_to_json
from raynas.spaces.opanas import (
    PARAMETERISED_PATHS,
    PATH_NAMES,
    OPANASArch,
    OPANASSpace,
    fair_sample,
    fair_step_seed,
)

SPACE = OPANASSpace()


def arch_of(**edges: str) -> OPANASArch:
    """An architecture with the named edges (``e0_1="top_down"``), every other edge ``none``."""
    return SPACE.from_config({key: edges.get(key, "none") for key in SPACE.keys})


def test_size_and_edges_match_the_paper():
    assert isinstance(SPACE, SearchSpace)
    assert SPACE.name == "opanas"
    assert SPACE.size == 6**15
    assert SPACE.num_edges == 15
    assert SPACE.num_valid == 6**15 - 6**10
    assert OPANASSpace(3).num_edges == 6
    assert SPACE.keys[:6] == ["e0_1", "e0_2", "e1_2", "e0_3", "e1_3", "e2_3"]
    assert SPACE.pairs[-1] == (4, 5)


def test_arch_is_hashable_and_knows_its_pairs():
    arch = SPACE.sample(random.Random(0))
    assert len({arch, OPANASArch(list(arch.edges))}) == 1
    assert arch.num_nodes == 5
    assert arch.pairs() == SPACE.pairs


def test_sample_is_valid_and_deterministic_per_seed():
    archs = [SPACE.sample(random.Random(7)) for _ in range(3)]
    assert archs[0] == archs[1] == archs[2]
    assert SPACE.sample(random.Random(8)) != archs[0]
    rng = random.Random(0)
    drawn = [SPACE.sample(rng) for _ in range(300)]
    assert all(SPACE.is_valid(a) for a in drawn)
    assert set(Counter(e for a in drawn for e in a.edges)) == set(PATH_NAMES)


def test_sample_rejects_disconnected_draws():
    class NoneFirst(random.Random):
        """Draws `none` for every edge on the first sample, then behaves normally."""

        calls = 0

        def choice(self, seq):
            self.calls += 1
            return "none" if self.calls <= SPACE.num_edges else super().choice(seq)

    rng = NoneFirst(0)
    arch = SPACE.sample(rng)
    assert SPACE.is_valid(arch)
    assert rng.calls == 2 * SPACE.num_edges


def test_mutate_prob_zero_is_identity_and_one_changes_every_edge():
    rng = random.Random(1)
    for _ in range(20):
        arch = SPACE.sample(rng)
        assert SPACE.mutate(arch, 0.0, rng) == arch
        child = SPACE.mutate(arch, 1.0, rng)
        assert SPACE.is_valid(child)
        assert all(a != b for a, b in zip(arch.edges, child.edges))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        SPACE.mutate(arch, 1.5, rng)


def test_mutate_small_prob_changes_few_edges():
    rng = random.Random(2)
    arch = SPACE.sample(rng)
    changed = [
        sum(a != b for a, b in zip(arch.edges, SPACE.mutate(arch, 0.1, rng).edges)) for _ in range(200)
    ]
    assert 0.5 < sum(changed) / len(changed) < 3.0  # about 15 * 0.1


def test_crossover_takes_each_edge_from_a_parent():
    rng = random.Random(3)
    for _ in range(50):
        a, b = SPACE.sample(rng), SPACE.sample(rng)
        child = SPACE.crossover(a, b, rng)
        assert SPACE.is_valid(child)
        assert all(c in (x, y) for c, x, y in zip(child.edges, a.edges, b.edges))


def test_crossover_never_returns_a_disconnected_child():
    a = arch_of(e0_1="top_down", e1_2="skip")
    b = arch_of(e0_2="top_down", e1_2="skip")  # mixing e0_1 of b with e0_2 of a is disconnected
    rng = random.Random(4)
    children = {SPACE.crossover(a, b, rng) for _ in range(100)}
    assert all(SPACE.is_valid(c) for c in children)
    assert len(children) == 3


def test_validate_names_the_problem():
    good = SPACE.sample(random.Random(5))
    with pytest.raises(ValueError, match="has 14 edges, expected 15"):
        SPACE.validate(OPANASArch(good.edges[:14]))
    with pytest.raises(ValueError, match=r"edge 2 \(e1_2\) has unknown path 'conv'.*valid paths: top_down"):
        SPACE.validate(OPANASArch(good.edges[:2] + ("conv",) + good.edges[3:]))
    with pytest.raises(ValueError, match=r"edge 0 \(e0_1\) must be a path name \(str\), got int"):
        SPACE.validate(OPANASArch((0,) + good.edges[1:]))
    with pytest.raises(ValueError, match="must be an OPANASArch, got tuple"):
        SPACE.validate(good.edges)
    assert not SPACE.is_valid(OPANASArch(good.edges[:14]))


def test_all_none_and_output_disconnected_archs_are_invalid():
    with pytest.raises(ValueError, match="disconnected.*e0_1, e0_2, e0_3, e0_4, e0_5.*'none'"):
        SPACE.validate(OPANASArch(("none",) * 15))
    inner_only = {key: ("top_down" if not key.startswith("e0_") else "none") for key in SPACE.keys}
    with pytest.raises(ValueError, match="disconnected"):
        SPACE.from_config(inner_only)


def test_live_nodes_and_active_edges():
    arch = arch_of(e0_2="top_down", e1_3="bottom_up", e2_4="skip", e3_5="fusing_splitting")
    # node 1 has no input, so node 3 (fed only by node 1) and node 5 (fed only by node 3) are dead too.
    assert SPACE.live_nodes(arch) == (True, False, True, False, True, False)
    assert [(i, j, name) for _, i, j, name in SPACE.active_edges(arch)] == [
        (0, 2, "top_down"),
        (2, 4, "skip"),
    ]
    same = SPACE.from_edges(
        {(0, 2): "top_down", (1, 3): "bottom_up", (2, 4): "skip", (3, 5): "fusing_splitting"}
    )
    assert same == arch
    with pytest.raises(ValueError, match=r"\(5, 6\)"):
        SPACE.from_edges({(5, 6): "skip"})


def test_config_and_json_round_trip():
    rng = random.Random(6)
    for _ in range(10):
        arch = SPACE.sample(rng)
        config = SPACE.to_config(arch)
        assert list(config) == SPACE.keys and all(isinstance(v, str) for v in config.values())
        assert SPACE.from_config({**config, "mAP": 0.3, "generation": 2}) == arch
        assert arch_from_json(SPACE, arch_to_json(SPACE, arch)) == arch


def test_from_config_reports_missing_and_bad_keys():
    config = SPACE.to_config(SPACE.sample(random.Random(0)))
    del config["e2_4"]
    with pytest.raises(ValueError, match="missing edge.*e2_4"):
        SPACE.from_config(config)
    config["e2_4"] = "sideways"
    with pytest.raises(ValueError, match=r"e2_4\) has unknown path 'sideways'"):
        SPACE.from_config(config)


# --- strict fair sampling (Sec. 3.2.1) ---------------------------------------------------------------------


def test_fair_sample_trains_each_path_once_per_edge_per_step():
    archs = fair_sample(SPACE, seed=fair_step_seed(0, 17))
    assert len(archs) == 4
    for edge in range(SPACE.num_edges):
        counts = Counter(arch.edges[edge] for arch in archs)
        assert counts == Counter(PARAMETERISED_PATHS)  # E = n/K per step, Var = 0 (Eq. 13)
    assert all(SPACE.is_valid(a) for a in archs)


def test_fair_sample_is_identical_across_ranks_and_differs_across_steps():
    rank0 = fair_sample(SPACE, seed=fair_step_seed(42, 3))
    rank1 = fair_sample(15, seed=fair_step_seed(42, 3))
    assert rank0 == rank1
    assert fair_sample(SPACE, seed=fair_step_seed(42, 4)) != rank0
    assert fair_sample(SPACE, rng=random.Random(fair_step_seed(42, 3))) == rank0


def test_fair_sample_argument_errors():
    with pytest.raises(ValueError, match="exactly one of seed= or rng="):
        fair_sample(SPACE)
    with pytest.raises(ValueError, match="k must be between 1 and 4"):
        fair_sample(SPACE, seed=0, k=5)
    assert len(fair_sample(SPACE, seed=0, k=2)) == 2


def test_canonical_form_sets_edges_out_of_dead_nodes_to_none():
    space = OPANASSpace()
    # node 1 is dead (its only input edge is none): its outgoing edges never run
    base = space.from_edges({(0, 2): "top_down", (1, 2): "bottom_up", (1, 3): "skip", (2, 3): "top_down"})
    canonical = space.canonical(base)
    assert canonical == space.from_edges({(0, 2): "top_down", (2, 3): "top_down"})
    assert space.canonical(canonical) == canonical and space.active_edges(base) == space.active_edges(
        canonical
    )
    live = space.from_config({key: "top_down" for key in space.keys})
    assert space.canonical(live) == live
