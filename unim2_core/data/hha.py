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
plane of a window is fitted in inverse depth (see ``surface_normals``: the same planes, each
residual the published one divided by z, nearly constant within a window), which makes the sums
separable filters that float32 computes exactly; the gravity normals are fitted on every 4th
pixel in each direction with a 5x5 window (the same 21-pixel extent); the output is float, not
rounded to 8 bits. These keep one 640x480 frame near 30 ms of one CPU core (BENCHMARKS.md).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from unim2_core.data.camera import CameraIntrinsics, metric_depth
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


def _plane_normals(
    depth_m: np.ndarray, valid: np.ndarray, intrinsics: CameraIntrinsics, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unnormalised window plane normals (x, y, z components), facing away from the camera.

    See ``surface_normals``; the components come separately so the angle channel can take its
    cosine without building the [H, W, 3] array.
    """
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    ones = np.ones(2 * radius + 1, dtype=np.float32)
    mask = valid.astype(np.float32)
    inverse = np.zeros_like(depth_m)
    np.divide(np.float32(1.0), depth_m, out=inverse, where=valid)
    pair = cv2.merge([mask, inverse])  # [H, W, 2]: both sums of one kernel in one pass

    def window_sum(image: np.ndarray, kernel_x: np.ndarray, kernel_y: np.ndarray) -> np.ndarray:
        out: np.ndarray = cv2.sepFilter2D(
            image, cv2.CV_32F, kernel_x, kernel_y, borderType=cv2.BORDER_CONSTANT
        )
        return out

    sums = window_sum(pair, ones, ones)  # (count, sum 1/z)
    sums_u = window_sum(pair, offsets, ones)  # (sum du, sum du / z)
    sums_v = window_sum(pair, ones, offsets)
    sum_uu = window_sum(mask, offsets * offsets, ones)
    sum_vv = window_sum(mask, ones, offsets * offsets)
    per_pixel = np.float32(1.0) / np.maximum(sums[..., 0], np.float32(1e-6))
    mean_w = sums[..., 1] * per_pixel
    tiny = np.float32(1e-6)

    def slope(sums_d: np.ndarray, sum_dd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Least-squares d(1/z)/d(pixel offset) along one axis, and the window's mean offset."""
        mean_d = sums_d[..., 0] * per_pixel
        variance = sum_dd * per_pixel
        variance -= mean_d * mean_d
        covariance = sums_d[..., 1] * per_pixel
        covariance -= mean_d * mean_w
        covariance /= np.maximum(variance, tiny)
        return covariance, mean_d

    slope_u, mean_u = slope(sums_u, sum_uu)
    slope_v, mean_v = slope(sums_v, sum_vv)
    height, width = depth_m.shape
    # 1/z = n . r with r = (x', y', 1): n = (d/dx', d/dy', 1/z - n_x x' - n_y y') at the centroid
    normal_x = slope_u * np.float32(intrinsics.fx)
    normal_y = slope_v * np.float32(intrinsics.fy)
    centre_x = (np.arange(width, dtype=np.float32) - np.float32(intrinsics.cx))[None, :]
    centre_y = (np.arange(height, dtype=np.float32) - np.float32(intrinsics.cy))[:, None]
    normal_z = mean_w - slope_u * (mean_u + centre_x) - slope_v * (mean_v + centre_y)
    return normal_x, normal_y, normal_z


def surface_normals(
    depth_m: np.ndarray, valid: np.ndarray, intrinsics: CameraIntrinsics, radius: int
) -> np.ndarray:
    """Unit normals [H, W, 3] of the planes fitted in (2 radius + 1)^2 windows, towards the camera.

    A plane ``n . p = 1`` seen through the ray ``r = ((u - cx) / fx, (v - cy) / fy, 1)`` of a
    pixel is the plane ``1 / z = n . r`` in inverse depth, which is linear in the pixel
    coordinates. So the window's least-squares plane is the least-squares fit of
    ``1 / z = a du + b dv + c`` over its valid pixels, whose sums are separable filters of the
    inverse-depth image (float32 stays exact here: the offsets are centred, no large moments
    cancel). The published residual ``n . p - 1`` is z times this one, and z is nearly
    constant within a window; the cross term of du and dv, zero in a window without holes, is
    neglected.

    Normals are NaN at invalid pixels.
    """
    normal_x, normal_y, normal_z = _plane_normals(depth_m, valid, intrinsics, radius)
    normals = np.stack([normal_x, normal_y, normal_z], axis=-1)
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
            weight = (alignment < sin_t).astype(np.float64) - (alignment > cos_t)
            if not weight.any():
                return gravity
            scatter = (flat * weight[:, None]).T @ flat  # sum_W n n^T - sum_F n n^T
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
        raise EncodingError(f"{name}: depth image has no valid pixel", modality=name)
    camera = intrinsics.fitted(*depth_m.shape)
    height, width = depth_m.shape

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

    # Channels are written as [3, H, W] planes (contiguous, fast) and transposed at the end.
    planes = np.empty((3, height, width), dtype=np.float32)
    np.maximum(depth_m, np.float32(MIN_DISPARITY_DEPTH_M), out=planes[0])
    np.divide(np.float32(DISPARITY_SCALE_M), planes[0], out=planes[0])

    # Height: -gravity . p with p = z r, r = ((u - cx) / fx, (v - cy) / fy, 1), in metres.
    ray_x = (np.arange(width, dtype=np.float32) - np.float32(camera.cx)) / np.float32(camera.fx)
    ray_y = (np.arange(height, dtype=np.float32) - np.float32(camera.cy)) / np.float32(camera.fy)
    down_along_ray = (gravity[0] * ray_x)[None, :] + (gravity[1] * ray_y + gravity[2])[:, None]
    up = planes[1]
    np.multiply(depth_m, down_along_ray, out=up)
    np.negative(up, out=up)
    lowest = float(up[valid].min())
    if lowest > -FLOOR_VISIBLE_DROP_M:
        lowest = -ASSUMED_FLOOR_DROP_M
    up -= np.float32(lowest)
    up *= np.float32(_CM_PER_M)

    normal_x, normal_y, normal_z = _plane_normals(depth_m, valid, camera, ANGLE_NORMAL_RADIUS)
    # cosine with "up" (-gravity) of the normal facing the camera (-n): n . gravity / |n|
    cosine = normal_x * gravity[0]
    cosine += normal_y * gravity[1]
    cosine += normal_z * gravity[2]
    normal_x *= normal_x
    normal_x += normal_y * normal_y
    normal_x += normal_z * normal_z
    length = np.sqrt(normal_x, out=normal_x)
    degenerate = length <= 0
    np.divide(cosine, length, out=cosine, where=~degenerate)
    np.clip(cosine, -1.0, 1.0, out=cosine)
    angle = np.arccos(cosine, out=planes[2])
    angle *= np.float32(180.0 / math.pi)
    angle += np.float32(ANGLE_OFFSET_DEG)
    angle[degenerate] = 180.0 + ANGLE_OFFSET_DEG

    np.clip(planes, 0.0, 255.0, out=planes)
    planes *= valid
    hha: np.ndarray = np.ascontiguousarray(planes.transpose(1, 2, 0))  # [H, W, 3]
    return hha
