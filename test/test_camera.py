"""Camera intrinsics (parsing, refitting to views) and raw depth -> metres."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unim2_core.data.camera import CameraIntrinsics, metric_depth
from unim2_core.data.preprocess import centre_crop_box, shorter_side_size
from unim2_core.errors import ConfigError, EncodingError

NYU = CameraIntrinsics(518.857901, 519.469611, 325.582449, 253.736166, 640, 480)


def _project(camera: CameraIntrinsics, point: np.ndarray) -> tuple[float, float]:
    return (
        camera.fx * point[0] / point[2] + camera.cx,
        camera.fy * point[1] / point[2] + camera.cy,
    )


def test_intrinsics_round_trip_through_list() -> None:
    assert CameraIntrinsics.from_values(NYU.to_list()) == NYU


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([1.0, 2.0, 3.0], r"cam\.k must be a list \[fx, fy, cx, cy, width, height\]"),
        ("518 519 325 253 640 480", r"cam\.k must be a list"),
        ([500.0, 500.0, "x", 240.0, 640, 480], r"cam\.k must hold numbers, got 'x'"),
        ([500.0, 500.0, True, 240.0, 640, 480], r"cam\.k must hold numbers, got True"),
        ([500.0, 500.0, math.nan, 240.0, 640, 480], r"cam\.k must be finite"),
        ([0.0, 500.0, 320.0, 240.0, 640, 480], r"cam\.k: focal lengths must be positive"),
        ([500.0, 500.0, 320.0, 240.0, 640.5, 480], r"cam\.k: width and height must be"),
        ([500.0, 500.0, 320.0, 240.0, 640, 0], r"cam\.k: width and height must be"),
    ],
)
def test_intrinsics_refuse_bad_values(values: list[object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CameraIntrinsics.from_values(values, where="cam.k")


def test_intrinsics_from_camera_matrix() -> None:
    k = [500.0, 0.0, 320.5, 0.0, 501.0, 240.5, 0.0, 0.0, 1.0]
    assert CameraIntrinsics.from_matrix(k, 640, 480) == CameraIntrinsics(
        500.0, 501.0, 320.5, 240.5, 640, 480
    )


def test_intrinsics_refuse_uncalibrated_camera_matrix() -> None:
    with pytest.raises(EncodingError, match=r"no positive focal lengths .* calibrated"):
        CameraIntrinsics.from_matrix([0.0] * 9, 640, 480)
    with pytest.raises(EncodingError, match="must have 9 values, got 4"):
        CameraIntrinsics.from_matrix([1.0] * 4, 640, 480)
    with pytest.raises(EncodingError, match="empty image size 0 x 480"):
        CameraIntrinsics.from_matrix([500.0, 0, 320, 0, 500.0, 240, 0, 0, 1], 0, 480)


def test_fitted_intrinsics_of_a_half_size_image_project_points_to_half_coordinates() -> None:
    half = NYU.fitted(240, 320)
    point = np.array([0.4, -0.3, 2.5])
    u, v = _project(NYU, point)
    u2, v2 = _project(half, point)
    # pixel centres: full-resolution pixel u covers [u - 0.5, u + 0.5], half-res (u + 0.5) / 2 - 0.5
    assert u2 == pytest.approx((u + 0.5) / 2 - 0.5)
    assert v2 == pytest.approx((v + 0.5) / 2 - 0.5)
    assert (half.width, half.height) == (320, 240)


def test_fitted_intrinsics_follow_the_paper_protocol_view() -> None:
    """Resize the shorter side to 320 and centre-crop 320 x 320, as paper_protocol_view does."""
    view = NYU.fitted(320, 320)
    resized_h, resized_w = shorter_side_size(480, 640, 320)
    top, left = centre_crop_box(resized_h, resized_w, 320)
    scale = 320 / 480
    point = np.array([-0.2, 0.1, 1.7])
    u, v = _project(NYU, point)
    u_view, v_view = _project(view, point)
    assert u_view == pytest.approx((u + 0.5) * scale - 0.5 - left, abs=0.5)
    assert v_view == pytest.approx((v + 0.5) * scale - 0.5 - top, abs=1e-9)


def test_fitted_intrinsics_of_the_same_size_are_unchanged() -> None:
    assert NYU.fitted(480, 640) is NYU


def test_metric_depth_reads_millimetres_and_metres_alike() -> None:
    mm = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    metres = np.array([[np.nan, 1.0], [2.5, 65.535]], dtype=np.float32)
    depth_mm, valid_mm = metric_depth(mm)
    depth_m, valid_m = metric_depth(metres)
    np.testing.assert_array_equal(valid_mm, [[False, True], [True, True]])
    np.testing.assert_array_equal(valid_mm, valid_m)
    np.testing.assert_allclose(depth_mm, depth_m, rtol=1e-6)
    assert depth_m[0, 0] == 0.0


def test_metric_depth_treats_negative_and_infinite_metres_as_invalid() -> None:
    depth, valid = metric_depth(np.array([[-1.0, np.inf, 0.0, 3.0]], dtype=np.float32))
    np.testing.assert_array_equal(valid, [[False, False, False, True]])
    np.testing.assert_array_equal(depth, [[0.0, 0.0, 0.0, 3.0]])


def test_metric_depth_refuses_other_dtypes_and_shapes() -> None:
    with pytest.raises(EncodingError, match="front: depth must be uint16 .* got int32"):
        metric_depth(np.ones((2, 2), dtype=np.int32), name="front")
    with pytest.raises(EncodingError, match=r"front: expected a single-channel HxW depth image"):
        metric_depth(np.ones((2, 2, 3), dtype=np.uint16), name="front")
