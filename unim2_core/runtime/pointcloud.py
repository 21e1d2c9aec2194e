"""Labelled point clouds: depth + colour + labels + intrinsics -> one record per 3-D point.

The record layout is the ROS ``sensor_msgs/PointCloud2`` one that ``sensor_msgs_py.point_cloud2``
builds from a field list (a numpy structured dtype with the fields' names, formats and
offsets, ``itemsize`` = ``point_step``), with the fields of PCL's ``PointXYZRGBL`` packed
tightly:

======  ======  =========  ====================================================
field   offset  datatype   meaning
======  ======  =========  ====================================================
x       0       float32    metres, camera optical frame (x right)
y       4       float32    metres (y down)
z       8       float32    metres (z forward, the depth)
rgb     12      float32    the bits of the uint32 ``0x00RRGGBB``, as PCL packs it
label   16      uint32     the label id of the pixel (as on ``~/labels``)
======  ======  =========  ====================================================

``POINT_STEP`` = 20 bytes, native byte order. Only pixels with valid depth (16UC1 > 0, 32FC1
finite and > 0) within ``max_range`` become points, so every record is finite (a dense cloud).
ROS-free: ``unim2_ros.point_cloud`` wraps the records in a message.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from unim2_core.data.camera import CameraIntrinsics, metric_depth
from unim2_core.errors import EncodingError


class PointFieldSpec(NamedTuple):
    """One field of the record: its name, byte offset and numpy type (count is always 1)."""

    name: str
    offset: int
    dtype: np.dtype[np.generic]


POINT_FIELDS: tuple[PointFieldSpec, ...] = (
    PointFieldSpec("x", 0, np.dtype(np.float32)),
    PointFieldSpec("y", 4, np.dtype(np.float32)),
    PointFieldSpec("z", 8, np.dtype(np.float32)),
    PointFieldSpec("rgb", 12, np.dtype(np.float32)),
    PointFieldSpec("label", 16, np.dtype(np.uint32)),
)
"""The fields of a labelled point, in order."""

POINT_STEP = 20
"""Bytes per point."""

POINT_DTYPE = np.dtype(
    {
        "names": [field.name for field in POINT_FIELDS],
        "formats": [field.dtype for field in POINT_FIELDS],
        "offsets": [field.offset for field in POINT_FIELDS],
        "itemsize": POINT_STEP,
    }
)
"""The structured dtype of one point (what ``sensor_msgs_py`` builds from the fields)."""


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Colours [..., 3] uint8 RGB -> float32 [...] holding the bits of ``0x00RRGGBB``."""
    quads = np.zeros((*rgb.shape[:-1], 4), dtype=np.uint8)  # little-endian bytes B, G, R, 0
    quads[..., 0] = rgb[..., 2]
    quads[..., 1] = rgb[..., 1]
    quads[..., 2] = rgb[..., 0]
    packed = quads.view("<u4")[..., 0].astype(np.uint32)  # native order, same value
    floats: np.ndarray = packed.view(np.float32)
    return floats


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: float32 [...] -> uint8 [..., 3] RGB."""
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    channels = [(bits >> shift) & 0xFF for shift in (16, 8, 0)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def labelled_points(
    depth: np.ndarray,
    rgb: np.ndarray,
    labels: np.ndarray,
    intrinsics: CameraIntrinsics,
    *,
    stride: int = 1,
    max_range: float = math.inf,
    name: str = "depth",
) -> np.ndarray:
    """The labelled points of one frame, a 1-D array of :data:`POINT_DTYPE` records.

    Args:
        depth: uint16 HxW millimetres (0 = invalid) or float32 HxW metres (NaN / Inf / <= 0
            invalid), registered to the colour image.
        rgb: uint8 HxWx3 RGB colours.
        labels: HxW label ids (any unsigned integer type up to 32 bits).
        intrinsics: The depth image's intrinsics (refitted to its size, see
            ``CameraIntrinsics.fitted``, when they refer to another one).
        stride: Keep every ``stride``-th pixel in each direction (1: all pixels).
        max_range: Drop points farther than this from the camera centre, in metres.
        name: The depth modality's name, used in error messages.

    Points come in row-major pixel order of the kept pixels.

    Raises:
        ValueError: ``stride`` < 1 or ``max_range`` not positive.
        EncodingError: the depth dtype or shape is unusable, or the three images differ in
            size; the message names the sizes.
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if not max_range > 0:
        raise ValueError(f"max_range must be positive, got {max_range!r}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise EncodingError(
            f"rgb: expected uint8 HxWx3 colours, got {rgb.dtype} {rgb.shape}", modality="rgb"
        )
    sizes = {"depth": depth.shape[:2], "rgb": rgb.shape[:2], "labels": labels.shape[:2]}
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{key} {w}x{h}" for key, (h, w) in sizes.items())
        raise EncodingError(f"point cloud inputs differ in size (width x height): {listed}")
    height, width = depth.shape[:2]
    camera = intrinsics.fitted(height, width)
    z, valid = metric_depth(depth[::stride, ::stride], name=name)
    ray_x = (np.arange(0, width, stride, dtype=np.float32) - np.float32(camera.cx)) / np.float32(
        camera.fx
    )
    ray_y = (np.arange(0, height, stride, dtype=np.float32) - np.float32(camera.cy)) / np.float32(
        camera.fy
    )
    if math.isfinite(max_range):
        # |p| = z * sqrt(1 + rx^2 + ry^2): compare z with the per-pixel depth limit
        stretch = np.sqrt(1.0 + ray_y[:, None] ** 2 + ray_x[None, :] ** 2)
        valid &= z <= np.float32(max_range) / stretch
    # Compress each field with the mask straight into the output records: one allocation of
    # the cloud's size (no full-grid record array to gather from, about 4x faster).
    points = np.empty(int(np.count_nonzero(valid)), dtype=POINT_DTYPE)
    points["x"] = (z * ray_x[None, :])[valid]
    points["y"] = (z * ray_y[:, None])[valid]
    points["z"] = z[valid]
    points["rgb"] = pack_rgb(rgb[::stride, ::stride])[valid]
    points["label"] = labels[::stride, ::stride][valid]
    return points
