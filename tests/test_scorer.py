"""Scoring OPANAS sub-nets with super-net weights: the plain scorer and the Ray actor pool.

The checkpoint is an untrained tiny super-net written without Ray Train (``helpers_supernet``); the
scorer tests need no Ray, the pool tests share one Ray instance for the module.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from pathlib import Path

import pytest
import ray
import torch
from helpers_supernet import make_standalone_checkpoint, make_supernet_checkpoint

from raynas.checkpoints import load_state
from raynas.search.evolution import EvolutionSearcher
from raynas.search.pool import ScorerPool
from raynas.search.run import results_table, run_search
from raynas.search.scorer import SupernetScorer, state_to_numpy
from raynas.spaces.opanas import OPAFPN, OPANASSpace

SPACE = OPANASSpace()
HEAVY = SPACE.from_config({key: "fusing_splitting" for key in SPACE.keys})
LIGHT = SPACE.from_edges({(0, 1): "skip"})
SAMPLED = SPACE.sample(random.Random(3))
COCO_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl"}


@pytest.fixture(scope="module")
def checkpoint(tiny_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_supernet_checkpoint(tmp_path_factory.mktemp("supernet"), tiny_digits)


@pytest.fixture(scope="module")
def scorers(checkpoint: Path) -> dict[bool, SupernetScorer]:
    """``{cache_features: scorer}`` over the same weights and validation images."""
    state = load_state(checkpoint)
    weights = state_to_numpy(state["model"])
    return {
        cache: SupernetScorer(weights, state["config"], state["num_classes"], cache_features=cache)
        for cache in (True, False)
    }


def detections(scorer: SupernetScorer, arch) -> list[dict[str, torch.Tensor]]:
    with scorer.supernet.using(arch):
        return [
            out for index, (images, _) in enumerate(scorer.batches) for out in scorer._detect(index, images)
        ]


def same_metrics(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k]))
        if isinstance(a[k], float) and math.isnan(a[k])
        else a[k] == b[k]
        for k in a
    )


# ---- the scorer (plain Python) ------------------------------------------------------------------
def test_the_feature_cache_stays_within_its_byte_budget(checkpoint, scorers) -> None:
    """Past the budget, batches run the full forward: the cache never grows beyond it, scores stay equal."""
    state = load_state(checkpoint)
    weights = state_to_numpy(state["model"])
    unbounded = SupernetScorer(weights, state["config"], state["num_classes"], batch_size=1)
    assert unbounded.cached_batches == len(unbounded.batches) >= 2
    one_batch = unbounded.cache_nbytes // unbounded.cached_batches + 1
    bounded = SupernetScorer(
        weights, state["config"], state["num_classes"], batch_size=1, cache_bytes=one_batch
    )
    assert bounded.cached_batches == 1 < len(bounded.batches)
    assert 0 < bounded.cache_nbytes <= one_batch
    config = SPACE.to_config(SAMPLED)
    assert same_metrics(bounded.score(config), scorers[False].score(config))


@pytest.mark.parametrize("arch", [HEAVY, SAMPLED], ids=["heavy", "sampled"])
def test_cached_features_give_the_same_detections_and_ap_as_the_full_forward(scorers, arch) -> None:
    cached, full = detections(scorers[True], arch), detections(scorers[False], arch)
    assert len(cached) == len(full) == len(scorers[True].image_ids)
    assert sum(len(out["boxes"]) for out in cached) > 0, "the test checkpoint should fire"
    for a, b in zip(cached, full):
        torch.testing.assert_close(a["boxes"], b["boxes"])
        torch.testing.assert_close(a["scores"], b["scores"])
        assert torch.equal(a["labels"], b["labels"])
    config = SPACE.to_config(arch)
    assert same_metrics(scorers[True].score(config), scorers[False].score(config))


def test_cached_scoring_never_runs_the_backbone(scorers) -> None:
    calls = {True: 0, False: 0}
    for cache, scorer in scorers.items():
        scorer.costs(SAMPLED)  # FLOPs counting runs the body once per new architecture; not scoring
        hook = scorer.model.backbone.body.register_forward_hook(
            lambda *_, cache=cache: calls.__setitem__(cache, calls[cache] + 1)
        )
        try:
            scorer.score(SPACE.to_config(SAMPLED))
        finally:
            hook.remove()
    assert calls == {True: 0, False: len(scorers[False].batches)}


def test_score_returns_coco_metrics_and_neck_costs(scorers) -> None:
    result = scorers[True].score(SPACE.to_config(SAMPLED))
    assert set(result) == COCO_KEYS | {"neck_params", "neck_flops"}
    assert all(math.isnan(result[k]) or 0.0 <= result[k] <= 1.0 for k in COCO_KEYS)
    assert isinstance(result["neck_params"], int) and result["neck_params"] > 0
    assert isinstance(result["neck_flops"], int) and result["neck_flops"] > 0
    supernet = scorers[True].supernet
    neck = OPAFPN(
        SAMPLED, supernet.in_channels_list, supernet.out_channels, extra_blocks=supernet.extra_blocks
    )
    assert result["neck_params"] == sum(p.numel() for p in neck.parameters())


def test_the_constraint_and_the_table_count_the_same_cost_on_non_square_images(checkpoint: Path) -> None:
    """One definition (raynas.search.neck_cost): the table's cost does not follow the validation images'
    shape, which once set the table's FLOPs while the constraint used a square."""
    from raynas.search.neck_cost import NeckCost

    state = load_state(checkpoint)
    scorer = SupernetScorer(state_to_numpy(state["model"]), state["config"], state["num_classes"])
    images, targets = scorer.batches[0]
    scorer.batches[0] = ([torch.rand(3, 48, 96), *images[1:]], targets)  # a wide first image
    params, flops = NeckCost(checkpoint, "params"), NeckCost(checkpoint, "flops")
    for arch in (HEAVY, LIGHT, SAMPLED):
        assert scorer.costs(arch) == (params(arch), flops(arch))


def test_heavy_and_light_architectures_cost_differently(scorers) -> None:
    (heavy_params, heavy_flops), (light_params, light_flops) = map(scorers[True].costs, (HEAVY, LIGHT))
    assert heavy_params > 2 * light_params and heavy_flops > 2 * light_flops


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"e0_3": "sideways"}, r"edge 3 \(e0_3\) has unknown path 'sideways'"),
        ({key: "none" for key in ("e0_1", "e0_2", "e0_3", "e0_4", "e0_5")}, "disconnected"),
        ({"e2_4": None}, "missing edge"),
    ],
    ids=["unknown-path", "disconnected", "missing-edge"],
)
def test_invalid_architecture_is_a_clear_value_error(scorers, change, message) -> None:
    config = {**SPACE.to_config(SAMPLED), **change}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        scorers[True].score(config)


# ---- the actor pool (real Ray) ------------------------------------------------------------------
def test_pool_rejects_a_checkpoint_of_the_wrong_kind(tiny_digits: Path, tmp_path: Path) -> None:
    standalone = make_standalone_checkpoint(tmp_path / "standalone", tiny_digits)
    with pytest.raises(ValueError, match="not by OPANAS super-net training"):
        ScorerPool(standalone)
    with pytest.raises(FileNotFoundError, match="is not a raynas checkpoint"):
        ScorerPool(tmp_path)


@pytest.fixture(scope="module")
def pool(ray_session, checkpoint: Path):
    pool = ScorerPool(checkpoint, num_actors=2)
    yield pool
    pool.shutdown()


def actor_pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda _: os.getpid()))


def test_pool_scores_on_both_actors_at_once(pool, scorers) -> None:
    """Two clients, two candidates each: both actors are leased at once, results match the plain scorer."""
    work = {0: [HEAVY, LIGHT], 1: [SAMPLED, HEAVY]}
    results: dict[int, list[dict]] = {0: [], 1: []}

    def client(i: int) -> None:
        for arch in work[i]:
            results[i].append(pool.score(SPACE.to_config(arch)))

    threads = [threading.Thread(target=client, args=(i,)) for i in work]
    for thread in threads:
        thread.start()
    both_leased = False
    while any(thread.is_alive() for thread in threads):
        both_leased = both_leased or pool.free_count() == 0
        time.sleep(0.005)
    assert both_leased, "the two clients never held both actors at the same time"
    for i, archs in work.items():
        for arch, result in zip(archs, results[i], strict=True):
            assert same_metrics(result, scorers[True].score(SPACE.to_config(arch)))
    assert pool.free_count() == 2  # both actors returned to the pool


def test_killing_scorer_actors_mid_search_loses_no_trial(pool, tmp_path: Path) -> None:
    pids_before = [actor_pid(actor) for actor in pool.actors]
    killed = threading.Event()
    stop = threading.Event()

    def kill_at_the_first_lease() -> None:
        while not stop.is_set():
            if pool.free_count() < len(pool.actors):  # a trial holds an actor: its call is in flight
                time.sleep(0.05)
                for actor in pool.actors:  # both, so the leased one is surely among them
                    ray.kill(actor, no_restart=False)
                killed.set()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_at_the_first_lease, daemon=True)
    killer.start()
    searcher = EvolutionSearcher(SPACE, population_size=4, generations=1, top_k=2, seed=0)
    try:
        grid = run_search(searcher, pool.handles, "killed", tmp_path, max_concurrent=2, verbose=0)
    finally:
        stop.set()
        killer.join()
    assert killed.is_set(), "the scorer actors were never killed during the search"
    assert grid.num_errors == 0
    df = results_table(grid, "evolution")
    assert len(df) == searcher.total_evaluations == 8
    assert df["AP"].notna().all() and df["valid"].all() and (df["neck_params"] > 0).all()
    assert sorted(df["generation"]) == [0] * 4 + [1] * 4
    pids_after = [actor_pid(actor) for actor in pool.actors]
    assert all(a != b for a, b in zip(pids_before, pids_after))  # restarted, and the search went on
    assert pool.free_count() == len(pool.actors)
