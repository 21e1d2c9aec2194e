"""Tests of unim2_core.data.datasets.base: conventions, modality selection, lists, open_dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unim2_core.data.datasets import MODALITIES, FrameGroup, open_dataset, validate_modality_array
from unim2_core.data.datasets.base import (
    DatasetInfo,
    SplitReader,
    assemble_group,
    class_lookup,
    default_palette,
    index_directory,
    read_split_list,
    remap_labels,
    select_modalities,
)
from unim2_core.errors import DataError

H, W = 24, 32

VALID_ARRAYS: dict[str, list[np.ndarray]] = {
    "rgb": [np.zeros((H, W, 3), np.uint8)],
    "depth": [
        np.zeros((H, W, 3), np.uint8),
        np.zeros((H, W), np.uint16),
        np.zeros((H, W), np.float32),
    ],
    "thermal": [
        np.zeros((H, W), np.uint8),
        np.zeros((H, W), np.uint16),
        np.zeros((H, W), np.float32),
    ],
    "nir": [np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint16), np.zeros((H, W), np.float32)],
    "aolp": [np.zeros((H, W, 2), np.float32)],
    "dolp": [np.full((H, W), 0.5, np.float32)],
}
INVALID_ARRAYS: dict[str, np.ndarray] = {
    "rgb": np.zeros((H, W, 3), np.float32),
    "depth": np.zeros((H, W), np.float64),
    "thermal": np.zeros((H, W, 3), np.uint8),
    "nir": np.zeros((H, W), np.int32),
    "aolp": np.zeros((H, W, 3), np.float32),
    "dolp": np.zeros((H, W), np.float64),
}


def test_every_modality_has_valid_and_invalid_examples() -> None:
    assert set(VALID_ARRAYS) == set(MODALITIES) == set(INVALID_ARRAYS)


@pytest.mark.parametrize(
    ("modality", "array"),
    [(modality, array) for modality, arrays in VALID_ARRAYS.items() for array in arrays],
)
def test_validate_accepts_each_convention(modality: str, array: np.ndarray) -> None:
    validate_modality_array(modality, array, source="x")


@pytest.mark.parametrize("modality", MODALITIES)
def test_validate_rejects_wrong_dtype_or_shape(modality: str) -> None:
    with pytest.raises(DataError, match=f"{modality} from 'frame 7' is .*; expected"):
        validate_modality_array(modality, INVALID_ARRAYS[modality], source="frame 7")


def test_validate_rejects_dolp_outside_unit_range() -> None:
    dolp = np.full((H, W), 0.5, np.float32)
    dolp[0, 0] = 1.5
    with pytest.raises(DataError, match=r"dolp from 'd.npy' has values outside \[0, 1\]"):
        validate_modality_array("dolp", dolp, source="d.npy")


def test_validate_allows_nan_dolp() -> None:
    dolp = np.full((H, W), np.nan, np.float32)
    validate_modality_array("dolp", dolp, source="d.npy")


def test_validate_rejects_unknown_modality() -> None:
    with pytest.raises(DataError, match="unknown modality 'lidar'"):
        validate_modality_array("lidar", np.zeros((H, W), np.uint8), source="x")


def test_select_modalities_puts_rgb_first_and_keeps_order() -> None:
    supported = ("rgb", "nir", "aolp", "dolp")
    assert select_modalities(None, supported, dataset="D") == supported
    assert select_modalities(["dolp", "rgb", "nir"], supported, dataset="D") == (
        "rgb",
        "dolp",
        "nir",
    )


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (["rgb", "lidar"], "unknown modality 'lidar'"),
        (["rgb", "thermal"], "D provides no 'thermal' modality; it provides rgb, nir"),
        (["nir"], r"lack 'rgb', the anchor modality"),
        (["rgb", "nir", "nir"], "modalities repeated: nir"),
        ("rgb", "must be a sequence of names"),
    ],
)
def test_select_modalities_rejects_bad_requests(requested: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        select_modalities(requested, ("rgb", "nir"), dataset="D")


def test_read_split_list_takes_first_token_and_skips_comments(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("# comment\n0001\n\n  RGB/0002.jpg Label/0002.png\n0003 \n")
    assert read_split_list(path) == ("0001", "RGB/0002.jpg", "0003")


def test_read_split_list_names_missing_and_empty_lists(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing split list '.*val\.txt'"):
        read_split_list(tmp_path / "val.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(DataError, match=r"split list '.*empty\.txt' names no frame"):
        read_split_list(empty)


def test_index_directory_rejects_ambiguous_stems(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / ".b.png").write_bytes(b"")  # hidden: a temporary file of a writer
    with pytest.raises(DataError, match=r"ambiguous frame 'a'"):
        index_directory(tmp_path, (".png", ".jpg"))
    assert index_directory(tmp_path, (".png",)) == {"a": tmp_path / "a.png"}


def test_index_directory_names_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing directory '.*RGB'"):
        index_directory(tmp_path / "RGB", (".png",))


def test_remap_labels_applies_lookup_and_names_invalid_values() -> None:
    lookup = np.array([255, 0, 1, -1], dtype=np.int32)
    raw = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    mapped = remap_labels(raw, lookup, source="l.png", expected="0..2")
    assert mapped.dtype == np.uint8
    np.testing.assert_array_equal(mapped, [[255, 0], [1, 0]])
    with pytest.raises(DataError, match=r"labels 'l.png' hold values \[3, 9\]; expected 0\.\.2"):
        remap_labels(np.array([[3, 9]], np.uint8), lookup, source="l.png", expected="0..2")


def test_class_lookup_accepts_classes_and_ignore_only() -> None:
    lookup = class_lookup(3, 255)
    raw = np.array([[0, 2, 255]], np.uint8)
    np.testing.assert_array_equal(remap_labels(raw, lookup, source="x", expected="e"), raw)
    with pytest.raises(DataError, match=r"hold values \[3\]"):
        remap_labels(np.array([[3]], np.uint8), lookup, source="x", expected="e")


def test_remap_labels_gives_uint16_for_many_classes() -> None:
    lookup = class_lookup(300, 65535)
    raw = np.array([[299, 65535]], np.uint16)
    mapped = remap_labels(raw, lookup, source="x", expected="e")
    assert mapped.dtype == np.uint16
    np.testing.assert_array_equal(mapped, raw)


def test_assemble_group_lists_every_size_when_sizes_differ() -> None:
    arrays = {"rgb": np.zeros((H, W, 3), np.uint8), "thermal": np.zeros((H, W + 1), np.uint8)}
    with pytest.raises(
        DataError,
        match=r"frame 'f': sizes differ: rgb 24x32 \('a.png'\), "
        r"thermal 24x33 \('b.png'\)",
    ):
        assemble_group("f", arrays, None, sources={"rgb": "a.png", "thermal": "b.png"})


def test_default_palette_is_distinct_and_never_black() -> None:
    palette = default_palette(40)
    assert palette.shape == (40, 3)
    assert palette.dtype == np.uint8
    assert len({tuple(colour) for colour in palette.tolist()}) == 40
    assert not (palette == 0).all(axis=1).any()


class _ThreeFrames(SplitReader):
    def __init__(self) -> None:
        self.root = Path("/nowhere")
        self.split = "train"
        self.stems = ("a", "b", "c")
        self.info = DatasetInfo("t", ("rgb",), (), np.zeros((0, 3), np.uint8), 255)

    def _read_frame(self, stem: str) -> FrameGroup:
        return FrameGroup(stem, {"rgb": np.zeros((1, 1, 3), np.uint8)}, None)


def test_split_reader_indexes_like_a_sequence() -> None:
    frames = _ThreeFrames()
    assert len(frames) == 3
    assert frames[0].stem == "a"
    assert frames[-1].stem == "c"
    assert [group.stem for group in frames] == ["a", "b", "c"]
    with pytest.raises(IndexError, match="frame index 3 out of range for 3 frames"):
        frames[3]
    assert "split='train', frames=3" in repr(frames)


@pytest.mark.parametrize("kind", ["nyu", "mfnet", "mcubes", "folder"])
def test_open_dataset_rejects_unknown_options(kind: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"{kind} accepts no option colour_space"):
        open_dataset(kind, tmp_path, split="train", colour_space="bgr")  # type: ignore[arg-type]


def test_open_dataset_rejects_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset kind 'kitti'"):
        open_dataset("kitti", tmp_path, split="train")  # type: ignore[arg-type]
