"""Tests of the MCubeS reader on tiny datasets written in the MCubeS on-disk layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from unim2_core.data.datasets import MCubeS, open_dataset
from unim2_core.data.datasets.mcubes import CLASS_NAMES
from unim2_core.errors import DataError

H, W = 24, 32
CROP = 8
STEMS = ("outscene1208_2_0000000150", "outscene1208_2_0000000180")


def _frame(seed: int, width: int = W) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (H, width, 3), dtype=np.uint8)
    rgb[..., 0] = 230
    rgb[..., 2] = 20
    angle = rng.uniform(0, np.pi, (H, width))
    labels = rng.integers(0, 20, (H, width), dtype=np.uint8)
    labels[:2] = 255
    return {
        "rgb": rgb,
        "nir": rng.integers(0, 256, (H, width), dtype=np.uint8),
        "sin": np.sin(angle),  # float64 on disk, as computed
        "cos": np.cos(angle),
        "dolp": rng.uniform(0, 1, (H, width)),
        "labels": labels,
    }


def _write_mcubes(root: Path, width: int = W) -> dict[str, dict[str, np.ndarray]]:
    for folder in (
        "polL_color",
        "NIR_warped",
        "polL_aolp_sin",
        "polL_aolp_cos",
        "polL_dolp",
        "GT",
        "list_folder",
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
    frames = {}
    for index, stem in enumerate(STEMS):
        frame = _frame(index, width)
        Image.fromarray(frame["rgb"], "RGB").save(root / "polL_color" / f"{stem}.png")
        grey3 = np.dstack([frame["nir"]] * 3)  # NIR stored as a 3-channel grey image
        Image.fromarray(grey3, "RGB").save(root / "NIR_warped" / f"{stem}.png")
        np.save(root / "polL_aolp_sin" / f"{stem}.npy", frame["sin"])
        np.save(root / "polL_aolp_cos" / f"{stem}.npy", frame["cos"])
        np.save(root / "polL_dolp" / f"{stem}.npy", frame["dolp"])
        Image.fromarray(frame["labels"], "L").save(root / "GT" / f"{stem}.png")
        frames[stem] = frame
    (root / "list_folder" / "train.txt").write_text("\n".join(STEMS) + "\n")
    (root / "list_folder" / "val.txt").write_text(STEMS[1] + "\n")
    return frames


def test_reads_every_modality_cropped_and_in_convention(tmp_path: Path) -> None:
    frames = _write_mcubes(tmp_path)
    dataset = MCubeS(tmp_path, split="train", crop_left=CROP)
    assert dataset.info.modalities == ("rgb", "nir", "aolp", "dolp")
    assert dataset.info.class_names == CLASS_NAMES
    assert len(CLASS_NAMES) == 20
    for group in dataset:
        frame = frames[group.stem]
        np.testing.assert_array_equal(group.arrays["rgb"], frame["rgb"][:, CROP:])
        np.testing.assert_array_equal(group.arrays["nir"], frame["nir"][:, CROP:])
        aolp = group.arrays["aolp"]
        assert aolp.dtype == np.float32
        assert aolp.shape == (H, W - CROP, 2)
        np.testing.assert_allclose(aolp[..., 0], frame["sin"][:, CROP:], rtol=1e-6)
        np.testing.assert_allclose(aolp[..., 1], frame["cos"][:, CROP:], rtol=1e-6)
        assert group.arrays["dolp"].dtype == np.float32
        np.testing.assert_allclose(group.arrays["dolp"], frame["dolp"][:, CROP:], rtol=1e-6)
        assert group.labels is not None
        np.testing.assert_array_equal(group.labels, frame["labels"][:, CROP:])


def test_default_crop_drops_192_columns(tmp_path: Path) -> None:
    frames = _write_mcubes(tmp_path, width=200)
    group = open_dataset("mcubes", tmp_path, split="val")[0]
    assert group.arrays["rgb"].shape == (H, 8, 3)
    np.testing.assert_array_equal(group.arrays["rgb"], frames[STEMS[1]]["rgb"][:, 192:])


def test_crop_wider_than_frame_is_named(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    with pytest.raises(DataError, match=r"polL_color/.*\.png' has shape \(24, 32, 3\); too narrow"):
        MCubeS(tmp_path, split="val")[0]


def test_reads_any_subset_without_the_other_folders(tmp_path: Path) -> None:
    frames = _write_mcubes(tmp_path)
    for folder in ("NIR_warped", "polL_dolp", "GT"):
        shutil.rmtree(tmp_path / folder)
    group = MCubeS(tmp_path, split="val", modalities=["aolp", "rgb"], crop_left=0)[0]
    assert list(group.arrays) == ["rgb", "aolp"]
    assert group.labels is None
    np.testing.assert_allclose(group.arrays["aolp"][..., 1], frames[STEMS[1]]["cos"], rtol=1e-6)


def test_sixteen_bit_rgb_keeps_high_byte(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    rgb16 = np.zeros((H, W, 3), np.uint16)
    rgb16[..., 0] = 0xAB00 + 0x42  # red high byte 0xAB
    rgb16[..., 2] = 0x1200
    cv2.imwrite(str(tmp_path / "polL_color" / f"{STEMS[0]}.png"), rgb16[..., ::-1])  # cv2: BGR
    rgb = MCubeS(tmp_path, split="train", crop_left=0)[0].arrays["rgb"]
    assert rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0xAB, 0, 0x12]


def test_sixteen_bit_nir_keeps_its_depth(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    nir = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 50
    cv2.imwrite(str(tmp_path / "NIR_warped" / f"{STEMS[0]}.png"), nir)
    group = MCubeS(tmp_path, split="train", crop_left=0)[0]
    assert group.arrays["nir"].dtype == np.uint16
    np.testing.assert_array_equal(group.arrays["nir"], nir)


def test_dolp_is_clipped_to_unit_range(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    dolp = np.full((H, W), 0.25)
    dolp[0, 0] = 1.0004
    dolp[0, 1] = -0.0001
    np.save(tmp_path / "polL_dolp" / f"{STEMS[1]}.npy", dolp)
    clipped = MCubeS(tmp_path, split="val", crop_left=0)[0].arrays["dolp"]
    assert clipped[0, 0] == 1.0
    assert clipped[0, 1] == 0.0
    assert clipped[0, 2] == 0.25


def test_material_id_20_is_named(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    Image.fromarray(np.full((H, W), 20, np.uint8), "L").save(tmp_path / "GT" / f"{STEMS[1]}.png")
    with pytest.raises(DataError, match=r"labels '.*GT/.*0180\.png' hold values \[20\]"):
        MCubeS(tmp_path, split="val", crop_left=0)[0]


def test_aolp_of_other_size_is_named(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    np.save(tmp_path / "polL_aolp_sin" / f"{STEMS[1]}.npy", np.zeros((H, W + 2)))
    np.save(tmp_path / "polL_aolp_cos" / f"{STEMS[1]}.npy", np.zeros((H, W + 2)))
    with pytest.raises(DataError, match=r"sizes differ: .* aolp 24x34 \('.*polL_aolp_sin/"):
        MCubeS(tmp_path, split="val", crop_left=0)[0]


def test_aolp_sin_and_cos_of_different_shapes_are_named(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    np.save(tmp_path / "polL_aolp_cos" / f"{STEMS[1]}.npy", np.zeros((H, W + 2)))
    with pytest.raises(DataError, match=r"aolp sin '.*' \(24, 32\) and cos '.*' \(24, 34\) differ"):
        MCubeS(tmp_path, split="val", crop_left=0)[0]


def test_non_float_dolp_is_named(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    np.save(tmp_path / "polL_dolp" / f"{STEMS[1]}.npy", np.zeros((H, W), np.uint8))
    with pytest.raises(DataError, match=r"polL_dolp/.*\.npy' is uint8 \(24, 32\); expected float"):
        MCubeS(tmp_path, split="val", crop_left=0)[0]


def test_missing_aolp_cos_file_is_named(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    (tmp_path / "polL_aolp_cos" / f"{STEMS[0]}.npy").unlink()
    with pytest.raises(DataError, match=r"missing file '.*polL_aolp_cos/.*0150\.npy'"):
        MCubeS(tmp_path, split="train")


def test_missing_split_list_is_named(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    with pytest.raises(DataError, match=r"missing split list '.*list_folder/test\.txt'"):
        MCubeS(tmp_path, split="test")


def test_unknown_modality_is_named(tmp_path: Path) -> None:
    _write_mcubes(tmp_path)
    with pytest.raises(DataError, match="MCubeS provides no 'thermal' modality"):
        MCubeS(tmp_path, split="train", modalities=["rgb", "thermal"])


def test_negative_crop_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="crop_left must be >= 0, got -1"):
        MCubeS(tmp_path, split="train", crop_left=-1)
