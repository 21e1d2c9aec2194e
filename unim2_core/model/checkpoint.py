"""The checkpoint bundle: one file holding everything the node needs besides backbone weights.

The file is a plain dictionary of strings, numbers, lists and tensors, readable with
``torch.load(path, weights_only=True)``; files that would need to unpickle code are refused.
Backbone weights are not inside (they are licensed separately): the bundle records the backbone's
identity, including a hash of the weights it was trained with, and loading it next to other
weights is an error that says which field differs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from unim2_core.atomic import atomic_output
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.preprocess import PreprocessConfig
from unim2_core.errors import BackboneError, CheckpointError, ConfigError
from unim2_core.model.backbone import BackboneIdentity
from unim2_core.model.heads import HeadsConfig, UniM2Heads
from unim2_core.torch_files import load_torch_file

FORMAT_NAME = "unim2-checkpoint"
FORMAT_VERSION = 1
UNIM2_VERSION = "0.1.0"


@dataclass(frozen=True)
class ClassMapping:
    """Hungarian cluster -> class assignment found on labelled data, with display metadata.

    Attributes:
        cluster_to_class: For each cluster id, its class id, or -1 when unmatched.
        class_names: Name of each class id.
        palette: RGB colour of each class id, [n_classes, 3] uint8.
    """

    cluster_to_class: tuple[int, ...]
    class_names: tuple[str, ...]
    palette: np.ndarray

    def __post_init__(self) -> None:
        n_classes = len(self.class_names)
        if self.palette.shape != (n_classes, 3):
            raise ConfigError(
                f"palette must be [{n_classes}, 3] for {n_classes} classes, "
                f"got {list(self.palette.shape)}"
            )
        bad = [c for c in self.cluster_to_class if not -1 <= c < n_classes]
        if bad:
            raise ConfigError(f"cluster_to_class holds ids outside [-1, {n_classes}): {bad}")

    def to_dict(self) -> dict[str, object]:
        """Plain-type form stored in the checkpoint."""
        return {
            "cluster_to_class": list(self.cluster_to_class),
            "class_names": list(self.class_names),
            "palette": self.palette.astype(np.uint8).tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassMapping:
        """Parse ``to_dict`` output (ConfigError on a bad or missing key)."""
        try:
            return cls(
                cluster_to_class=tuple(int(c) for c in data["cluster_to_class"]),
                class_names=tuple(str(n) for n in data["class_names"]),
                palette=np.asarray(data["palette"], dtype=np.uint8).reshape(-1, 3),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"class_mapping: {err!r}") from err


@dataclass
class Bundle:
    """A trained UniM2 model, ready to be saved or served.

    Attributes:
        backbone: Identity of the frozen backbone the heads were trained on.
        encodings: Modality name -> encoding, in model order (``rgb`` first).
        preprocess: Inference resolution and resampling.
        heads_config: Shape and options of the heads.
        heads_state: The heads' state dict (modality nets, fusion, head, harmonisers, centroids,
            linear probe).
        class_mapping: Cluster -> class assignment, when labels were available.
        training: The training configuration, as plain types.
        metrics: Final metrics, as plain types.
    """

    backbone: BackboneIdentity
    encodings: dict[str, ModalityEncoding]
    preprocess: PreprocessConfig
    heads_config: HeadsConfig
    heads_state: dict[str, Tensor]
    class_mapping: ClassMapping | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names in model order."""
        return tuple(self.encodings)

    @property
    def centroids(self) -> Tensor:
        """The K cluster centroids, [K, D]."""
        return self.heads_state["cluster_probe.centroids"]

    @classmethod
    def from_heads(
        cls,
        heads: UniM2Heads,
        *,
        backbone: BackboneIdentity,
        encodings: Mapping[str, ModalityEncoding],
        preprocess: PreprocessConfig,
        **extra: Any,
    ) -> Bundle:
        """Bundle trained heads (weights copied to CPU) with the settings they were trained in."""
        state = {k: v.detach().cpu().clone() for k, v in heads.state_dict().items()}
        return cls(
            backbone=backbone,
            encodings=dict(encodings),
            preprocess=preprocess,
            heads_config=heads.config,
            heads_state=state,
            **extra,
        )

    def build_heads(self) -> UniM2Heads:
        """Instantiate the heads and load their weights strictly (eval mode, CPU).

        Raises:
            CheckpointError: the stored weights do not fit the stored configuration.
        """
        heads = UniM2Heads(self.heads_config)
        expected = heads.state_dict()
        missing = sorted(set(expected) - set(self.heads_state))
        unexpected = sorted(set(self.heads_state) - set(expected))
        misshaped = [
            f"{k}: stored {list(v.shape)}, expected {list(expected[k].shape)}"
            for k, v in self.heads_state.items()
            if k in expected and v.shape != expected[k].shape
        ]
        if missing or unexpected or misshaped:
            raise CheckpointError(
                "head weights do not match the head configuration: "
                f"missing {missing}, unexpected {unexpected}, mis-shaped {misshaped}"
            )
        heads.load_state_dict(self.heads_state, strict=True)
        return heads.eval()

    def check_compatible(
        self,
        *,
        backbone: BackboneIdentity | None = None,
        modalities: Sequence[str] | None = None,
    ) -> None:
        """Refuse a backbone or modality list other than the ones this bundle was trained with.

        Raises:
            CheckpointError: naming the differing field and both values.
        """
        if backbone is not None:
            for name in BackboneIdentity._fields:
                stored, given = getattr(self.backbone, name), getattr(backbone, name)
                if stored != given:
                    raise CheckpointError(
                        f"backbone mismatch in {name}: the checkpoint was trained with "
                        f"{stored!r}, the loaded backbone has {given!r}"
                    )
        if modalities is not None and tuple(modalities) != self.modalities:
            raise CheckpointError(
                f"modality mismatch: the checkpoint needs {list(self.modalities)}, "
                f"got {list(modalities)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The on-disk dictionary (plain types and tensors only)."""
        data = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "unim2_version": UNIM2_VERSION,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "backbone": self.backbone.to_dict(),
            "modalities": [
                {"name": name, "encoding": enc.to_dict()} for name, enc in self.encodings.items()
            ],
            "preprocess": self.preprocess.to_dict(),
            "heads": {"config": self.heads_config.to_dict(), "state_dict": self.heads_state},
            "class_mapping": None if self.class_mapping is None else self.class_mapping.to_dict(),
            "training": self.training,
            "metrics": self.metrics,
        }
        _check_plain(data, "checkpoint")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "checkpoint") -> Bundle:
        """Validate and parse the on-disk dictionary.

        Raises:
            CheckpointError: wrong format or version, a missing key, or an invalid value; the
                message names ``source`` and the key.
        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{source} is not a unim2 checkpoint (no format {FORMAT_NAME!r})")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{source} has format version {version!r}; this unim2 reads version "
                f"{FORMAT_VERSION}"
            )
        try:
            backbone = BackboneIdentity.from_dict(data["backbone"])
            encodings = {}
            for index, entry in enumerate(data["modalities"]):
                name = str(entry["name"])
                encodings[name] = ModalityEncoding.from_dict(
                    entry["encoding"], where=f"modalities[{index}].encoding"
                )
            heads_config = HeadsConfig.from_dict(data["heads"]["config"], where="heads.config")
            state = dict(data["heads"]["state_dict"])
            if not all(isinstance(v, Tensor) for v in state.values()):
                raise ConfigError("heads.state_dict must map names to tensors")
            mapping = data.get("class_mapping")
            bundle = cls(
                backbone=backbone,
                encodings=encodings,
                preprocess=PreprocessConfig.from_dict(data["preprocess"]),
                heads_config=heads_config,
                heads_state=state,
                class_mapping=None if mapping is None else ClassMapping.from_dict(mapping),
                training=dict(data.get("training") or {}),
                metrics=dict(data.get("metrics") or {}),
            )
        except KeyError as err:
            raise CheckpointError(f"{source} lacks key {err}") from err
        except (ConfigError, BackboneError, TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: {err}") from err
        if bundle.modalities != heads_config.modalities:
            raise CheckpointError(
                f"{source}: modality list {list(bundle.modalities)} differs from the heads' "
                f"{list(heads_config.modalities)}"
            )
        mapped = bundle.class_mapping
        if mapped is not None and len(mapped.cluster_to_class) != heads_config.n_clusters:
            raise CheckpointError(
                f"{source}: class_mapping covers {len(mapped.cluster_to_class)} "
                f"clusters, the model has {heads_config.n_clusters}"
            )
        return bundle


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` could not read back."""
    if value is None or isinstance(value, (str, bool, int, float, Tensor)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{where}: key {key!r} is not a string")
            _check_plain(item, f"{where}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise CheckpointError(f"{where}: {type(value).__name__} cannot be stored in a checkpoint")


def save_bundle(bundle: Bundle, path: str | Path) -> Path:
    """Write the bundle atomically (temporary file + rename) and return its path."""
    path = Path(path)
    data = bundle.to_dict()
    try:
        with atomic_output(path) as stream:
            torch.save(data, stream)
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {str(path)!r}: {err}") from err
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate a checkpoint bundle without executing any pickled code.

    Raises:
        CheckpointError: the file is missing, unreadable, needs code to unpickle, or does not
            hold a valid bundle of this format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {str(path)!r}")
    data = load_torch_file(path, what="a unim2 checkpoint", error=CheckpointError)
    return Bundle.from_dict(cast(Mapping[str, Any], data), source=repr(str(path)))
