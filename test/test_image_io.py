"""Tests of unim2_core.data.image_io: channel order against PIL, bit depths, bad files, atomic
writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unim2_core.data.image_io import (
    read_image,
    read_npy,
    rgb8,
    single_channel,
    write_npy,
    write_png,
)
from unim2_core.errors import DataError


def _ramp(shape: tuple[int, ...], dtype: type[np.unsignedinteger] = np.uint8) -> np.ndarray:
    values = np.arange(int(np.prod(shape))) * 7 % np.iinfo(dtype).max
    ramp: np.ndarray = values.astype(dtype).reshape(shape)
    return ramp


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_read_image_keeps_the_channel_order_pil_reads(tmp_path: Path, mode: str) -> None:
    channels = {"RGB": (3,), "RGBA": (4,), "L": ()}[mode]
    image = _ramp((24, 32, *channels))
    image[..., 0] = 10  # channels clearly differ
    path = tmp_path / "image.png"
    Image.fromarray(image, mode).save(path)
    decoded = read_image(path)
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(path)))
    assert decoded.dtype == np.uint8


@pytest.mark.parametrize("shape", [(24, 32), (24, 32, 3), (24, 32, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_write_png_then_read_image_round_trips(
    tmp_path: Path, shape: tuple[int, ...], dtype: type[np.unsignedinteger]
) -> None:
    image = _ramp(shape, dtype)
    path = tmp_path / "sub" / "image.png"
    write_png(path, image)
    decoded = read_image(path)
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, image)
    assert [p.name for p in path.parent.iterdir()] == ["image.png"]


def test_write_png_stores_rgb_in_file_order(tmp_path: Path) -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0] = 200  # pure red
    path = tmp_path / "red.png"
    write_png(path, image)
    assert Image.open(path).getpixel((0, 0)) == (200, 0, 0)


def test_read_image_rejects_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    write_png(path, _ramp((24, 32, 3)))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"cannot decode image '.*cut\.png'"):
        read_image(path)


def test_read_image_rejects_empty_and_non_image_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    with pytest.raises(DataError, match=r"cannot decode image '.*empty\.png'"):
        read_image(empty)
    with pytest.raises(DataError, match=r"cannot decode image '.*text\.png'"):
        read_image(text)


def test_read_image_names_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing file '.*nothing\.png'"):
        read_image(tmp_path / "nothing.png")


def test_write_png_rejects_float_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PNG stores uint8 or uint16, got float32"):
        write_png(tmp_path / "x.png", np.zeros((2, 2), np.float32))


def test_write_npy_then_read_npy_round_trips(tmp_path: Path) -> None:
    array = np.random.default_rng(0).random((24, 32, 2)).astype(np.float32)
    path = tmp_path / "a.npy"
    write_npy(path, array)
    loaded = read_npy(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, array)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_read_npy_refuses_pickles(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"cannot load array '.*objects\.npy'"):
        read_npy(path)


def test_read_npy_names_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing file '.*gone\.npy'"):
        read_npy(tmp_path / "gone.npy")


def test_single_channel_takes_one_of_identical_channels() -> None:
    grey = _ramp((24, 32), np.uint16)
    np.testing.assert_array_equal(single_channel(np.dstack([grey] * 3), source=Path("g")), grey)
    np.testing.assert_array_equal(single_channel(grey, source=Path("g")), grey)


def test_single_channel_rejects_colour() -> None:
    colour = _ramp((24, 32, 3))
    with pytest.raises(DataError, match=r"'c\.png' has 3 differing channels"):
        single_channel(colour, source=Path("c.png"))


def test_rgb8_drops_alpha_and_keeps_high_byte_of_16_bit() -> None:
    image = np.zeros((2, 2, 4), np.uint16)
    image[..., 0] = 0x1234
    image[..., 3] = 0xFFFF
    converted = rgb8(image, source=Path("x"))
    assert converted.dtype == np.uint8
    assert converted.shape == (2, 2, 3)
    assert converted[0, 0].tolist() == [0x12, 0, 0]


def test_rgb8_rejects_grey_images() -> None:
    with pytest.raises(DataError, match=r"'g\.png' has shape \(2, 2\); expected a colour image"):
        rgb8(np.zeros((2, 2), np.uint8), source=Path("g.png"))
