"""raynas.registry: the names that checkpoints and Ray Train runs store for their classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from raynas.checkpoints import config_from_state, load_state, write_checkpoint
from raynas.registry import CONFIGS, TASKS, canonical, name_of, resolve, same_entry
from raynas.training.config import SupernetConfig, TrainConfig


def test_every_name_resolves_to_the_class_its_dotted_path_names() -> None:
    for table in (CONFIGS, TASKS):
        for name, path in table.items():
            cls = resolve(table, name)
            assert f"{cls.__module__}.{cls.__qualname__}" == path
            assert resolve(table, path) is cls and name_of(table, cls) == name


def test_each_task_trains_a_registered_config() -> None:
    for name in TASKS:
        assert name_of(CONFIGS, resolve(TASKS, name).config_class) in CONFIGS


def test_a_users_own_class_is_its_dotted_path_and_unknown_names_are_refused() -> None:
    assert name_of(CONFIGS, dict) == "builtins.dict" and resolve(CONFIGS, "builtins.dict") is dict
    with pytest.raises(ValueError, match="names no importable class"):
        resolve(TASKS, "raynas.training.standalone.Nope")
    with pytest.raises(ValueError, match="not one of"):
        canonical(TASKS, "nope")
    assert same_entry(TASKS, "supernet", "raynas.training.supernet.SupernetTask")
    assert not same_entry(TASKS, "supernet", "standalone")
    assert not same_entry(TASKS, None, "standalone") and not same_entry(TASKS, "other", "nope")


def test_a_checkpoint_stores_names_and_one_with_dotted_paths_still_loads(tmp_path: Path) -> None:
    cfg = SupernetConfig()
    folder = write_checkpoint(tmp_path / "new", cfg, "raynas.training.supernet.SupernetTask", {}, 11, 1, 1)
    state = load_state(folder)
    assert (state["task"], state["config_class"]) == ("supernet", "supernet")
    assert config_from_state(state) == cfg
    older = {**state, "task": "raynas.training.supernet.SupernetTask",
             "config_class": "raynas.training.config.SupernetConfig"}  # fmt: skip
    assert config_from_state(older) == cfg
    assert isinstance(config_from_state({**state, "config_class": "train", "config": {}}), TrainConfig)
