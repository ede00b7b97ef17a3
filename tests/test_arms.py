"""raynas/jobs/arms.py: what a kept row or a kept test score is reused under."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from raynas.checkpoints import STATE_FILE
from raynas.jobs.arms import _checkpoint_identity, _scores, recipe_key, standalone_recipe
from raynas.jobs.main_job import smoke_supernet_config


def test_a_recipe_key_ignores_where_a_run_lives_and_nothing_else(tmp_path: Path) -> None:
    cfg = standalone_recipe(smoke_supernet_config("data/d", "runs/a"), epochs=2)
    moved = replace(cfg, run=replace(cfg.run, storage_path="elsewhere", name="other", address="auto"))
    assert recipe_key(moved) == recipe_key(cfg)
    assert recipe_key(replace(cfg, data=replace(cfg.data, root="data/other"))) != recipe_key(cfg)
    assert recipe_key(replace(cfg, optim=replace(cfg.optim, lr=0.02))) != recipe_key(cfg)
    assert recipe_key(replace(cfg, run=replace(cfg.run, num_workers=cfg.run.num_workers + 1))) != recipe_key(
        cfg
    )


def test_a_kept_test_score_is_reused_only_for_the_checkpoint_it_scored(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint_000003"
    checkpoint.mkdir()
    (checkpoint / STATE_FILE).write_bytes(b"state")
    kept = tmp_path / "test_metrics.json"
    kept.write_text("{}")
    identity = _checkpoint_identity(checkpoint)
    metrics = {"AP": 0.3}
    assert _scores({"scored": identity, "metrics": metrics}, identity, kept, checkpoint)
    assert not _scores({"scored": identity, "metrics": None}, identity, kept, checkpoint)  # damaged
    assert not _scores(["not", "a", "record"], identity, kept, checkpoint)
    retrained = {**identity, "mtime_ns": identity["mtime_ns"] + 1}  # same folder name, new state file
    assert not _scores({"scored": identity, "metrics": metrics}, retrained, kept, checkpoint)
    legacy = {"checkpoint": checkpoint.name, "metrics": metrics}  # kept before identities were recorded
    state_time = (checkpoint / STATE_FILE).stat().st_mtime_ns
    os.utime(kept, ns=(state_time + 10**9, state_time + 10**9))
    assert _scores(legacy, identity, kept, checkpoint)
    os.utime(kept, ns=(state_time - 10**9, state_time - 10**9))  # written before this checkpoint
    assert not _scores(legacy, identity, kept, checkpoint)
    assert not _scores({**legacy, "checkpoint": "checkpoint_000001"}, identity, kept, checkpoint)
    assert json.loads(kept.read_text()) == {}


def test_the_arms_loop_goes_seed_by_seed_reuses_kept_rows_and_writes_after_every_run(tmp_path: Path) -> None:
    """train_arms, the one arms x seeds loop of every table: seed-major order (a stop leaves every arm at
    some seeds), a kept row is not trained again, ``on_row`` sees the rows after each run it trained."""
    from raynas.jobs.arms import Arm, ReportedRun, arm_config, train_arms

    recipe = standalone_recipe(smoke_supernet_config("data/d", "runs/a"), epochs=1)
    arms = [Arm("FPN", "fpn", None, 16), Arm("lateral", "lateral", {"type": "x"}, 16)]
    trained: list[str] = []

    def train(cfg) -> ReportedRun:
        trained.append(cfg.run.name)
        return ReportedRun({"AP": 0.1 * len(trained)}, "test", True, tmp_path)

    written: list[int] = []
    kept_fpn = {"arm": "FPN", "seed": 1, "AP": 0.5}
    rows, count = train_arms(
        arms, 2, lambda arm, seed: arm_config(recipe, arm, seed, tmp_path, workers=1),
        lambda arm, seed, cfg, reported: {"arm": arm.label, "seed": seed, "AP": reported.metrics["AP"]},
        lambda rows, n: written.append(len(rows)),
        lambda arm, seed, cfg: kept_fpn if (arm.slug, seed) == ("fpn", 1) else None,
        train=train,
    )  # fmt: skip
    assert trained == ["fpn_seed0", "lateral_seed0", "lateral_seed1"] and count == 3
    assert [(row["arm"], row["seed"]) for row in rows] == [
        ("FPN", 0),
        ("lateral", 0),
        ("FPN", 1),
        ("lateral", 1),
    ]
    assert rows[2]["AP"] == 0.5 and written == [1, 2, 4]
