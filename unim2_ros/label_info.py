"""The JSON document the node latches on ``~/label_info``: what each label id means.

Published once as a ``std_msgs/String`` with transient-local durability, so late subscribers
(RViz plugins, the replay evaluator, loggers) get it too::

    {
      "labels": [{"id": 0, "name": "wall", "color": [r, g, b]}, ...],
      "model": {
        "checkpoint": "/path/to/model.pt",
        "backbone": {"name": ..., "patch_size": ..., "channels": ..., "feature_layer": ...,
                     "weights_sha256": ...},
        "modalities": ["rgb", "depth"],
        "n_clusters": 27,
        "label_source": "classes"
      },
      "missing_modalities": []
    }

``labels`` lists every id the ``~/labels`` image can hold, in id order. ``label_source`` is
``classes`` when ids are classes of the checkpoint's cluster -> class mapping (unmatched
clusters get extra ids named ``cluster_<k>``), and ``clusters`` when ids are raw cluster ids.
``missing_modalities`` lists the auxiliary modalities the labels are being computed without,
because their stream was lost (empty: full fusion); the node publishes the document again
whenever that list changes. Importable without rclpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from unim2_core.errors import ConfigError
from unim2_core.model.backbone import BackboneIdentity
from unim2_core.runtime.segmenter import LabelInfo

LabelSource = Literal["classes", "clusters"]


class LabelInfoDocument(NamedTuple):
    """A parsed ``~/label_info`` message."""

    labels: tuple[LabelInfo, ...]
    checkpoint: str
    backbone: dict[str, Any]
    modalities: tuple[str, ...]
    n_clusters: int
    label_source: LabelSource
    missing_modalities: tuple[str, ...] = ()


def label_info_json(
    labels: Sequence[LabelInfo],
    *,
    checkpoint: str,
    backbone: BackboneIdentity,
    modalities: Sequence[str],
    n_clusters: int,
    label_source: LabelSource,
    missing_modalities: Sequence[str] = (),
) -> str:
    """The document above, as compact JSON text.

    Raises:
        ValueError: label ids are not exactly ``0 .. len(labels) - 1`` in order.
    """
    ids = [label.id for label in labels]
    if ids != list(range(len(labels))):
        raise ValueError(f"label ids must be 0..{len(labels) - 1} in order, got {ids}")
    document = {
        "labels": [
            {"id": label.id, "name": label.name, "color": [int(c) for c in label.color]}
            for label in labels
        ],
        "model": {
            "checkpoint": checkpoint,
            "backbone": backbone.to_dict(),
            "modalities": list(modalities),
            "n_clusters": n_clusters,
            "label_source": label_source,
        },
        "missing_modalities": list(missing_modalities),
    }
    return json.dumps(document, separators=(",", ":"))


def parse_label_info(text: str) -> LabelInfoDocument:
    """Reads a ``~/label_info`` document.

    Raises:
        ConfigError: not JSON, or a key is missing or holds a value of the wrong kind.
    """
    try:
        document = json.loads(text)
        model = document["model"]
        labels = tuple(_label(entry) for entry in document["labels"])
        source = model["label_source"]
        if source not in ("classes", "clusters"):
            raise ValueError(f"label_source must be 'classes' or 'clusters', got {source!r}")
        if not isinstance(model["backbone"], Mapping):
            raise TypeError("model.backbone must be an object")
        parsed = LabelInfoDocument(
            labels=labels,
            checkpoint=str(model["checkpoint"]),
            backbone=dict(model["backbone"]),
            modalities=tuple(str(m) for m in model["modalities"]),
            n_clusters=int(model["n_clusters"]),
            label_source=source,
            missing_modalities=tuple(str(m) for m in document.get("missing_modalities", ())),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"label_info document is invalid: {err!r}") from err
    if [label.id for label in parsed.labels] != list(range(len(parsed.labels))):
        raise ConfigError("label_info document: label ids are not 0..N-1 in order")
    return parsed


def _label(entry: Mapping[str, Any]) -> LabelInfo:
    red, green, blue = (int(c) for c in entry["color"])
    return LabelInfo(int(entry["id"]), str(entry["name"]), (red, green, blue))
