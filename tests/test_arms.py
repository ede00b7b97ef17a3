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
