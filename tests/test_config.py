"""Strict YAML loading of the training configs: every mistake is a ConfigError naming the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from raynas.config import ConfigError, apply_yaml, dump_yaml, load_yaml, with_overrides
from raynas.data.config import DataConfig
from raynas.search.opanas_config import OPANASSearchConfig
from raynas.studies.recipes import SMOKE_BUDGET
from raynas.training.config import (
    DartsConfig,
    OPANASDartsConfig,
    OptimConfig,
    SupernetConfig,
    TrainConfig,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"
#: every config class a YAML in experiments/configs may describe, most specific first
CONFIG_CLASSES = (SupernetConfig, DartsConfig, OPANASDartsConfig, OPANASSearchConfig, TrainConfig)


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_yaml_fills_defaults_and_converts_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "model: {kind: retinanet, out_channels: 32}\n"
        "optim: {lr: 1, milestones: [3, 4], grad_clip: null}\n"
        "run: {num_workers: 2}\n",
    )
    cfg = load_yaml(TrainConfig, path)
    assert cfg.model.kind == "retinanet" and cfg.model.out_channels == 32
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)  # an int is accepted for a float
    assert cfg.optim.milestones == [3, 4] and cfg.optim.grad_clip is None
    assert cfg.run.num_workers == 2 and cfg.data.root == "data/digits"  # untouched sections keep defaults


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    # PyYAML alone reads 1e-4 as the string "1e-4"
    cfg = load_yaml(
        SupernetConfig, write(tmp_path, "opanas: {mu: 1e-4}\noptim: {lr: 2E-2, weight_decay: 5e-5}\n")
    )
    assert (cfg.opanas.mu, cfg.optim.lr, cfg.optim.weight_decay) == (1e-4, 2e-2, 5e-5)


def test_a_cloud_storage_uri_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run.storage_path 's3://bucket/runs' is a URI.*shared-filesystem"):
        load_yaml(TrainConfig, write(tmp_path, "run: {storage_path: s3://bucket/runs}\n"))
    with pytest.raises(ConfigError, match="is a URI"):
        load_yaml(OPANASSearchConfig, write(tmp_path, "storage_path: gs://bucket/runs\n"))


def test_round_trip_through_dump_yaml(tmp_path: Path) -> None:
    cfg = SupernetConfig()
    cfg.opanas.k = 2
    cfg.optim.epochs = 3
    again = load_yaml(SupernetConfig, write(tmp_path, dump_yaml(cfg)))
    assert again == cfg
    assert again.neck == {
        "type": "opanas_supernet",
        "num_nodes": 5,
        "deformable": False,
        "norm": None,
        "gamma": True,
    }


def test_unknown_key_names_key_section_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lr: 0.01\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(TrainConfig, path)
    message = str(info.value)
    assert str(path) in message
    assert "learning_rate" in message and ".optim" in message
    assert "known keys" in message and "'lr'" in message  # says what would have been valid


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "opanas: {k: 4}\n")  # a super-net section in a standalone config
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['opanas'\] for TrainConfig"):
        load_yaml(TrainConfig, path)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("optim: {epochs: twelve}\n", "optim.epochs", "expected an integer"),
        ("optim: {epochs: 1.5}\n", "optim.epochs", "expected an integer"),
        ("optim: {lr: fast}\n", "optim.lr", "expected a number"),
        ("run: {use_gpu: 1}\n", "run.use_gpu", "expected bool"),
        ("run: {num_workers: true}\n", "run.num_workers", "expected an integer"),
        (
            "model: {kind: yolo}\n",
            "model.kind",
            "must be one of ['fcos', 'retinanet', 'faster_rcnn', 'cascade_rcnn', 'mask_rcnn']",
        ),
        ("optim: {milestones: 8}\n", "optim.milestones", "expected a list"),
        ("optim: {milestones: [8, soon]}\n", "optim.milestones[1]", "expected an integer"),
        ("optim: {grad_clip: off}\n", "optim.grad_clip", "expected float | NoneType"),
        ("data: 3\n", "data", "expected a mapping of DataConfig fields"),
    ],
)
def test_wrong_type_names_the_key(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_yaml(TrainConfig, path)
    message = str(info.value)
    assert f"{path}.{key}:" in message, message
    assert expected in message, message


def test_supernet_opanas_section_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "opanas: {k: 4, mu: 1.0e-4, reduce: median}\n")
    with pytest.raises(ConfigError, match=r"opanas\.reduce: must be one of \['mean', 'sum'\]"):
        load_yaml(SupernetConfig, path)


def test_supernet_rejects_a_neck_key(tmp_path: Path) -> None:
    path = write(tmp_path, "neck: {type: fpn}\n")
    with pytest.raises(ConfigError, match="derives `neck` from `opanas`; remove the `neck` key") as info:
        load_yaml(SupernetConfig, path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "train.yaml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_yaml(TrainConfig, path)
    assert str(path) in str(info.value)


def test_malformed_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lr: [0.01\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_yaml(TrainConfig, path)
    assert str(path) in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- lr: 0.01\n")
    with pytest.raises(ConfigError, match="expected a mapping of TrainConfig fields") as info:
        load_yaml(TrainConfig, path)
    assert str(path) in str(info.value)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_yaml(TrainConfig, write(tmp_path, "# nothing set\n")) == TrainConfig()


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)  # callers that catch ValueError see config errors too


EXPERIMENT_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_experiment_configs_exist() -> None:
    names = {path.name for path in EXPERIMENT_CONFIGS}
    assert {"baseline_fcos_r18.yaml", "supernet_smoke.yaml", "supernet_paper.yaml"} <= names


@pytest.mark.parametrize("path", EXPERIMENT_CONFIGS, ids=lambda p: p.name)
def test_every_experiment_config_loads(path: Path) -> None:
    """Each YAML loads strictly: supernet_*, baseline_*, fad_* into their class, others into any class."""
    expected = {
        "supernet_": SupernetConfig,
        "baseline_": TrainConfig,
        "fad_": DartsConfig,
        "opanas_darts_": OPANASDartsConfig,
    }
    for prefix, cls in expected.items():
        if path.name.startswith(prefix):
            load_yaml(cls, path)
            return
    errors = []
    for cls in CONFIG_CLASSES:
        try:
            load_yaml(cls, path)
            return
        except ConfigError as err:
            errors.append(f"{cls.__name__}: {err}")
    pytest.fail(f"{path.name} loads as none of the config classes:\n" + "\n".join(errors))


def test_paper_supernet_config_has_the_paper_settings() -> None:
    """OPANAS Sec. 4.1: SGD lr 0.02, momentum 0.9, wd 1e-4, 12 epochs (decay at 8, 11), batch 16,
    N=5, K=4, gamma with mu=1e-4, deformable convs, Faster R-CNN ResNet-50."""
    cfg = load_yaml(SupernetConfig, CONFIG_DIR / "supernet_paper.yaml")
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.02, 0.9, 1e-4)
    assert cfg.optim.epochs == 12 and cfg.optim.milestones == [8, 11]
    assert cfg.data.batch_size * cfg.run.num_workers == 16
    assert (cfg.opanas.num_nodes, cfg.opanas.k, cfg.opanas.mu, cfg.opanas.deformable) == (5, 4, 1e-4, True)
    assert (cfg.model.kind, cfg.model.backbone) == ("faster_rcnn", "resnet50")


def test_overrides_replace_only_the_keys_they_name(tmp_path: Path) -> None:
    base = TrainConfig(data=DataConfig(root="d", num_train=1000, batch_size=4), optim=OptimConfig(lr=0.05))
    path = write(tmp_path, "data:\n  num_train: 16\noptim:\n  milestones: []\n")
    merged = apply_yaml(base, path)
    assert (merged.data.num_train, merged.data.root, merged.data.batch_size) == (16, "d", 4)
    assert (merged.optim.milestones, merged.optim.lr) == ([], 0.05)
    assert base.data.num_train == 1000  # the recipe itself is left as it was


def test_overrides_are_checked_like_a_config_file(tmp_path: Path) -> None:
    base = TrainConfig()
    with pytest.raises(ConfigError, match=r"budget\.yaml\.data: unknown key\(s\) \['num_trian'\]"):
        apply_yaml(base, write(tmp_path, "data:\n  num_trian: 16\n", "budget.yaml"))
    with pytest.raises(ConfigError, match=r"where\.optim\.epochs"):
        with_overrides(base, {"optim": {"epochs": "two"}}, where="where")


@pytest.mark.parametrize("cls", [TrainConfig, DartsConfig, SupernetConfig])
def test_the_smoke_budget_fits_every_experiment_config(cls: type) -> None:
    """One smoke size for every experiment's --smoke (raynas/studies/smoke_budget.yaml)."""
    smoke = apply_yaml(cls(), SMOKE_BUDGET)
    assert (smoke.data.num_train, smoke.data.image_size, smoke.model.min_size, smoke.optim.epochs) == (
        16,
        96,
        96,
        1,
    )
