"""colorize / overlay against per-pixel references."""

from __future__ import annotations

import numpy as np
import pytest

from unim2_core.runtime.visualize import colorize, overlay

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64])
def test_colorize_paints_each_pixel_with_its_label_colour(dtype: type) -> None:
    palette = RNG.integers(0, 256, (300, 3), dtype=np.uint8)
    labels: np.ndarray = RNG.integers(0, 256 if dtype is np.uint8 else 300, (7, 9)).astype(dtype)
    colored = colorize(labels, palette)
    assert colored.shape == (7, 9, 3) and colored.dtype == np.uint8
    assert colored.flags.c_contiguous
    for y in range(7):
        for x in range(9):
            assert tuple(colored[y, x]) == tuple(palette[labels[y, x]])


def test_colorize_accepts_empty_label_map() -> None:
    assert colorize(np.zeros((0, 4), np.uint8), np.zeros((1, 3), np.uint8)).shape == (0, 4, 3)


@pytest.mark.parametrize(
    ("labels", "palette", "match"),
    [
        (np.array([[0, 3]], np.uint8), np.zeros((3, 3), np.uint8), r"label id 3 has no colour"),
        (np.array([[-1, 0]], np.int32), np.zeros((3, 3), np.uint8), r"label id -1 has no colour"),
        (np.zeros((2, 2, 1), np.uint8), np.zeros((3, 3), np.uint8), r"2-D integer"),
        (np.zeros((2, 2), np.float32), np.zeros((3, 3), np.uint8), r"2-D integer"),
        (np.zeros((2, 2), np.uint8), np.zeros((3, 4), np.uint8), r"palette must be \[N, 3\]"),
        (np.zeros((2, 2), np.uint8), np.zeros((3, 3), np.int32), r"palette must be \[N, 3\]"),
    ],
)
def test_colorize_rejects_bad_input(labels: np.ndarray, palette: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        colorize(labels, palette)


def test_overlay_blends_known_values() -> None:
    rgb = np.full((1, 2, 3), 100, np.uint8)
    colored = np.full((1, 2, 3), 200, np.uint8)
    np.testing.assert_array_equal(overlay(rgb, colored, 0.25), np.full((1, 2, 3), 125))
    np.testing.assert_array_equal(overlay(rgb, colored, 0.0), rgb)
    np.testing.assert_array_equal(overlay(rgb, colored, 1.0), colored)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.77, 1.0])
def test_overlay_matches_float64_reference(alpha: float) -> None:
    rgb = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    colored = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    result = overlay(rgb, colored, alpha)
    exact = (1.0 - alpha) * rgb.astype(np.float64) + alpha * colored.astype(np.float64)
    assert result.dtype == np.uint8 and result.shape == rgb.shape
    not_a_tie = np.abs(exact - np.floor(exact) - 0.5) > 1e-3
    np.testing.assert_array_equal(result[not_a_tie], np.rint(exact)[not_a_tie])
    assert np.abs(result.astype(np.float64) - exact).max() <= 0.5 + 1e-3


@pytest.mark.parametrize(
    ("rgb", "colored", "alpha", "match"),
    [
        (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8), 1.5, r"alpha must be"),
        (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8), -0.1, r"alpha must be"),
        (np.zeros((2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8), 0.5, r"rgb must be HxWx3"),
        (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.int16), 0.5, r"colored must be"),
        (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3, 3), np.uint8), 0.5, r"differ in size"),
    ],
)
def test_overlay_rejects_bad_input(
    rgb: np.ndarray, colored: np.ndarray, alpha: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        overlay(rgb, colored, alpha)
