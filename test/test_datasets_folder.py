"""Tests of the plain folder layout: write -> read round trips, splits, dataset.yaml, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.datasets import (
    MODALITIES,
    FolderDataset,
    FrameGroup,
    open_dataset,
    write_frame_group,
)
from unim2_core.data.datasets.base import default_palette
from unim2_core.data.datasets.folder import DatasetYaml, load_dataset_yaml, write_dataset_yaml
from unim2_core.errors import DataError

H, W = 24, 32


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _array(modality: str, variant: str, seed: int = 0) -> np.ndarray:
    rng = _rng(seed)
    if modality == "rgb":
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        rgb[..., 0] = 240
        return rgb
    if modality == "depth" and variant == "hha":
        return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    if modality in ("depth", "thermal", "nir") and variant == "float32":
        values = rng.uniform(0.3, 9.0, (H, W)).astype(np.float32)
        values[0, 0] = np.nan  # 32FC1 depth marks invalid pixels with NaN
        return values
    if modality in ("depth", "thermal", "nir"):
        dtype = np.uint8 if variant == "uint8" else np.uint16
        return rng.integers(0, np.iinfo(dtype).max + 1, (H, W), dtype=dtype)
    if modality == "aolp":
        angle = rng.uniform(0, np.pi, (H, W))
        return np.stack([np.sin(angle), np.cos(angle)], axis=-1).astype(np.float32)
    return rng.uniform(0, 1, (H, W)).astype(np.float32)


ROUND_TRIPS = [
    ("rgb", "uint8"),
    ("depth", "hha"),
    ("depth", "uint16"),
    ("depth", "float32"),
    ("thermal", "uint8"),
    ("thermal", "uint16"),
    ("thermal", "float32"),
    ("nir", "uint8"),
    ("nir", "uint16"),
    ("aolp", "float32"),
    ("dolp", "float32"),
]


def _write_yaml(root: Path, text: str) -> None:
    (root / "dataset.yaml").write_text(text)


def test_round_trips_cover_every_modality() -> None:
    assert {modality for modality, _ in ROUND_TRIPS} == set(MODALITIES)


@pytest.mark.parametrize(("modality", "variant"), ROUND_TRIPS)
def test_write_then_read_round_trips_each_modality_dtype(
    tmp_path: Path, modality: str, variant: str
) -> None:
    arrays = {"rgb": _array("rgb", "uint8", seed=1)}
    arrays[modality] = _array(modality, variant, seed=2)
    write_frame_group(tmp_path, FrameGroup("frame_0001", arrays, None))
    dataset = FolderDataset(tmp_path, split="all")
    assert dataset.stems == ("frame_0001",)
    group = dataset[0]
    assert list(group.arrays) == list(arrays)
    for name, array in arrays.items():
        assert group.arrays[name].dtype == array.dtype
        np.testing.assert_array_equal(group.arrays[name], array)
    assert group.labels is None
    suffix = ".npy" if variant == "float32" else ".png"
    assert (tmp_path / modality / f"frame_0001{suffix}").is_file()


@pytest.mark.parametrize(("dtype", "n_classes"), [(np.uint8, 5), (np.uint16, 300)])
def test_write_then_read_round_trips_labels(
    tmp_path: Path, dtype: type[np.generic], n_classes: int
) -> None:
    ignore = 255 if n_classes < 255 else 65535
    labels = _rng(3).integers(0, n_classes, (H, W)).astype(dtype)
    labels[0] = ignore
    names = [f"class_{i}" for i in range(n_classes)]
    _write_yaml(tmp_path, f"class_names: {names}\nignore_index: {ignore}\n")
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, labels))
    dataset = FolderDataset(tmp_path, split="all")
    assert dataset.info.ignore_index == ignore
    assert len(dataset.info.class_names) == n_classes
    read = dataset[0].labels
    assert read is not None
    assert read.dtype == dtype
    np.testing.assert_array_equal(read, labels)


def test_writer_leaves_no_temporary_files(tmp_path: Path) -> None:
    arrays = {name: _array(name, "uint8") for name in ("rgb", "thermal", "dolp")}
    write_frame_group(tmp_path, FrameGroup("a", arrays, np.zeros((H, W), np.uint8)))
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["dolp/a.npy", "labels/a.png", "rgb/a.png", "thermal/a.png"]


def test_writer_replaces_an_existing_frame(tmp_path: Path) -> None:
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8", 1)}, None))
    newer = _array("rgb", "uint8", 2)
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": newer}, None))
    np.testing.assert_array_equal(FolderDataset(tmp_path, split="all")[0].arrays["rgb"], newer)


def test_rgb_png_written_by_writer_is_rgb_for_pil(tmp_path: Path) -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200
    write_frame_group(tmp_path, FrameGroup("red", {"rgb": rgb}, None))
    assert Image.open(tmp_path / "rgb" / "red.png").getpixel((0, 0)) == (200, 0, 0)


def test_reads_hand_made_folder_with_jpeg_and_grey_rgb_thermal(tmp_path: Path) -> None:
    (tmp_path / "rgb").mkdir()
    (tmp_path / "thermal").mkdir()
    Image.fromarray(np.full((H, W, 3), 128, np.uint8), "RGB").save(tmp_path / "rgb" / "x.jpg")
    thermal = _array("thermal", "uint8")
    Image.fromarray(np.dstack([thermal] * 3), "RGB").save(tmp_path / "thermal" / "x.png")
    group = open_dataset("folder", tmp_path, split="train")[0]
    np.testing.assert_array_equal(group.arrays["thermal"], thermal)
    assert abs(int(group.arrays["rgb"].mean()) - 128) <= 2


def test_all_split_takes_only_complete_frames_sorted(tmp_path: Path) -> None:
    for stem in ("b", "a", "c"):
        arrays = {"rgb": _array("rgb", "uint8")}
        if stem != "c":
            arrays["nir"] = _array("nir", "uint8")
        write_frame_group(tmp_path, FrameGroup(stem, arrays, None))
    assert FolderDataset(tmp_path, split="all").stems == ("a", "b")
    assert FolderDataset(tmp_path, split="all", modalities=["rgb"]).stems == ("a", "b", "c")


def test_split_lists_select_frames(tmp_path: Path) -> None:
    for stem in ("a", "b", "c"):
        write_frame_group(tmp_path, FrameGroup(stem, {"rgb": _array("rgb", "uint8")}, None))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("c\na\n")
    assert FolderDataset(tmp_path, split="val").stems == ("c", "a")
    assert FolderDataset(tmp_path, split="all").stems == ("a", "b", "c")
    with pytest.raises(DataError, match=r"missing split list '.*splits/train\.txt'"):
        FolderDataset(tmp_path, split="train")


def test_val_without_list_is_an_error(tmp_path: Path) -> None:
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, None))
    with pytest.raises(DataError, match=r"missing split list '.*splits/val\.txt'"):
        FolderDataset(tmp_path, split="val")


def test_listed_frame_missing_a_modality_file_is_named(tmp_path: Path) -> None:
    write_frame_group(
        tmp_path,
        FrameGroup("a", {"rgb": _array("rgb", "uint8"), "nir": _array("nir", "uint8")}, None),
    )
    write_frame_group(tmp_path, FrameGroup("b", {"rgb": _array("rgb", "uint8")}, None))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "test.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match=r"missing file for frame 'b' in '.*nir' \(frame listed"):
        FolderDataset(tmp_path, split="test")


def test_dataset_yaml_sets_name_classes_and_palette(tmp_path: Path) -> None:
    _write_yaml(
        tmp_path,
        "name: yard\nclass_names: [road, grass]\npalette: [[1, 2, 3], [4, 5, 6]]\n",
    )
    labels = np.array([[0, 1] * (W // 2)] * H, np.uint8)
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, labels))
    info = FolderDataset(tmp_path, split="all").info
    assert info.name == "yard"
    assert info.class_names == ("road", "grass")
    np.testing.assert_array_equal(info.palette, [[1, 2, 3], [4, 5, 6]])
    assert info.palette.dtype == np.uint8


def test_dataset_yaml_gives_each_modalitys_intrinsics(tmp_path: Path) -> None:
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, None))
    assert dict(FolderDataset(tmp_path, split="all").info.intrinsics) == {}
    _write_yaml(tmp_path, "intrinsics:\n  depth: [50.5, 51, 31.5, 23.5, 64, 48]\n")
    info = FolderDataset(tmp_path, split="all").info
    assert dict(info.intrinsics) == {"depth": CameraIntrinsics(50.5, 51.0, 31.5, 23.5, 64, 48)}


def test_written_dataset_yaml_reads_back_the_same(tmp_path: Path) -> None:
    config = DatasetYaml(
        name="yard",
        class_names=["road", "grass"],
        palette=[[1, 2, 3], [4, 5, 6]],
        ignore_index=255,
        intrinsics={"depth": CameraIntrinsics(50.5, 51.0, 31.5, 23.5, 64, 48)},
    )
    path = tmp_path / "dataset.yaml"
    write_dataset_yaml(path, config)
    assert load_dataset_yaml(path) == config
    assert "  depth: [50.5, 51.0, 31.5, 23.5, 64, 48]\n" in path.read_text()


def test_default_name_and_palette(tmp_path: Path) -> None:
    root = tmp_path / "robot_day1"
    write_frame_group(root, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, None))
    _write_yaml(root, "class_names: [a, b, c]\n")
    info = FolderDataset(root, split="all").info
    assert info.name == "robot_day1"
    np.testing.assert_array_equal(info.palette, default_palette(3))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colours: [1]\n", r"unknown key 'colours'; known keys: name, class_names"),
        ("class_names: road\n", "key 'class_names' must be a list of strings, got 'road'"),
        ("class_names: [a, ' ']\n", "key 'class_names' must be a non-empty list of non-empty"),
        ("class_names: [a]\npalette: [red]\n", "key 'palette' entry 0 must be a list of integ"),
        ("name: 3\n", "key 'name' must be a string, got 3"),
        ("ignore_index: x\n", "key 'ignore_index' must be an integer, got 'x'"),
        ("class_names: [a, a]\n", "key 'class_names' repeats a"),
        ("class_names: [a, b]\npalette: [[1, 2, 3]]\n", r"key 'palette' must list one colour"),
        ("class_names: [a]\npalette: [[1, 2, 300]]\n", r"key 'palette' entry 0 must be 3"),
        ("palette: [[1, 2, 3]]\n", "key 'palette' needs key 'class_names'"),
        ("class_names: [a, b]\nignore_index: 1\n", "key 'ignore_index' must be an integer in 2"),
        ("name: ''\n", "key 'name' must be a non-empty string"),
        ("- a\n- b\n", "must hold a mapping of keys, got list"),
        ("class_names: [a\n", "is not valid YAML"),
        ("intrinsics: [1, 2]\n", "key 'intrinsics' must be a mapping, got"),
        (
            "intrinsics: {lidar: [5, 5, 1, 1, 4, 3]}\n",
            r"dataset\.yaml': unknown key 'intrinsics\.lidar'; known keys: rgb, depth",
        ),
        (
            "intrinsics: {depth: [5, 5, 1, 1]}\n",
            r"dataset\.yaml': key 'intrinsics\.depth' must be a list \[fx, fy, cx, cy, width, h",
        ),
        (
            "intrinsics: {depth: 5}\n",
            r"dataset\.yaml': key 'intrinsics\.depth' must be a list \[fx, fy, cx, cy, width, h",
        ),
        (
            "intrinsics: {depth: [0, 5, 1, 1, 4, 3]}\n",
            r"dataset\.yaml': key 'intrinsics\.depth': focal lengths must be positive",
        ),
        (
            "intrinsics: {depth: [5, 5, 1, 1, 4.5, 3]}\n",
            r"key 'intrinsics\.depth': width and height must be positive integers",
        ),
    ],
)
def test_invalid_dataset_yaml_is_named(tmp_path: Path, text: str, message: str) -> None:
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, None))
    _write_yaml(tmp_path, text)
    with pytest.raises(DataError, match=message):
        FolderDataset(tmp_path, split="all")


def test_labels_without_class_names_are_rejected(tmp_path: Path) -> None:
    write_frame_group(
        tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, np.zeros((H, W), np.uint8))
    )
    with pytest.raises(
        DataError,
        match=r"holds labels but no class names are given: add "
        r"'class_names' to '.*dataset\.yaml'",
    ):
        FolderDataset(tmp_path, split="all")


def test_label_outside_classes_is_named(tmp_path: Path) -> None:
    _write_yaml(tmp_path, "class_names: [a, b]\n")
    labels = np.full((H, W), 255, np.uint8)
    labels[3, 3] = 2
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, labels))
    with pytest.raises(
        DataError,
        match=r"labels '.*labels/a\.png' hold values \[2\]; expected "
        r"class ids 0\.\.1 or 255",
    ):
        FolderDataset(tmp_path, split="all")[0]


def test_frames_without_label_file_have_no_labels(tmp_path: Path) -> None:
    _write_yaml(tmp_path, "class_names: [a, b]\n")
    labels = np.zeros((H, W), np.uint8)
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, labels))
    write_frame_group(tmp_path, FrameGroup("b", {"rgb": _array("rgb", "uint8")}, None))
    dataset = FolderDataset(tmp_path, split="all")
    assert dataset[0].labels is not None
    assert dataset[1].labels is None


def test_sizes_differing_on_disk_are_named(tmp_path: Path) -> None:
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, None))
    (tmp_path / "thermal").mkdir()
    Image.fromarray(np.zeros((H, W + 1), np.uint8), "L").save(tmp_path / "thermal" / "a.png")
    with pytest.raises(DataError, match=r"frame 'a': sizes differ: rgb 24x32 .* thermal 24x33"):
        FolderDataset(tmp_path, split="all")[0]


def test_truncated_png_is_named(tmp_path: Path) -> None:
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, None))
    path = tmp_path / "rgb" / "a.png"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match=r"cannot decode image '.*rgb/a\.png'"):
        FolderDataset(tmp_path, split="all")[0]


def test_colour_thermal_is_named(tmp_path: Path) -> None:
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, None))
    (tmp_path / "thermal").mkdir()
    Image.fromarray(_array("rgb", "uint8"), "RGB").save(tmp_path / "thermal" / "a.png")
    with pytest.raises(DataError, match=r"thermal/a\.png' has 3 differing channels"):
        FolderDataset(tmp_path, split="all")[0]


def test_wrong_npy_content_is_named(tmp_path: Path) -> None:
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, None))
    (tmp_path / "aolp").mkdir()
    np.save(tmp_path / "aolp" / "a.npy", np.zeros((H, W), np.float32))
    with pytest.raises(
        DataError,
        match=r"aolp from '.*aolp/a\.npy' is float32 \(24, 32\); "
        r"expected float32 HxWx2",
    ):
        FolderDataset(tmp_path, split="all")[0]


def test_unknown_modality_is_named(tmp_path: Path) -> None:
    write_frame_group(tmp_path, FrameGroup("a", {"rgb": _array("rgb", "uint8")}, None))
    with pytest.raises(DataError, match="unknown modality 'lidar'"):
        FolderDataset(tmp_path, split="all", modalities=["rgb", "lidar"])
    with pytest.raises(DataError, match=r"provides no 'thermal' modality; it provides rgb"):
        FolderDataset(tmp_path, split="all", modalities=["rgb", "thermal"])


def test_missing_rgb_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "thermal").mkdir()
    with pytest.raises(DataError, match=r"missing directory '.*rgb'"):
        FolderDataset(tmp_path, split="all")


def test_writer_rejects_unknown_modality(tmp_path: Path) -> None:
    arrays = {"rgb": _array("rgb", "uint8"), "lidar": np.zeros((H, W), np.uint8)}
    with pytest.raises(DataError, match="unknown modality 'lidar'"):
        write_frame_group(tmp_path, FrameGroup("a", arrays, None))
    assert not any(tmp_path.iterdir())


def test_writer_rejects_arrays_breaking_conventions(tmp_path: Path) -> None:
    arrays = {"rgb": np.zeros((H, W, 3), np.float32)}
    with pytest.raises(DataError, match=r"rgb from \"frame 'a' rgb\" is float32 .*expected uint8"):
        write_frame_group(tmp_path, FrameGroup("a", arrays, None))


def test_writer_rejects_sizes_that_differ(tmp_path: Path) -> None:
    arrays = {"rgb": _array("rgb", "uint8"), "nir": np.zeros((H + 1, W), np.uint8)}
    with pytest.raises(DataError, match=r"frame 'a': sizes differ: rgb 24x32 .* nir 25x32"):
        write_frame_group(tmp_path, FrameGroup("a", arrays, None))
    assert not any(tmp_path.iterdir())


def test_writer_rejects_float_labels(tmp_path: Path) -> None:
    group = FrameGroup("a", {"rgb": _array("rgb", "uint8")}, np.zeros((H, W), np.float32))
    with pytest.raises(DataError, match=r"frame 'a' labels are float32 .*expected 2-D uint8"):
        write_frame_group(tmp_path, group)


@pytest.mark.parametrize("stem", ["", "../x", "a b", ".hidden", "a\\b"])
def test_writer_rejects_stems_that_are_not_file_names(tmp_path: Path, stem: str) -> None:
    with pytest.raises(DataError, match="cannot name a file in the folder layout"):
        write_frame_group(tmp_path, FrameGroup(stem, {"rgb": _array("rgb", "uint8")}, None))


def test_writer_requires_rgb(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="frame 'a' has no 'rgb' array"):
        write_frame_group(tmp_path, FrameGroup("a", {"nir": _array("nir", "uint8")}, None))
