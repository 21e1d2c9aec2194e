"""The ~/label_info JSON document: exact layout, round trip, refusals."""

from __future__ import annotations

import json

import pytest

from unim2_core.errors import ConfigError
from unim2_core.model.backbone import BackboneIdentity
from unim2_core.runtime.segmenter import LabelInfo
from unim2_ros.label_info import label_info_json, parse_label_info

IDENTITY = BackboneIdentity("dinov2_vits14", 14, 384, "block:10", "ab" * 32)
LABELS = (LabelInfo(0, "wall", (1, 2, 3)), LabelInfo(1, "cluster_4", (250, 0, 9)))


def _document() -> str:
    return label_info_json(
        LABELS,
        checkpoint="/models/nyu.pt",
        backbone=IDENTITY,
        modalities=("rgb", "depth"),
        n_clusters=5,
        label_source="classes",
    )


def test_document_has_the_documented_layout() -> None:
    assert json.loads(_document()) == {
        "labels": [
            {"id": 0, "name": "wall", "color": [1, 2, 3]},
            {"id": 1, "name": "cluster_4", "color": [250, 0, 9]},
        ],
        "model": {
            "checkpoint": "/models/nyu.pt",
            "backbone": {
                "name": "dinov2_vits14",
                "patch_size": 14,
                "channels": 384,
                "feature_layer": "block:10",
                "weights_sha256": "ab" * 32,
            },
            "modalities": ["rgb", "depth"],
            "n_clusters": 5,
            "label_source": "classes",
        },
        "missing_modalities": [],
    }


def test_document_round_trips() -> None:
    parsed = parse_label_info(_document())
    assert parsed.labels == LABELS
    assert parsed.checkpoint == "/models/nyu.pt"
    assert BackboneIdentity.from_dict(parsed.backbone) == IDENTITY
    assert parsed.modalities == ("rgb", "depth")
    assert (parsed.n_clusters, parsed.label_source) == (5, "classes")


def test_label_ids_must_be_consecutive() -> None:
    with pytest.raises(ValueError, match=r"label ids must be 0..1 in order, got \[0, 2\]"):
        label_info_json(
            (LABELS[0], LabelInfo(2, "x", (0, 0, 0))),
            checkpoint="c",
            backbone=IDENTITY,
            modalities=("rgb",),
            n_clusters=2,
            label_source="clusters",
        )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", r"label_info document is invalid: JSONDecodeError"),
        ('{"labels": []}', r"label_info document is invalid: KeyError\('model'\)"),
        (
            _document().replace('"classes"', '"pixels"'),
            r"label_source must be 'classes' or 'clusters'",
        ),
        (_document().replace('"id":1', '"id":3'), r"label ids are not 0..N-1"),
        (_document().replace('"color":[1,2,3]', '"color":[1,2]'), r"not enough values"),
    ],
)
def test_invalid_documents_are_refused(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_label_info(text)


def test_missing_modalities_round_trip_and_default_to_none() -> None:
    text = label_info_json(
        LABELS,
        checkpoint="/m.pt",
        backbone=IDENTITY,
        modalities=("rgb", "depth"),
        n_clusters=3,
        label_source="clusters",
        missing_modalities=["depth"],
    )
    assert json.loads(text)["missing_modalities"] == ["depth"]
    assert parse_label_info(text).missing_modalities == ("depth",)
    older = json.loads(text)
    del older["missing_modalities"]
    assert parse_label_info(json.dumps(older)).missing_modalities == ()
