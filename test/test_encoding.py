"""Modality encodings: raw robot units -> 3-channel [0, 1] images, and their serialisation."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from unim2_core.data.encoding import EncodingKind, ModalityEncoding, check_group
from unim2_core.errors import ConfigError, EncodingError


@pytest.mark.parametrize("kind", list(EncodingKind))
def test_default_encoding_round_trips_through_dict(kind: EncodingKind) -> None:
    encoding = ModalityEncoding.default(kind)
    assert ModalityEncoding.from_dict(encoding.to_dict()) == encoding


def test_rgb_encoding_scales_to_unit_range() -> None:
    rgb = np.array([[[0, 128, 255]]], dtype=np.uint8)
    out = ModalityEncoding.default("rgb").encode(rgb)
    assert out.dtype == np.float32 and out.shape == (1, 1, 3)
    np.testing.assert_allclose(out[0, 0], [0.0, 128 / 255, 1.0], atol=1e-7)


def test_depth_millimetres_and_metres_encode_identically() -> None:
    encoding = ModalityEncoding.default("depth")  # 0..10 m
    mm = np.array([[0, 2500, 5000, 12000]], dtype=np.uint16)
    metres = np.array([[np.nan, 2.5, 5.0, 12.0]], dtype=np.float32)
    from_mm = encoding.encode(mm)
    from_m = encoding.encode(metres)
    np.testing.assert_allclose(from_mm[0, :, 0], [0.0, 0.25, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(from_mm, from_m, atol=1e-6)
    assert (from_mm[..., 0] == from_mm[..., 2]).all()


def test_depth_invalid_pixels_encode_as_zero() -> None:
    encoding = ModalityEncoding(EncodingKind.DEPTH, "any", low=1.0, high=3.0)
    metres = np.array([[np.inf, -1.0, 0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(encoding.encode(metres)[0, :, 0], [0.0, 0.0, 0.0, 0.5])


@pytest.mark.parametrize(
    "depth",
    [np.zeros((4, 4), np.uint16), np.full((4, 4), np.nan, np.float32)],
    ids=["16UC1-zeros", "32FC1-nan"],
)
def test_depth_without_valid_pixel_is_refused(depth: np.ndarray) -> None:
    with pytest.raises(EncodingError, match="no valid pixel"):
        ModalityEncoding.default("depth").encode(depth, name="depth")


def test_depth_refuses_other_dtypes() -> None:
    with pytest.raises(EncodingError, match="uint16 millimetres"):
        ModalityEncoding.default("depth").encode(np.ones((2, 2), np.int32))


@pytest.mark.parametrize(
    ("dtype", "low", "high", "raw", "expected"),
    [
        ("uint8", 0.0, 255.0, 51, 0.2),
        ("uint16", 7000.0, 9000.0, 7500, 0.25),
        ("float32", -20.0, 60.0, 40.0, 0.75),
    ],
)
def test_thermal_uses_constants_of_its_input_dtype(
    dtype: str, low: float, high: float, raw: float, expected: float
) -> None:
    encoding = ModalityEncoding(EncodingKind.THERMAL, dtype, low=low, high=high)
    out = encoding.encode(np.full((2, 3), raw, dtype=dtype))
    assert out.shape == (2, 3, 3)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_thermal_values_outside_the_range_are_clipped() -> None:
    encoding = ModalityEncoding(EncodingKind.THERMAL, "float32", low=0.0, high=10.0)
    out = encoding.encode(np.array([[-5.0, 50.0]], dtype=np.float32))
    np.testing.assert_allclose(out[0, :, 0], [0.0, 1.0])


def test_thermal_refuses_a_dtype_other_than_trained() -> None:
    encoding = ModalityEncoding.default("thermal", "uint16")
    with pytest.raises(EncodingError, match="expects uint16 input, got uint8"):
        encoding.encode(np.zeros((2, 2), np.uint8), name="thermal")


def test_thermal_float_with_nan_is_refused() -> None:
    encoding = ModalityEncoding.default("thermal", "float32")
    with pytest.raises(EncodingError, match="NaN or Inf"):
        encoding.encode(np.array([[1.0, np.nan]], dtype=np.float32))


def test_aolp_angle_encodes_as_sin_cos_sin() -> None:
    angle = np.array([[0.0, math.pi / 2]], dtype=np.float32)
    out = ModalityEncoding.default("aolp").encode(angle)
    np.testing.assert_allclose(out[0, 0], [0.5, 1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [1.0, 0.5, 1.0], atol=1e-6)


def test_aolp_sin_cos_pairs_match_the_angle_form() -> None:
    angle = np.linspace(0, math.pi, 12, dtype=np.float32).reshape(3, 4)
    pairs = np.stack([np.sin(angle), np.cos(angle)], axis=2).astype(np.float32)
    encoding = ModalityEncoding.default("aolp")
    np.testing.assert_allclose(encoding.encode(pairs), encoding.encode(angle), atol=1e-6)


def test_dolp_uint8_needs_its_own_constants() -> None:
    with pytest.raises(EncodingError, match="expects float32"):
        ModalityEncoding.default("dolp").encode(np.zeros((2, 2), np.uint8))
    out = ModalityEncoding.default("dolp", "uint8").encode(np.full((2, 2), 255, np.uint8))
    np.testing.assert_allclose(out, 1.0)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 4), np.uint8), "HxWx3"),
        (np.zeros((4, 4, 3), np.uint16), "expects uint8"),
    ],
)
def test_rgb_rejects_malformed_arrays(array: np.ndarray, match: str) -> None:
    with pytest.raises(EncodingError, match=match):
        ModalityEncoding.default("rgb").encode(array)


def test_single_channel_kinds_accept_trailing_channel_axis() -> None:
    out = ModalityEncoding.default("nir").encode(np.full((2, 2, 1), 255, np.uint8))
    np.testing.assert_allclose(out, 1.0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"kind": "sonar"}, "unknown encoding kind"),
        ({"kind": "thermal", "input_dtype": "int8"}, "does not take input_dtype"),
        ({"kind": "depth", "low": 5.0, "high": 1.0}, "low < high"),
        ({"kind": "depth", "lo": 0.0}, r"unknown key\(s\) \['lo'\]"),
        ({"kind": "depth", "high": "far"}, "high must be a number"),
        ({"low": 0.0}, "missing key 'kind'"),
    ],
)
def test_from_dict_rejects_bad_settings_naming_the_key(data: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ModalityEncoding.from_dict(data)


def test_check_group_names_missing_modality_and_differing_sizes() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    with pytest.raises(EncodingError, match=r"lacks modality \['depth'\]") as missing:
        check_group({"rgb": rgb}, ["rgb", "depth"])
    assert missing.value.modality == "depth"
    with pytest.raises(EncodingError, match="rgb 4x6, depth 4x5") as differing:
        check_group({"rgb": rgb, "depth": np.ones((4, 5), np.uint16)}, ["rgb", "depth"])
    assert differing.value.modality == "depth"
    assert check_group({"rgb": rgb, "depth": np.ones((4, 6), np.uint16)}, ["rgb", "depth"]) == (
        4,
        6,
    )


@pytest.mark.parametrize(
    ("kind", "array", "match"),
    [
        ("rgb", [[1, 2]], "expected a numpy array"),
        ("rgb", np.zeros((0, 4, 3), np.uint8), "empty array"),
        ("rgb", np.zeros((4, 4), np.uint8), "HxWx3"),
        ("rgb", np.zeros((4, 4, 3), np.uint16), "expects uint8"),
        ("depth", np.zeros((4, 4), np.int32), "uint16 millimetres"),
        ("depth", np.zeros((4, 4), np.uint16), "no valid pixel"),
        ("depth_hha", np.ones((4, 4), np.uint16), "needs the camera's intrinsics"),
        ("thermal", np.zeros((4, 4, 2), np.uint16), "single-channel"),
        ("thermal", np.full((4, 4), np.nan, np.float32), "expects uint8 input, got float32"),
        ("aolp", np.zeros((4, 4, 2), np.float64), r"\(sin, cos\) must be float32"),
        ("aolp", np.full((4, 4, 2), np.nan, np.float32), "NaN or Inf"),
    ],
)
def test_encoding_errors_carry_the_modality_name(kind: str, array: np.ndarray, match: str) -> None:
    with pytest.raises(EncodingError, match=f"^front: .*{match}") as caught:
        ModalityEncoding.default(kind).encode(array, name="front")
    assert caught.value.modality == "front"


def test_unnamed_encoding_errors_carry_the_kind() -> None:
    with pytest.raises(EncodingError, match="^thermal: contains NaN") as caught:
        ModalityEncoding.default("thermal", "float32").encode(np.full((2, 2), np.nan, np.float32))
    assert caught.value.modality == "thermal"


def test_encoding_error_keeps_its_modality_through_pickling() -> None:
    copy = pickle.loads(pickle.dumps(EncodingError("front: bad", modality="front")))
    assert (type(copy), str(copy), copy.modality) == (EncodingError, "front: bad", "front")
    assert EncodingError("camera matrix must have 9 values").modality is None
