"""The node's labelled point cloud: parameters, records -> message.

The points themselves come from :func:`unim2_core.runtime.pointcloud.labelled_points`; this
module only describes them as ``sensor_msgs/PointCloud2`` fields (the layout
``sensor_msgs_py.point_cloud2`` gives a structured array: fields at their numpy offsets,
``point_step`` = itemsize, one row, native byte order). A ``sensor_msgs/CameraInfo`` becomes
intrinsics in ``unim2_ros.image_conversion`` (``camera_info_intrinsics``), which the bag tools
share without rclpy. Importable without an rclpy context.

Parameters (declared by the node when it publishes ``~/points`` or needs intrinsics):

- ``points.enabled`` (bool, read-only, default false): subscribe ``<depth>/camera_info`` (the
  checkpoint's raw-depth modality: encoding ``depth`` or ``depth_hha``), synchronise it with the
  images, and publish ``~/points`` while it has subscribers. A ``depth_hha`` checkpoint
  subscribes ``camera_info`` whatever this says (the encoding needs the intrinsics).
- ``points.stride`` (int, 1-64, default 2): keep every n-th pixel in each direction.
- ``points.max_range`` (double, metres, default 10.0): drop points farther from the camera.
"""

from __future__ import annotations

import array as array_module
import sys
from typing import Any

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from unim2_core.data.encoding import EncodingKind, ModalityEncoding
from unim2_core.runtime.pointcloud import POINT_DTYPE, POINT_FIELDS, POINT_STEP
from unim2_ros.node_parameters import ParameterSpec

POINTS_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "points.enabled",
        False,
        "Subscribe <depth>/camera_info, synchronised with the images, and publish ~/points "
        "(x y z rgb label in the camera frame) while it has subscribers.",
        read_only=True,
    ),
    ParameterSpec(
        "points.stride",
        2,
        "Keep every n-th pixel in each direction in ~/points (1: every pixel).",
        read_only=False,
        minimum=1,
        maximum=64,
    ),
    ParameterSpec(
        "points.max_range",
        10.0,
        "Drop points farther than this from the camera centre in ~/points, in metres.",
        read_only=False,
        minimum=0.1,
        maximum=1000.0,
    ),
)
"""Parameters of the point cloud output and the camera_info input."""

_DATATYPES = {
    np.dtype(np.int8): PointField.INT8,
    np.dtype(np.uint8): PointField.UINT8,
    np.dtype(np.int16): PointField.INT16,
    np.dtype(np.uint16): PointField.UINT16,
    np.dtype(np.int32): PointField.INT32,
    np.dtype(np.uint32): PointField.UINT32,
    np.dtype(np.float32): PointField.FLOAT32,
    np.dtype(np.float64): PointField.FLOAT64,
}


def depth_modality(encodings: dict[str, ModalityEncoding]) -> str | None:
    """The first modality holding raw metric depth (``depth`` or ``depth_hha``), if any."""
    for name, encoding in encodings.items():
        if encoding.kind in (EncodingKind.DEPTH, EncodingKind.DEPTH_HHA):
            return name
    return None


def point_fields() -> list[PointField]:
    """The ``PointField`` list of :data:`unim2_core.runtime.pointcloud.POINT_DTYPE`."""
    return [
        PointField(name=field.name, offset=field.offset, datatype=_DATATYPES[field.dtype], count=1)
        for field in POINT_FIELDS
    ]


def point_cloud_message(points: np.ndarray, header: Any) -> PointCloud2:
    """An unorganised (one row) ``PointCloud2`` holding ``points`` (a POINT_DTYPE array).

    ``is_dense`` is true: ``labelled_points`` emits no invalid point. The records are copied
    once into the message's byte array (``frombytes``, a memcpy; assigning ``data`` would go
    through rclpy's per-element setter).

    Raises:
        ValueError: ``points`` is not a 1-D POINT_DTYPE array.
    """
    if points.dtype != POINT_DTYPE or points.ndim != 1:
        raise ValueError(f"expected a 1-D array of POINT_DTYPE records, got {points.dtype}")
    msg = PointCloud2(
        header=header,
        height=1,
        width=len(points),
        fields=point_fields(),
        is_bigendian=sys.byteorder == "big",
        point_step=POINT_STEP,
        row_step=POINT_STEP * len(points),
        is_dense=True,
    )
    buffer = msg.data
    if not isinstance(buffer, array_module.array):
        raise TypeError(f"PointCloud2.data is a {type(buffer).__name__}, expected array.array")
    buffer.frombytes(np.ascontiguousarray(points).view(np.uint8).data)
    return msg
