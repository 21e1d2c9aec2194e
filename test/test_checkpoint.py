"""Checkpoint bundle: one weights_only-loadable file, refused with a reason when it does not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_bundle

from unim2_core.data.encoding import ModalityEncoding
from unim2_core.errors import CheckpointError, ConfigError
from unim2_core.model.backbone import Backbone
from unim2_core.model.checkpoint import (
    FORMAT_VERSION,
    Bundle,
    ClassMapping,
    load_bundle,
    save_bundle,
)


class _CodeOnLoad:
    """Unpickling this calls a function: exactly what weights_only loading must refuse."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("code ran at load time",))


ENCODINGS = {
    "rgb": ModalityEncoding.default("rgb"),
    "depth": ModalityEncoding.default("depth"),
}


@pytest.fixture
def bundle(imgfocus_backbone: Backbone) -> Bundle:
    mapping = ClassMapping(
        cluster_to_class=(2, 0, -1, 1, 3),
        class_names=("floor", "wall", "table", "box"),
        palette=np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]], np.uint8),
    )
    result = make_bundle(imgfocus_backbone, ENCODINGS, class_mapping=mapping)
    result.training = {"train": {"steps": 3}, "note": None}
    result.metrics = {"selection": {"miou": 12.5}}
    return result


def test_bundle_round_trips_through_a_file(bundle: Bundle, tmp_path: Path) -> None:
    path = save_bundle(bundle, tmp_path / "model.unim2.pt")
    loaded = load_bundle(path)
    assert loaded.backbone == bundle.backbone
    assert loaded.encodings == bundle.encodings and loaded.modalities == ("rgb", "depth")
    assert loaded.heads_config == bundle.heads_config
    assert loaded.preprocess == bundle.preprocess
    assert loaded.training == bundle.training and loaded.metrics == bundle.metrics
    assert loaded.class_mapping is not None and bundle.class_mapping is not None
    assert loaded.class_mapping.cluster_to_class == (2, 0, -1, 1, 3)
    np.testing.assert_array_equal(loaded.class_mapping.palette, bundle.class_mapping.palette)
    for key, value in bundle.heads_state.items():
        torch.testing.assert_close(loaded.heads_state[key], value, rtol=0, atol=0)
    torch.testing.assert_close(loaded.centroids, bundle.heads_state["cluster_probe.centroids"])
    heads = loaded.build_heads()
    assert not heads.training


def test_bundle_file_is_plain_data_for_weights_only_loading(bundle: Bundle, tmp_path: Path) -> None:
    path = save_bundle(bundle, tmp_path / "m.pt")
    data = torch.load(path, weights_only=True)
    assert data["format"] == "unim2-checkpoint" and data["format_version"] == FORMAT_VERSION
    assert data["backbone"]["weights_sha256"] == bundle.backbone.weights_sha256
    assert "weights" not in data["backbone"], "backbone weights are licensed separately"
    assert data["modalities"][1] == {"name": "depth", "encoding": ENCODINGS["depth"].to_dict()}


def test_file_carrying_pickled_code_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    data = bundle.to_dict()
    data["training"] = _CodeOnLoad()
    path = tmp_path / "evil.pt"
    torch.save(data, path)
    with pytest.raises(
        CheckpointError,
        match=r"evil\.pt' is not a unim2 checkpoint: it holds pickled Python objects "
        r"\(first: [\w.]+\), which would run code on load; refused$",
    ) as info:
        load_bundle(path)
    assert "weights_only" not in str(info.value) and "\x1b" not in str(info.value)


def test_saving_non_plain_values_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    bundle.metrics = {"when": object()}
    with pytest.raises(
        CheckpointError, match=r"checkpoint\.metrics\.when: object cannot be stored"
    ):
        save_bundle(bundle, tmp_path / "m.pt")


@pytest.mark.parametrize(
    "field", ["name", "patch_size", "channels", "feature_layer", "weights_sha256"]
)
def test_mismatching_backbone_identity_names_the_field(bundle: Bundle, field: str) -> None:
    other = bundle.backbone._replace(
        **{field: "x" if isinstance(getattr(bundle.backbone, field), str) else 1}
    )
    with pytest.raises(
        CheckpointError, match=f"backbone mismatch in {field}: the checkpoint was trained with"
    ):
        bundle.check_compatible(backbone=other)
    bundle.check_compatible(backbone=bundle.backbone)


def test_mismatching_modality_list_is_named(bundle: Bundle) -> None:
    with pytest.raises(
        CheckpointError, match=r"needs \['rgb', 'depth'\], got \['rgb', 'thermal'\]"
    ):
        bundle.check_compatible(modalities=["rgb", "thermal"])


def test_other_format_version_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    data = bundle.to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    torch.save(data, tmp_path / "future.pt")
    with pytest.raises(
        CheckpointError, match=f"format version {FORMAT_VERSION + 1}; this unim2 reads"
    ):
        load_bundle(tmp_path / "future.pt")


def test_foreign_file_and_missing_keys_are_refused(bundle: Bundle, tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="is not a unim2 checkpoint"):
        load_bundle(tmp_path / "foreign.pt")
    data = bundle.to_dict()
    del data["preprocess"]
    torch.save(data, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="lacks key 'preprocess'"):
        load_bundle(tmp_path / "partial.pt")


def test_missing_and_corrupt_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nothing\.pt"):
        load_bundle(tmp_path / "nothing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(
        CheckpointError, match=r"corrupt\.pt' is not a unim2 checkpoint: it is a zip archive"
    ):
        load_bundle(tmp_path / "corrupt.pt")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"hello world\n", "it is a text file, not a torch.save file"),
        (b"model:\n  code_dim: 70\n", "it is a text file, not a torch.save file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "it is a PNG image, not a torch.save file"),
        (b"\x80\x02 legacy pickle, cut", r"torch cannot read it \(\w+\); it may be truncated"),
    ],
)
def test_files_that_are_not_checkpoints_get_one_reason(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    """Text, YAML, PNG or empty files renamed .pt: a reason, never torch's weights_only advice."""
    path = tmp_path / "model.unim2.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"'{path}' is not a unim2 checkpoint: {reason}"):
        load_bundle(path)


def test_a_torch_file_of_something_else_is_not_a_checkpoint(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt' is not a unim2 checkpoint \(no format"):
        load_bundle(tmp_path / "list.pt")


def test_head_weights_not_fitting_the_config_are_refused(bundle: Bundle, tmp_path: Path) -> None:
    data = bundle.to_dict()
    data["heads"]["state_dict"]["head.linear.weight"] = torch.zeros(3, 3, 1, 1)
    del data["heads"]["state_dict"]["head.linear.bias"]
    torch.save(data, tmp_path / "m.pt")
    loaded = load_bundle(tmp_path / "m.pt")
    with pytest.raises(
        CheckpointError, match=r"missing \['head.linear.bias'\].*mis-shaped \['head.linear.weight"
    ):
        loaded.build_heads()


def test_invalid_encoding_in_file_is_reported_as_checkpoint_error(
    bundle: Bundle, tmp_path: Path
) -> None:
    data = bundle.to_dict()
    data["modalities"][1]["encoding"]["kind"] = "sonar"
    torch.save(data, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"modalities\[1\]\.encoding: unknown encoding kind"):
        load_bundle(tmp_path / "m.pt")


def test_class_mapping_validates_its_ids() -> None:
    with pytest.raises(ConfigError, match=r"ids outside \[-1, 2\): \[5\]"):
        ClassMapping((0, 5), ("a", "b"), np.zeros((2, 3), np.uint8))
    with pytest.raises(ConfigError, match="palette must be"):
        ClassMapping((0, 1), ("a", "b"), np.zeros((3, 3), np.uint8))
