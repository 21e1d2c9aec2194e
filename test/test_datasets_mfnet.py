"""Tests of the MFNet reader on tiny datasets written in the MFNet / RTFNet on-disk layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unim2_core.data.datasets import MFNet, open_dataset
from unim2_core.data.datasets.mfnet import CLASS_NAMES
from unim2_core.errors import DataError

H, W = 24, 32
STEMS = ("00001D", "00002N")


def _frame(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    rgba[..., 0] = 240  # R, G, B and thermal all clearly differ
    rgba[..., 1] = rng.integers(100, 140, (H, W), dtype=np.uint8)
    rgba[..., 2] = 3
    rgba[..., 3] = np.arange(W, dtype=np.uint8)[None, :] * 8  # thermal: a left-right ramp
    labels = rng.integers(0, 9, (H, W), dtype=np.uint8)
    return rgba, labels


def _write_mfnet(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the layout with PIL, which stores 4-channel PNGs in R, G, B, A(thermal) order."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    frames = {}
    for index, stem in enumerate(STEMS):
        rgba, labels = _frame(index)
        Image.fromarray(rgba, "RGBA").save(root / "images" / f"{stem}.png")
        Image.fromarray(labels, "L").save(root / "labels" / f"{stem}.png")
        frames[stem] = (rgba, labels)
    (root / "train.txt").write_text("00001D\n00002N\n")
    (root / "val.txt").write_text("00002N\n")
    (root / "test.txt").write_text("00001D\n")
    return frames


def _shifted(labels: np.ndarray) -> np.ndarray:
    expected = labels.astype(np.int64) - 1
    expected[labels == 0] = 255
    return expected.astype(np.uint8)


def test_splits_rgb_and_thermal_in_file_channel_order(tmp_path: Path) -> None:
    frames = _write_mfnet(tmp_path)
    dataset = MFNet(tmp_path, split="train")
    assert dataset.info.modalities == ("rgb", "thermal")
    assert dataset.info.class_names == CLASS_NAMES
    assert dataset.info.palette.shape == (8, 3)
    for group in dataset:
        rgba, labels = frames[group.stem]
        np.testing.assert_array_equal(group.arrays["rgb"], rgba[..., :3])
        np.testing.assert_array_equal(group.arrays["thermal"], rgba[..., 3])
        assert group.arrays["thermal"].dtype == np.uint8
        assert group.labels is not None
        np.testing.assert_array_equal(group.labels, _shifted(labels))


def test_shifts_labels_by_hand_example(tmp_path: Path) -> None:
    _write_mfnet(tmp_path)
    raw = np.zeros((H, W), np.uint8)
    raw[0, :9] = np.arange(9)
    Image.fromarray(raw, "L").save(tmp_path / "labels" / "00001D.png")
    labels = MFNet(tmp_path, split="test")[0].labels
    assert labels is not None
    assert labels[0, :9].tolist() == [255, 0, 1, 2, 3, 4, 5, 6, 7]
    assert CLASS_NAMES[labels[0, 1]] == "car"
    assert CLASS_NAMES[labels[0, 8]] == "bump"


@pytest.mark.parametrize(
    ("split", "stems"), [("train", STEMS), ("val", ("00002N",)), ("test", ("00001D",))]
)
def test_reads_every_split_list(tmp_path: Path, split: str, stems: tuple[str, ...]) -> None:
    _write_mfnet(tmp_path)
    assert open_dataset("mfnet", tmp_path, split=split).stems == stems


def test_rgb_only(tmp_path: Path) -> None:
    _write_mfnet(tmp_path)
    group = MFNet(tmp_path, split="train", modalities=["rgb"])[0]
    assert list(group.arrays) == ["rgb"]


def test_flip_stem_mirrors_the_unflipped_file(tmp_path: Path) -> None:
    frames = _write_mfnet(tmp_path)
    (tmp_path / "train.txt").write_text("00002N_flip\n")
    group = MFNet(tmp_path, split="train")[0]
    rgba, labels = frames["00002N"]
    assert group.stem == "00002N_flip"
    np.testing.assert_array_equal(group.arrays["rgb"], rgba[:, ::-1, :3])
    np.testing.assert_array_equal(group.arrays["thermal"], rgba[:, ::-1, 3])
    assert group.labels is not None
    np.testing.assert_array_equal(group.labels, _shifted(labels)[:, ::-1])


def test_flip_stem_with_its_own_file_is_read_as_is(tmp_path: Path) -> None:
    frames = _write_mfnet(tmp_path)
    rgba, labels = frames["00001D"]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "images" / "00001D_flip.png")
    Image.fromarray(labels, "L").save(tmp_path / "labels" / "00001D_flip.png")
    (tmp_path / "train.txt").write_text("00001D_flip\n")
    np.testing.assert_array_equal(MFNet(tmp_path, split="train")[0].arrays["rgb"], rgba[..., :3])


def test_three_channel_image_is_rejected(tmp_path: Path) -> None:
    _write_mfnet(tmp_path)
    Image.fromarray(np.zeros((H, W, 3), np.uint8), "RGB").save(tmp_path / "images" / "00001D.png")
    with pytest.raises(
        DataError, match=r"00001D\.png' has shape \(24, 32, 3\); MFNet images hold 4"
    ):
        MFNet(tmp_path, split="train")[0]


def test_label_beyond_bump_is_named(tmp_path: Path) -> None:
    _write_mfnet(tmp_path)
    Image.fromarray(np.full((H, W), 9, np.uint8), "L").save(tmp_path / "labels" / "00002N.png")
    with pytest.raises(DataError, match=r"labels '.*labels/00002N\.png' hold values \[9\]"):
        MFNet(tmp_path, split="train")[1]


def test_label_of_other_size_is_named(tmp_path: Path) -> None:
    _write_mfnet(tmp_path)
    Image.fromarray(np.zeros((H - 4, W), np.uint8), "L").save(tmp_path / "labels" / "00002N.png")
    with pytest.raises(DataError, match=r"frame '00002N': sizes differ: .* labels 20x32"):
        MFNet(tmp_path, split="train")[1]


def test_missing_image_is_named(tmp_path: Path) -> None:
    _write_mfnet(tmp_path)
    (tmp_path / "images" / "00002N.png").unlink()
    with pytest.raises(DataError, match=r"missing file '.*images/00002N\.png'"):
        MFNet(tmp_path, split="train")


def test_missing_label_is_named(tmp_path: Path) -> None:
    _write_mfnet(tmp_path)
    (tmp_path / "labels" / "00001D.png").unlink()
    with pytest.raises(DataError, match=r"missing file '.*labels/00001D\.png'"):
        MFNet(tmp_path, split="test")


def test_missing_split_list_is_named(tmp_path: Path) -> None:
    _write_mfnet(tmp_path)
    (tmp_path / "val.txt").unlink()
    with pytest.raises(DataError, match=r"missing split list '.*val\.txt'"):
        MFNet(tmp_path, split="val")


def test_truncated_image_is_named(tmp_path: Path) -> None:
    _write_mfnet(tmp_path)
    path = tmp_path / "images" / "00001D.png"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"cannot decode image '.*images/00001D\.png'"):
        MFNet(tmp_path, split="train")[0]


def test_unknown_modality_is_named(tmp_path: Path) -> None:
    _write_mfnet(tmp_path)
    with pytest.raises(DataError, match="MFNet provides no 'depth' modality"):
        MFNet(tmp_path, split="train", modalities=["rgb", "depth"])
