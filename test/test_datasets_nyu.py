"""Tests of the NYU-Depth-v2 reader on tiny datasets written in the reference on-disk layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from unim2_core.data.datasets import NYUDepthV2, open_dataset
from unim2_core.data.datasets.nyu import CLASS_NAMES, NYU40_TO_13
from unim2_core.errors import DataError

H, W = 24, 32
STEMS = ("0003", "0010")

# The 40 -> 13 table as published (0-based 40-class index -> 13-class id), typed from
# Hatins/UniM2 src/data.py MAPPING_40_TO_13 / ankurhanda/nyuv2-meta-data class13Mapping.mat.
PUBLISHED_40_TO_13 = [
    11, 4, 5, 0, 3, 8, 9, 11, 12, 5, 7, 5, 12, 9, 5, 12, 5, 6, 6, 4,
    6, 2, 1, 5, 10, 6, 6, 6, 6, 6, 6, 5, 6, 6, 6, 6, 6, 6, 5, 6,
]  # fmt: skip


def _frame(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgb[..., 0] = 250  # channels differ, so a BGR/RGB swap shows
    rgb[..., 2] = 5
    hha = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    hha[..., 1] = 77
    depth = rng.integers(0, 10000, (H, W), dtype=np.uint16)
    labels = rng.integers(0, 41, (H, W), dtype=np.uint8)
    return {"rgb": rgb, "hha": hha, "depth": depth, "labels": labels}


def _write_nyu(
    root: Path,
    *,
    label_dir: str = "Labels",
    rgb_transposed: bool = False,
    train_lines: str = "0003\n0010\n",
) -> dict[str, dict[str, np.ndarray]]:
    """Write the UniM2 layout with PIL (the reference readers use PIL), depth with OpenCV."""
    frames = {}
    for folder in ("RGB", "HHA", "Depth", label_dir):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index, stem in enumerate(STEMS):
        frame = _frame(index)
        rgb = frame["rgb"].transpose(1, 0, 2) if rgb_transposed else frame["rgb"]
        Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(root / "RGB" / f"{stem}.png")
        Image.fromarray(frame["hha"], "RGB").save(root / "HHA" / f"{stem}.png")
        cv2.imwrite(str(root / "Depth" / f"{stem}.png"), frame["depth"])
        Image.fromarray(frame["labels"], "L").save(root / label_dir / f"{stem}.png")
        frames[stem] = frame
    (root / "train.txt").write_text(train_lines)
    (root / "test.txt").write_text("RGB/0010.png Label/0010.png\n")
    return frames


def _expected_labels(raw: np.ndarray) -> np.ndarray:
    expected = np.full(raw.shape, 255, np.uint8)
    labelled = raw > 0
    expected[labelled] = np.array(PUBLISHED_40_TO_13)[raw[labelled] - 1]
    return expected


def test_mapping_table_matches_published_table() -> None:
    assert len(NYU40_TO_13) == 40
    assert [CLASS_NAMES.index(name13) for _, name13 in NYU40_TO_13] == PUBLISHED_40_TO_13
    assert CLASS_NAMES == (
        "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
        "painting", "sofa", "table", "tv", "wall", "window",
    )  # fmt: skip


def test_reads_rgb_hha_and_maps_labels_to_13_classes(tmp_path: Path) -> None:
    frames = _write_nyu(tmp_path)
    dataset = NYUDepthV2(tmp_path, split="train")
    assert dataset.stems == STEMS
    assert len(dataset) == 2
    assert dataset.info.modalities == ("rgb", "depth")
    assert dataset.info.class_names == CLASS_NAMES
    assert dataset.info.palette.shape == (13, 3)
    for group, stem in zip(dataset, STEMS, strict=True):
        assert group.stem == stem
        np.testing.assert_array_equal(group.arrays["rgb"], frames[stem]["rgb"])
        np.testing.assert_array_equal(group.arrays["depth"], frames[stem]["hha"])
        assert group.labels is not None
        assert group.labels.dtype == np.uint8
        np.testing.assert_array_equal(group.labels, _expected_labels(frames[stem]["labels"]))


def test_label_zero_becomes_ignore_and_wall_stays_wall(tmp_path: Path) -> None:
    _write_nyu(tmp_path)
    raw = np.zeros((H, W), np.uint8)
    raw[:, 10:] = 1  # wall
    raw[:, 20:] = 11  # picture
    Image.fromarray(raw, "L").save(tmp_path / "Labels" / "0003.png")
    labels = NYUDepthV2(tmp_path, split="train")[0].labels
    assert labels is not None
    assert labels[0, 0] == 255
    assert CLASS_NAMES[labels[0, 10]] == "wall"
    assert CLASS_NAMES[labels[0, 25]] == "painting"


def test_reads_depth_in_millimetres(tmp_path: Path) -> None:
    frames = _write_nyu(tmp_path)
    group = open_dataset("nyu", tmp_path, split="train", depth_format="mm")[1]
    assert group.arrays["depth"].dtype == np.uint16
    np.testing.assert_array_equal(group.arrays["depth"], frames["0010"]["depth"])


def test_refuses_8bit_depth_as_millimetres(tmp_path: Path) -> None:
    _write_nyu(tmp_path)
    cv2.imwrite(str(tmp_path / "Depth" / "0003.png"), np.zeros((H, W), np.uint8))
    dataset = NYUDepthV2(tmp_path, split="train", depth_format="mm")
    with pytest.raises(DataError, match=r"Depth/0003\.png' is uint8 .*16-bit single-channel"):
        dataset[0]


def test_accepts_list_formats_of_both_references(tmp_path: Path) -> None:
    _write_nyu(tmp_path, train_lines="3\nRGB/0010.png Label/0010.png\n")
    assert NYUDepthV2(tmp_path, split="train").stems == STEMS
    assert NYUDepthV2(tmp_path, split="test").stems == ("0010",)


def test_reads_jpeg_rgb(tmp_path: Path) -> None:
    _write_nyu(tmp_path)
    (tmp_path / "RGB" / "0003.png").unlink()
    colour = np.array([250, 128, 5], np.uint8)
    Image.fromarray(np.tile(colour, (H, W, 1)), "RGB").save(tmp_path / "RGB" / "0003.jpg")
    rgb = NYUDepthV2(tmp_path, split="train")[0].arrays["rgb"]
    assert rgb.shape == (H, W, 3)
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(axis=0), colour, atol=4)


def test_val_split_without_list_is_an_error_not_test(tmp_path: Path) -> None:
    _write_nyu(tmp_path)
    with pytest.raises(DataError, match=r"NYU-Depth-v2 has no validation split: missing '.*val"):
        NYUDepthV2(tmp_path, split="val")
    (tmp_path / "val.txt").write_text("0003\n")
    assert NYUDepthV2(tmp_path, split="val").stems == ("0003",)


def test_auto_transposes_rgb_stored_transposed(tmp_path: Path) -> None:
    frames = _write_nyu(tmp_path, rgb_transposed=True)
    group = NYUDepthV2(tmp_path, split="train")[0]
    np.testing.assert_array_equal(group.arrays["rgb"], frames["0003"]["rgb"])
    with pytest.raises(DataError, match=r"frame '0003': sizes differ: rgb 32x24"):
        NYUDepthV2(tmp_path, split="train", rgb_transposed=False)[0]


def test_never_transposes_upright_rgb_in_auto_mode(tmp_path: Path) -> None:
    frames = _write_nyu(tmp_path)
    group = NYUDepthV2(tmp_path, split="train", rgb_transposed="auto")[0]
    np.testing.assert_array_equal(group.arrays["rgb"], frames["0003"]["rgb"])


def test_rgb_only_without_labels_folder(tmp_path: Path) -> None:
    frames = _write_nyu(tmp_path)
    shutil.rmtree(tmp_path / "Labels")
    shutil.rmtree(tmp_path / "HHA")
    group = NYUDepthV2(tmp_path, split="train", modalities=["rgb"])[1]
    assert list(group.arrays) == ["rgb"]
    assert group.labels is None
    np.testing.assert_array_equal(group.arrays["rgb"], frames["0010"]["rgb"])


def test_reads_dformer_label_folder(tmp_path: Path) -> None:
    frames = _write_nyu(tmp_path, label_dir="Label")
    labels = NYUDepthV2(tmp_path, split="train")[0].labels
    assert labels is not None
    np.testing.assert_array_equal(labels, _expected_labels(frames["0003"]["labels"]))


def test_rejects_both_label_folders(tmp_path: Path) -> None:
    _write_nyu(tmp_path)
    shutil.copytree(tmp_path / "Labels", tmp_path / "Label")
    with pytest.raises(DataError, match=r"both '.*Labels' and '.*Label' exist"):
        NYUDepthV2(tmp_path, split="train")


def test_missing_hha_file_is_named(tmp_path: Path) -> None:
    _write_nyu(tmp_path)
    (tmp_path / "HHA" / "0010.png").unlink()
    with pytest.raises(DataError, match=r"missing file '.*HHA/0010\.png' \(frame listed in"):
        NYUDepthV2(tmp_path, split="train")


def test_listed_frame_without_rgb_is_named(tmp_path: Path) -> None:
    _write_nyu(tmp_path, train_lines="0003\n0042\n")
    with pytest.raises(DataError, match=r"train\.txt' lists '0042' but .*RGB' holds no 0042"):
        NYUDepthV2(tmp_path, split="train")


def test_label_outside_40_classes_is_named(tmp_path: Path) -> None:
    _write_nyu(tmp_path)
    raw = np.full((H, W), 41, np.uint8)
    Image.fromarray(raw, "L").save(tmp_path / "Labels" / "0010.png")
    with pytest.raises(DataError, match=r"labels '.*Labels/0010\.png' hold values \[41\]"):
        NYUDepthV2(tmp_path, split="train")[1]


def test_truncated_hha_is_named(tmp_path: Path) -> None:
    _write_nyu(tmp_path)
    path = tmp_path / "HHA" / "0003.png"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"cannot decode image '.*HHA/0003\.png'"):
        NYUDepthV2(tmp_path, split="train")[0]


def test_hha_of_other_size_is_named(tmp_path: Path) -> None:
    _write_nyu(tmp_path)
    Image.fromarray(np.zeros((H, W + 8, 3), np.uint8), "RGB").save(tmp_path / "HHA" / "0003.png")
    with pytest.raises(DataError, match=r"sizes differ: rgb 24x32 .* depth 24x40 \('.*HHA/0003"):
        NYUDepthV2(tmp_path, split="train")[0]


@pytest.mark.parametrize(
    ("modalities", "message"),
    [(["rgb", "thermal"], "NYU-Depth-v2 provides no 'thermal'"), (["depth"], "lack 'rgb'")],
)
def test_rejects_unavailable_modalities(
    tmp_path: Path, modalities: list[str], message: str
) -> None:
    _write_nyu(tmp_path)
    with pytest.raises(DataError, match=message):
        NYUDepthV2(tmp_path, split="train", modalities=modalities)


def test_rejects_unknown_depth_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="depth_format must be 'hha' or 'mm', got 'disparity'"):
        NYUDepthV2(tmp_path, split="train", depth_format="disparity")  # type: ignore[arg-type]


def test_reads_real_sample_frames(tmp_path: Path, sample_data: Path) -> None:
    source = sample_data / "nyu_rgbd_sample"
    for folder, target in (("rgb", "RGB"), ("hha", "HHA"), ("depth_mm", "Depth")):
        shutil.copytree(source / folder, tmp_path / target)
    (tmp_path / "test.txt").write_text("0003\n0010\n")
    for depth_format in ("hha", "mm"):
        dataset = NYUDepthV2(tmp_path, split="test", depth_format=depth_format)  # type: ignore[arg-type]
        group = dataset[0]
        assert group.labels is None
        np.testing.assert_array_equal(
            group.arrays["rgb"], np.asarray(Image.open(source / "rgb" / "0003.png"))[..., :3]
        )
        depth = group.arrays["depth"]
        if depth_format == "hha":
            np.testing.assert_array_equal(
                depth, np.asarray(Image.open(source / "hha" / "0003.png"))
            )
        else:
            assert depth.dtype == np.uint16
            assert depth.shape == (480, 640)
            assert 500 < np.median(depth[depth > 0]) < 10000  # indoor range in millimetres
