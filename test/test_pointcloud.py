"""Labelled points from depth + colour + labels + intrinsics (ROS-free), and their packing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.errors import EncodingError
from unim2_core.runtime.pointcloud import (
    POINT_DTYPE,
    POINT_STEP,
    labelled_points,
    pack_rgb,
    unpack_rgb,
)

CAMERA = CameraIntrinsics(100.0, 110.0, 3.5, 2.5, 8, 6)


def _frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    depth_mm = rng.integers(500, 4000, size=(6, 8)).astype(np.uint16)
    rgb = rng.integers(0, 256, size=(6, 8, 3)).astype(np.uint8)
    labels = rng.integers(0, 300, size=(6, 8)).astype(np.uint16)
    return depth_mm, rgb, labels


def _expected(depth_m: float, u: int, v: int) -> tuple[float, float, float]:
    return (
        (u - CAMERA.cx) * depth_m / CAMERA.fx,
        (v - CAMERA.cy) * depth_m / CAMERA.fy,
        depth_m,
    )


def test_point_record_layout_is_pcl_xyzrgbl_packed() -> None:
    assert POINT_DTYPE.itemsize == POINT_STEP == 20
    layout = {
        name: (POINT_DTYPE.fields[name][1], POINT_DTYPE.fields[name][0].str)
        for name in POINT_DTYPE.names
    }
    native = "<" if np.little_endian else ">"
    assert layout == {
        "x": (0, f"{native}f4"),
        "y": (4, f"{native}f4"),
        "z": (8, f"{native}f4"),
        "rgb": (12, f"{native}f4"),
        "label": (16, f"{native}u4"),
    }


def test_rgb_is_packed_as_the_float_bits_of_0x00rrggbb() -> None:
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [18, 52, 86]], dtype=np.uint8)
    packed = pack_rgb(rgb)
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(
        packed.view(np.uint32), [0x00FF0000, 0x0000FF00, 0x000000FF, 0x00123456]
    )
    np.testing.assert_array_equal(unpack_rgb(packed), rgb)


def test_every_valid_pixel_becomes_a_point_with_its_colour_and_label() -> None:
    depth_mm, rgb, labels = _frame()
    points = labelled_points(depth_mm, rgb, labels, CAMERA)
    assert points.dtype == POINT_DTYPE and points.shape == (48,)
    for index, (v, u) in enumerate(np.ndindex(6, 8)):
        x, y, z = _expected(depth_mm[v, u] / 1000.0, u, v)
        record = points[index]
        assert (record["x"], record["y"], record["z"]) == pytest.approx((x, y, z), rel=1e-6)
        assert record["label"] == labels[v, u]
    np.testing.assert_array_equal(unpack_rgb(points["rgb"]), rgb.reshape(-1, 3))


def test_invalid_depth_is_skipped_in_millimetres_and_metres() -> None:
    depth_mm, rgb, labels = _frame()
    depth_mm[0, 0] = 0
    depth_mm[5, 7] = 0
    metres = depth_mm.astype(np.float32) / 1000
    metres[0, 0] = np.nan
    metres[5, 7] = -1.0
    metres[2, 2] = np.inf
    depth_mm[2, 2] = 0
    from_mm = labelled_points(depth_mm, rgb, labels, CAMERA)
    from_m = labelled_points(metres, rgb, labels, CAMERA)
    assert len(from_mm) == len(from_m) == 45
    for name in ("x", "y", "z"):
        np.testing.assert_allclose(from_mm[name], from_m[name], rtol=1e-6)
        assert np.isfinite(from_m[name]).all()
    np.testing.assert_array_equal(from_mm["label"], from_m["label"])
    kept = depth_mm.reshape(-1) > 0
    np.testing.assert_array_equal(from_mm["label"], labels.reshape(-1)[kept])


def test_stride_keeps_every_nth_pixel_at_its_full_resolution_position() -> None:
    depth_mm, rgb, labels = _frame()
    points = labelled_points(depth_mm, rgb, labels, CAMERA, stride=3)
    kept = [(v, u) for v in range(0, 6, 3) for u in range(0, 8, 3)]
    assert len(points) == len(kept) == 6
    for record, (v, u) in zip(points, kept, strict=True):
        x, y, z = _expected(depth_mm[v, u] / 1000.0, u, v)
        assert (record["x"], record["y"], record["z"]) == pytest.approx((x, y, z), rel=1e-6)
        assert record["label"] == labels[v, u]


def test_max_range_is_the_distance_from_the_camera_centre() -> None:
    depth = np.full((6, 8), 2.0, dtype=np.float32)
    rgb = np.zeros((6, 8, 3), np.uint8)
    labels = np.zeros((6, 8), np.uint8)
    wide = CameraIntrinsics(2.0, 2.0, 3.5, 2.5, 8, 6)  # corner rays far off the axis
    points = labelled_points(depth, rgb, labels, wide, max_range=3.0)
    distances = np.sqrt(points["x"] ** 2 + points["y"] ** 2 + points["z"] ** 2)
    assert distances.max() <= 3.0
    u, v = np.meshgrid(np.arange(8), np.arange(6))
    all_distances = 2.0 * np.sqrt(1 + ((u - 3.5) / 2) ** 2 + ((v - 2.5) / 2) ** 2)
    assert len(points) == int((all_distances <= 3.0).sum()) > 0
    assert len(points) < 48


def test_intrinsics_of_another_resolution_are_refitted() -> None:
    depth_mm, rgb, labels = _frame()
    double = CameraIntrinsics(200.0, 220.0, 7.5, 5.5, 16, 12)  # CAMERA at twice the size
    np.testing.assert_allclose(
        labelled_points(depth_mm, rgb, labels, double)["x"],
        labelled_points(depth_mm, rgb, labels, CAMERA)["x"],
        rtol=1e-6,
    )


def test_all_invalid_depth_gives_an_empty_cloud() -> None:
    _, rgb, labels = _frame()
    points = labelled_points(np.zeros((6, 8), np.uint16), rgb, labels, CAMERA)
    assert points.shape == (0,) and points.dtype == POINT_DTYPE


def test_inputs_of_different_sizes_are_refused() -> None:
    depth_mm, rgb, labels = _frame()
    with pytest.raises(EncodingError, match=r"differ in size .* depth 8x6, rgb 4x6, labels 8x6"):
        labelled_points(depth_mm, rgb[:, :4], labels, CAMERA)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stride": 0}, "stride must be an integer >= 1, got 0"),
        ({"stride": 1.5}, "stride must be an integer >= 1, got 1.5"),
        ({"max_range": 0.0}, "max_range must be positive, got 0.0"),
        ({"max_range": math.nan}, "max_range must be positive, got nan"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, float], match: str) -> None:
    depth_mm, rgb, labels = _frame()
    with pytest.raises(ValueError, match=match):
        labelled_points(depth_mm, rgb, labels, CAMERA, **kwargs)  # type: ignore[arg-type]


def test_bad_depth_and_colour_arrays_are_refused() -> None:
    depth_mm, rgb, labels = _frame()
    with pytest.raises(EncodingError, match="front: depth must be uint16 .* got int32") as depth:
        labelled_points(depth_mm.astype(np.int32), rgb, labels, CAMERA, name="front")
    assert depth.value.modality == "front"
    with pytest.raises(
        EncodingError, match=r"rgb: expected uint8 HxWx3 colours, got float32"
    ) as colour:
        labelled_points(depth_mm, rgb.astype(np.float32), labels, CAMERA)
    assert colour.value.modality == "rgb"
