"""Online HHA: metric depth + intrinsics -> (horizontal disparity, height, angle with gravity).

HHA (Gupta, Girshick, Arbelaez and Malik, "Learning Rich Features from RGB-D Images for Object
Detection and Segmentation", ECCV 2014) is how the NYU benchmarks feed depth to networks made
for colour images. Computing it here, from the raw depth of any calibrated camera, lets the
trainer (from depth files) and the node (from a depth topic + ``camera_info``) produce the same
input, so a model trained on NYU's HHA runs on a robot's raw depth.

The steps follow the published algorithm (the authors' ``saveHHA`` / ``processDepthImage``):

1. Back-project the depth to points in the camera frame (x right, y down, z forward).
2. Surface normals: in a square window around every pixel, the least-squares plane
   ``n . p = 1`` through the window's valid points, oriented towards the camera. A 7x7 window
   (radius 3) gives the normals of the angle channel, a 21x21 window those of the gravity
   estimate.
3. Gravity: starting from the camera's y axis, repeatedly pick the normals nearly parallel to
   the current estimate (floors, ceilings, table tops: within 45 degrees, then 15) and those
   nearly perpendicular to it (walls), and take the direction that is most parallel to the first
   set and most perpendicular to the second: the eigenvector of the smallest eigenvalue of
   ``sum_W n n^T - sum_F n n^T`` (5 iterations per threshold; when that eigenvalue is tied,
   as with only walls of one orientation in view, the solution nearest the current estimate).
4. Channels, in the units of the published 8-bit images:
   - horizontal disparity ``31000 / z`` with z in centimetres, z clamped to at least 100 cm;
   - height above the lowest point, in centimetres, measured along gravity; when the lowest
     point lies less than 90 cm below the camera (no floor in view) the floor is assumed 130 cm
     below it;
   - the angle between the surface normal and the upward vertical, in degrees, plus 38
     (= 128 - 90): a floor reads 38, a wall 128, a ceiling 218 (the convention of the NYU HHA
     images the benchmarks use; measured on them, see BENCHMARKS.md).

   Each channel is clipped to [0, 255]; invalid depth pixels read 0 in all three channels, and
   a valid pixel whose window determines no plane reads the published 180 degrees.

Departures from the published code: pixel coordinates are 0-based (ROS ``camera_info``); the
plane of a window is fitted in inverse depth (see ``surface_normals``: the same plane family,
residuals weighted by 1/z instead of z, nearly constant within a window), which makes the sums
separable filters that float32 computes exactly; the gravity normals are fitted on every 4th
pixel in each direction with a 5x5 window (the same 21-pixel extent); the output is float, not
rounded to 8 bits. These keep one 640x480 frame within a few tens of milliseconds on one CPU core.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from unim2_core.camera import CameraIntrinsics, metric_depth
from unim2_core.errors import EncodingError

ANGLE_NORMAL_RADIUS = 3
"""Half-size of the plane-fit window of the angle channel's normals (7x7)."""

GRAVITY_STRIDE = 4
"""Pixel stride of the depth the gravity estimate fits its normals on."""

GRAVITY_WINDOW_RADIUS = 2
"""Half-size, in strided pixels, of the gravity normals' window (5x5 at stride 4, i.e. the
published 21x21 full-resolution window)."""

GRAVITY_STAGES: tuple[tuple[float, int], ...] = ((45.0, 5), (15.0, 5))
"""(angle threshold in degrees, iterations) of the gravity estimate, coarse to fine."""

TIE_TOLERANCE = 1e-4
"""Eigenvalues of the gravity scatter within this (per normal) of the smallest count as tied."""

DISPARITY_SCALE_M = 310.0
"""Disparity channel = this / depth in metres (the published 31000 / depth in cm)."""

MIN_DISPARITY_DEPTH_M = 1.0
"""Depths below this are clamped before taking the disparity (the published 100 cm)."""

FLOOR_VISIBLE_DROP_M = 0.9
"""If the lowest point is less than this below the camera, the floor is taken as not in view."""

ASSUMED_FLOOR_DROP_M = 1.3
"""Floor distance below the camera assumed when it is not in view."""

ANGLE_OFFSET_DEG = 38.0
"""Added to the normal-gravity angle (128 - 90 in the published code)."""

_CM_PER_M = 100.0
_DOWN = np.array([0.0, 1.0, 0.0])


def back_project(depth_m: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Points of every pixel in the camera frame, float32 [H, W, 3] in metres."""
    height, width = depth_m.shape
    u = (np.arange(width, dtype=np.float32) - np.float32(intrinsics.cx)) / np.float32(intrinsics.fx)
    v = (np.arange(height, dtype=np.float32) - np.float32(intrinsics.cy)) / np.float32(
        intrinsics.fy
    )
    points = np.empty((height, width, 3), dtype=np.float32)
    np.multiply(depth_m, u[None, :], out=points[..., 0])
    np.multiply(depth_m, v[:, None], out=points[..., 1])
    points[..., 2] = depth_m
    return points


def surface_normals(
    depth_m: np.ndarray, valid: np.ndarray, intrinsics: CameraIntrinsics, radius: int
) -> np.ndarray:
    """Unit normals [H, W, 3] of the planes fitted in (2 radius + 1)^2 windows, towards the camera.

    A plane ``n . p = 1`` seen through the ray ``r = ((u - cx) / fx, (v - cy) / fy, 1)`` of a
    pixel is the plane ``1 / z = n . r`` in inverse depth, which is linear in the pixel
    coordinates. So the window's least-squares plane is the least-squares fit of
    ``1 / z = a du + b dv + c`` over its valid pixels, whose sums are separable filters of the
    inverse-depth image (float32 stays exact here: the offsets are centred, no large moments
    cancel). The published fit weighs residuals by z, nearly constant within a window; the
    cross term of du and dv, zero in a window without holes, is neglected.

    Normals are NaN at invalid pixels.
    """
    size = 2 * radius + 1
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    ones = np.ones(size, dtype=np.float32)
    mask = valid.astype(np.float32)
    inverse = np.divide(np.float32(1.0), depth_m, out=np.zeros_like(depth_m), where=valid)

    def window_sum(image: np.ndarray, kernel_x: np.ndarray, kernel_y: np.ndarray) -> np.ndarray:
        out: np.ndarray = cv2.sepFilter2D(
            image, cv2.CV_32F, kernel_x, kernel_y, borderType=cv2.BORDER_CONSTANT
        )
        return out

    count = np.maximum(window_sum(mask, ones, ones), np.float32(1e-6))
    sum_w = window_sum(inverse, ones, ones)
    mean_u = window_sum(mask, offsets, ones) / count
    mean_v = window_sum(mask, ones, offsets) / count
    mean_w = sum_w / count
    var_u = window_sum(mask, offsets * offsets, ones) / count - mean_u * mean_u
    var_v = window_sum(mask, ones, offsets * offsets) / count - mean_v * mean_v
    cov_wu = window_sum(inverse, offsets, ones) / count - mean_u * mean_w
    cov_wv = window_sum(inverse, ones, offsets) / count - mean_v * mean_w
    tiny = np.float32(1e-6)
    slope_x = cov_wu / np.maximum(var_u, tiny) * np.float32(intrinsics.fx)  # d(1/z) / dx'
    slope_y = cov_wv / np.maximum(var_v, tiny) * np.float32(intrinsics.fy)  # d(1/z) / dy'
    height, width = depth_m.shape
    ray_x = (np.arange(width, dtype=np.float32)[None, :] + mean_u - np.float32(intrinsics.cx)) / (
        np.float32(intrinsics.fx)
    )
    ray_y = (np.arange(height, dtype=np.float32)[:, None] + mean_v - np.float32(intrinsics.cy)) / (
        np.float32(intrinsics.fy)
    )
    normals = np.empty((height, width, 3), dtype=np.float32)
    normals[..., 0] = slope_x
    normals[..., 1] = slope_y
    normals[..., 2] = mean_w - slope_x * ray_x - slope_y * ray_y
    length = np.sqrt(np.einsum("hwc,hwc->hw", normals, normals))
    normals /= -np.maximum(length, np.float32(1e-12))[..., None]  # n . p = 1 faces away
    normals[~valid] = np.nan
    return normals


def estimate_gravity(
    normals: np.ndarray, stages: tuple[tuple[float, int], ...] = GRAVITY_STAGES
) -> np.ndarray:
    """The downward gravity direction in the camera frame (unit 3-vector) from surface normals.

    Args:
        normals: Unit normals [..., 3]; NaN entries are ignored.
        stages: (angle threshold in degrees, iterations), applied in order.

    Returns:
        The estimate, float64; the camera's y axis (straight down) when no normal qualifies.
    """
    flat = normals.reshape(-1, 3)
    flat = flat[np.isfinite(flat).all(axis=1)].astype(np.float64)
    gravity = _DOWN.copy()
    for threshold_deg, iterations in stages:
        cos_t = math.cos(math.radians(threshold_deg))
        sin_t = math.sin(math.radians(threshold_deg))
        for _ in range(iterations):
            alignment = np.abs(flat @ gravity)
            parallel = flat[alignment > cos_t]
            perpendicular = flat[alignment < sin_t]
            if len(parallel) + len(perpendicular) == 0:
                return gravity
            scatter = perpendicular.T @ perpendicular - parallel.T @ parallel
            values, vectors = np.linalg.eigh(scatter)
            # Ties (e.g. only walls of one orientation in view) leave a plane of solutions:
            # keep the one nearest the current estimate instead of an arbitrary one.
            tied = vectors[:, values <= values[0] + TIE_TOLERANCE * len(flat)]
            candidate = tied @ (tied.T @ gravity)
            norm = float(np.linalg.norm(candidate))
            if norm < 1e-9:
                candidate, norm = vectors[:, 0], 1.0
            candidate = candidate / norm
            gravity = candidate * (1.0 if candidate @ gravity >= 0 else -1.0)
    return gravity


def hha_from_depth(
    array: np.ndarray, intrinsics: CameraIntrinsics, *, name: str = "depth"
) -> np.ndarray:
    """The HHA image of one raw depth frame: float32 [H, W, 3] in published 8-bit units.

    Args:
        array: uint16 millimetres (0 = invalid) or float32 metres (NaN / Inf / <= 0 invalid).
        intrinsics: The depth image's intrinsics; refitted (see
            ``CameraIntrinsics.fitted``) when they refer to another image size.
        name: The modality's name, used in error messages.

    Raises:
        EncodingError: wrong dtype or shape, or no valid pixel.
    """
    depth_m, valid = metric_depth(array, name=name)
    if not valid.any():
        raise EncodingError(f"{name}: depth image has no valid pixel")
    camera = intrinsics.fitted(*depth_m.shape)
    points = back_project(depth_m, camera)

    stride = GRAVITY_STRIDE
    coarse = CameraIntrinsics(
        camera.fx / stride,
        camera.fy / stride,
        camera.cx / stride,
        camera.cy / stride,
        -(-camera.width // stride),
        -(-camera.height // stride),
    )
    gravity_normals = surface_normals(
        depth_m[::stride, ::stride], valid[::stride, ::stride], coarse, GRAVITY_WINDOW_RADIUS
    )
    gravity = estimate_gravity(gravity_normals).astype(np.float32)

    hha = np.empty((*depth_m.shape, 3), dtype=np.float32)
    np.divide(
        np.float32(DISPARITY_SCALE_M),
        np.maximum(depth_m, np.float32(MIN_DISPARITY_DEPTH_M)),
        out=hha[..., 0],
    )

    up = -(points @ gravity)  # [H, W] metres along -gravity
    lowest = float(up[valid].min())
    if lowest > -FLOOR_VISIBLE_DROP_M:
        lowest = -ASSUMED_FLOOR_DROP_M
    hha[..., 1] = (up - np.float32(lowest)) * np.float32(_CM_PER_M)

    normals = surface_normals(depth_m, valid, camera, ANGLE_NORMAL_RADIUS)
    cosine = np.clip(normals @ -gravity, -1.0, 1.0)
    angle = np.degrees(np.arccos(cosine)) + np.float32(ANGLE_OFFSET_DEG)
    hha[..., 2] = np.nan_to_num(angle, nan=180.0 + ANGLE_OFFSET_DEG)

    np.clip(hha, 0.0, 255.0, out=hha)
    hha[~valid] = 0.0
    return hha
