"""``choices()`` of the OPANAS and FAD spaces match their ``to_config`` encoding; Tune can search both."""

from __future__ import annotations

import random

import numpy as np
import pytest
from ray.tune.search.sample import Categorical

from raynas.search import arch_from_tune_config, tune_param_space
from raynas.spaces.fad import FADSpace, candidate_names
from raynas.spaces.opanas import OPANASSpace

SPACES = {
    "opanas": OPANASSpace(),
    "opanas_n3": OPANASSpace(num_nodes=3),
    "fad": FADSpace(),
    "fad_std_only": FADSpace(candidates=candidate_names(streams=("std",))),
    "fad_darts_ops": FADSpace(candidates=candidate_names("darts")),
}


@pytest.fixture(params=sorted(SPACES))
def space(request):
    return SPACES[request.param]


def test_choices_cover_exactly_the_config_keys_and_the_values_valid_archs_use(space):
    choices = space.choices()
    rng = random.Random(0)
    seen: dict[str, set[str]] = {key: set() for key in choices}
    for _ in range(1000):
        arch = space.sample(rng)
        # mutate reaches valid values sample does not draw (FAD: a node with a single kept input edge)
        for valid in (arch, space.mutate(arch, 0.3, rng)):
            assert space.is_valid(valid)
            config = space.to_config(valid)
            assert set(config) == set(choices)
            for key, value in config.items():
                seen[key].add(value)
    # FAD node 1 has a single input edge, so no valid genotype has "none" there; choices() still offers it
    # (Tune draws it and arch_from_tune_config turns that draw into None)
    unreachable = {"g1_e0_1": {"none"}, "g2_e0_1": {"none"}} if isinstance(space, FADSpace) else {}
    for key, values in choices.items():
        assert len(values) == len(set(values)), key
        expected = set(values) - unreachable.get(key, set())
        assert seen[key] == expected, f"{key}: choices {values}, sampled {sorted(seen[key])}"


def test_a_value_outside_the_choices_is_rejected(space):
    config = space.to_config(space.sample(random.Random(1)))
    key = sorted(config)[0]
    with pytest.raises(ValueError, match="bogus"):
        space.validate(space.from_config({**config, key: "bogus"}))


def test_fad_choices_are_the_block_candidates():
    space = SPACES["fad_std_only"]
    assert len(space.choices()) == 12  # 2 groups x 6 edges
    assert all(values == list(candidate_names(streams=("std",))) for values in space.choices().values())
    assert len(SPACES["fad"].choices()["g1_e0_1"]) == 13


def test_tune_param_space_builds_a_categorical_per_choice(space):
    param_space = tune_param_space(space)
    choices = space.choices()
    assert set(param_space) == set(choices)
    assert all(isinstance(param_space[k], Categorical) for k in choices)
    assert all(list(param_space[k].categories) == list(choices[k]) for k in choices)

    # configs Tune draws from it decode to valid architectures (or None when the draw is not valid)
    rng = np.random.default_rng(0)
    decoded = 0
    for _ in range(300):
        config = {key: domain.sample(random_state=rng) for key, domain in param_space.items()}
        arch = arch_from_tune_config(space, config)
        if arch is not None:
            assert space.is_valid(arch) and space.to_config(arch) == config
            decoded += 1
    assert decoded > 0
