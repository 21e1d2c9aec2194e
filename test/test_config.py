"""Training configuration: every shipped YAML loads, every bad key is named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from unim2_core.errors import ConfigError
from unim2_core.training.config import (
    TrainConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    parse_config,
    read_yaml,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
TRAIN_CONFIGS = sorted(CONFIG_DIR.glob("train_*.yaml"))


def test_every_dataset_has_a_shipped_config() -> None:
    names = {p.stem for p in TRAIN_CONFIGS}
    assert {"train_nyu", "train_mfnet", "train_mcubes", "train_robot"} <= names


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_loads_and_round_trips(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    assert config.modality_names[0] == "rgb"
    assert (
        parse_config(yaml.safe_load(yaml.safe_dump(config_to_dict(config), sort_keys=False)))
        == config
    )


def test_reference_hyperparameters_are_the_papers() -> None:
    nyu = load_config(CONFIG_DIR / "train_nyu.yaml")
    assert (nyu.backbone.name, nyu.model.code_dim, nyu.train.lr) == ("dinov3_vits16", 70, 5e-4)
    assert nyu.loss.modalities["depth"].shift.knn == 0.4318
    assert nyu.loss.modalities["rgb"].modality_weight == 0.1356
    mfnet = load_config(CONFIG_DIR / "train_mfnet.yaml")
    assert (mfnet.backbone.name, mfnet.model.code_dim, mfnet.train.lr) == (
        "dinov3_vitb16",
        90,
        7.88e-5,
    )
    assert mfnet.loss.modalities["thermal"].weight.knn == 0.9124
    mcubes = load_config(CONFIG_DIR / "train_mcubes.yaml")
    assert (mcubes.model.code_dim, mcubes.train.lr) == (320, 1.59e-5)
    assert mcubes.loss.modalities["aolp"].shift.self == 0.4694
    for config in (nyu, mfnet, mcubes):
        assert (config.train.batch_size, config.train.steps, config.train.probe_lr) == (
            32,
            3300,
            5e-3,
        )


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.lrr=1", r"unknown config key 'train\.lrr' \(did you mean 'lr'\?\)"),
        ("train.lr=abc", r"'train\.lr' must be a number, got 'abc'"),
        ("train.steps=1.5", r"'train\.steps' must be an integer, got 1\.5"),
        ("train.steps=0", r"'train\.steps' must be >= 1, got 0"),
        ("model.fusion=concat", r"'model\.fusion' must be one of 'conv', .*, got 'concat'"),
        ("model.linear_probe=1", r"'model\.linear_probe' must be true or false, got 1"),
        ("modalities.depth.kind=sonar", r"'modalities\.depth': unknown encoding kind 'sonar'"),
        ("loss.modalities.depth.shift.knn=x", r"loss\.modalities\.depth.*knn must be a number"),
        ("dataset.kind=kitti", r"'dataset\.kind' must be one of 'nyu'"),
        (
            "loss.knn_neighbours=40",
            r"'loss\.knn_neighbours' must be <= 'loss\.knn_keep' \(30\), got 40$",
        ),
        (
            "train.batch_size=1",
            r"'train\.batch_size' must be >= 2 while 'loss\.random_pairs' is 5, got 1$",
        ),
        ("train.lr=0", r"config key 'train\.lr' must be > 0, got 0$"),
        ("train.probe_lr=-1", r"config key 'train\.probe_lr' must be > 0, got -1$"),
        ("dataset.holdout_fraction=1", r"'dataset\.holdout_fraction' must be in \(0, 1\), got 1"),
        ("train.device=gpu", r"config key 'train\.device' must be one of cpu, cuda, .*'gpu'"),
        (
            "train.selection_split=train",
            r"'train\.selection_split' must be one of 'val', 'test', got 'train'",
        ),
        ("train.modality_dropout=1.0", r"'train\.modality_dropout' must be in \[0, 1\), got 1\.0"),
        ("train.modality_dropout=-0.1", r"'train\.modality_dropout' must be in \[0, 1\)"),
        ("model.n_clusters=abc", r"'model\.n_clusters' must be an integer or null, got 'abc'"),
        ("train=3", r"config key 'train' must be a mapping, got 3"),
        ("loss.knn_keep=0", r"config key 'loss\.knn_keep' must be >= 1, got 0"),
        ("eval.crop_size=-5", r"config key 'eval\.crop_size' must be >= 1, got -5"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(CONFIG_DIR / "train_nyu.yaml", [override])


def test_loss_settings_must_cover_exactly_the_modalities() -> None:
    data = read_yaml(CONFIG_DIR / "train_nyu.yaml")
    del data["loss"]["modalities"]["depth"]
    with pytest.raises(ConfigError, match=r"missing \['depth'\]"):
        parse_config(data)


def test_batch_size_one_is_allowed_without_random_pairs() -> None:
    config = load_config(
        CONFIG_DIR / "train_nyu.yaml", ["train.batch_size=1", "loss.random_pairs=0"]
    )
    assert (config.train.batch_size, config.loss.random_pairs) == (1, 0)


def test_a_config_changed_in_code_still_keeps_the_rules_between_keys() -> None:
    config = load_config(CONFIG_DIR / "train_nyu.yaml")
    with pytest.raises(ConfigError, match=r"'loss\.knn_neighbours' must be <= 'loss\.knn_keep'"):
        dataclasses.replace(config, loss=dataclasses.replace(config.loss, knn_keep=3))
    with pytest.raises(ConfigError, match=r"'loss\.modalities' must list exactly .*\['rgb'\]"):
        dataclasses.replace(config, modalities={"rgb": config.modalities["rgb"]})


def test_missing_required_section_is_named() -> None:
    data = read_yaml(CONFIG_DIR / "train_nyu.yaml")
    del data["dataset"]["root"]
    with pytest.raises(ConfigError, match=r"missing config key 'dataset\.root'"):
        parse_config(data)


def test_modalities_must_start_with_rgb() -> None:
    data = read_yaml(CONFIG_DIR / "train_nyu.yaml")
    data["modalities"] = {"depth": data["modalities"]["depth"], "rgb": data["modalities"]["rgb"]}
    with pytest.raises(ConfigError, match="must start with 'rgb'"):
        parse_config(data)


def test_overrides_parse_yaml_values_and_create_sections() -> None:
    data = apply_overrides({"train": {"steps": 5}}, ["train.steps=7", "dataset.options.x=[1, 2]"])
    assert data == {"train": {"steps": 7}, "dataset": {"options": {"x": [1, 2]}}}
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides({}, ["train.steps"])


def test_unreadable_or_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config .*nope\.yaml"):
        read_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml. is not valid YAML"):
        read_yaml(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        read_yaml(scalar)


def test_modality_dropout_is_off_by_default_and_needs_an_auxiliary_modality() -> None:
    assert load_config(CONFIG_DIR / "train_nyu.yaml").train.modality_dropout == 0.0
    data = read_yaml(CONFIG_DIR / "train_nyu.yaml")
    data["modalities"] = {"rgb": data["modalities"]["rgb"]}
    data["loss"]["modalities"] = {"rgb": data["loss"]["modalities"]["rgb"]}
    data.setdefault("train", {})["modality_dropout"] = 0.3
    with pytest.raises(
        ConfigError,
        match=r"'train\.modality_dropout' must be 0 when 'modalities' holds no auxiliary "
        r"modality to drop \(\['rgb'\]\), got 0\.3$",
    ):
        parse_config(data)


def test_optional_keys_take_null_and_floats_take_integers() -> None:
    config = load_config(
        CONFIG_DIR / "train_nyu.yaml", ["model.n_clusters=null", "train.grad_clip=2", "train.lr=1"]
    )
    assert config.model.n_clusters is None
    assert config.train.grad_clip == 2.0 and isinstance(config.train.grad_clip, float)
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


def test_paper_configs_keep_the_probe_and_the_robot_config_fits_kmeans() -> None:
    for name in ("train_nyu", "train_mfnet", "train_mcubes"):
        assert load_config(CONFIG_DIR / f"{name}.yaml").model.cluster_fit == "probe"
    assert load_config(CONFIG_DIR / "train_robot.yaml").model.cluster_fit == "kmeans"
