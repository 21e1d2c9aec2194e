"""~/points messages: PointCloud2 layout against the message definition, and camera_info."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.errors import EncodingError
from unim2_core.runtime.pointcloud import POINT_DTYPE, labelled_points
from unim2_ros.image_conversion import camera_info_intrinsics
from unim2_ros.point_cloud import depth_modality, point_cloud_message, point_fields

# sensor_msgs/msg/PointField.msg: datatype constants -> struct format characters
STRUCT_FORMATS = {
    PointField.INT8: "b",
    PointField.UINT8: "B",
    PointField.INT16: "h",
    PointField.UINT16: "H",
    PointField.INT32: "i",
    PointField.UINT32: "I",
    PointField.FLOAT32: "f",
    PointField.FLOAT64: "d",
}


def read_points(msg: PointCloud2) -> list[dict[str, float | int]]:
    """Decodes a cloud from its fields alone, point by point, as the message definition says."""
    order = ">" if msg.is_bigendian else "<"
    data = bytes(msg.data)
    assert len(data) == msg.row_step * msg.height
    out = []
    for row in range(msg.height):
        for col in range(msg.width):
            base = row * msg.row_step + col * msg.point_step
            record = {}
            for field in msg.fields:
                fmt = order + STRUCT_FORMATS[field.datatype]
                (record[field.name],) = struct.unpack_from(fmt, data, base + field.offset)
            out.append(record)
    return out


def test_fields_are_x_y_z_rgb_label_as_pcl_and_rviz_expect() -> None:
    fields = [(f.name, f.offset, f.datatype, f.count) for f in point_fields()]
    assert fields == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1),
        ("label", 16, PointField.UINT32, 1),
    ]


def test_message_holds_the_records_readable_from_its_fields() -> None:
    rng = np.random.default_rng(5)
    depth = rng.uniform(0.5, 4.0, size=(4, 5)).astype(np.float32)
    depth[1, 2] = np.nan
    rgb = rng.integers(0, 256, size=(4, 5, 3)).astype(np.uint8)
    labels = rng.integers(0, 1000, size=(4, 5)).astype(np.uint16)
    camera = CameraIntrinsics(50.0, 52.0, 2.0, 1.5, 5, 4)
    points = labelled_points(depth, rgb, labels, camera)
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = point_cloud_message(points, header)

    assert (msg.height, msg.width) == (1, 19)
    assert msg.point_step == 20 and msg.row_step == 20 * 19
    assert msg.is_dense is True
    assert msg.is_bigendian == (sys.byteorder == "big")
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    decoded = read_points(msg)
    kept = [(v, u) for v in range(4) for u in range(5) if (v, u) != (1, 2)]
    for record, (v, u) in zip(decoded, kept, strict=True):
        z = float(depth[v, u])
        assert record["x"] == pytest.approx((u - 2.0) * z / 50.0, rel=1e-6)
        assert record["y"] == pytest.approx((v - 1.5) * z / 52.0, rel=1e-6)
        assert record["z"] == pytest.approx(z, rel=1e-7)
        colour = struct.unpack("<I", struct.pack("<f", record["rgb"]))[0]
        r, g, b = (int(c) for c in rgb[v, u])
        assert colour == (r << 16) | (g << 8) | b
        assert record["label"] == labels[v, u]


def test_structured_view_of_the_message_data_is_the_records() -> None:
    """What sensor_msgs_py.point_cloud2.read_points_numpy-style readers do: a dtype view."""
    depth = np.full((3, 3), 1500, np.uint16)
    points = labelled_points(
        depth,
        np.zeros((3, 3, 3), np.uint8),
        np.arange(9, dtype=np.uint8).reshape(3, 3),
        CameraIntrinsics(10.0, 10.0, 1.0, 1.0, 3, 3),
    )
    msg = point_cloud_message(points, Header())
    names = [f.name for f in msg.fields]
    dtype = np.dtype(
        {
            "names": names,
            "formats": [np.float32] * 4 + [np.uint32],
            "offsets": [f.offset for f in msg.fields],
            "itemsize": msg.point_step,
        }
    )
    view = np.frombuffer(bytes(msg.data), dtype=dtype)
    np.testing.assert_array_equal(view["label"], np.arange(9))
    assert view.tobytes() == points.tobytes()


def test_empty_cloud_is_a_valid_message() -> None:
    msg = point_cloud_message(np.empty(0, POINT_DTYPE), Header())
    assert (msg.width, msg.row_step, len(msg.data)) == (0, 0, 0)


def test_message_refuses_other_arrays() -> None:
    with pytest.raises(ValueError, match="expected a 1-D array of POINT_DTYPE records"):
        point_cloud_message(np.zeros(3, np.float32), Header())


def test_camera_info_gives_the_intrinsics_of_its_camera_matrix() -> None:
    info = CameraInfo(width=640, height=480)
    info.k = [615.0, 0.0, 320.5, 0.0, 616.0, 240.5, 0.0, 0.0, 1.0]
    assert camera_info_intrinsics(info) == CameraIntrinsics(615.0, 616.0, 320.5, 240.5, 640, 480)


def test_uncalibrated_camera_info_is_refused() -> None:
    with pytest.raises(EncodingError, match="no positive focal lengths"):
        camera_info_intrinsics(CameraInfo(width=640, height=480))


def test_depth_modality_is_the_first_raw_depth_encoding() -> None:
    rgb = ModalityEncoding.default("rgb")
    assert depth_modality({"rgb": rgb, "hha": ModalityEncoding.default("hha")}) is None
    assert depth_modality({"rgb": rgb, "front": ModalityEncoding.default("depth")}) == "front"
    assert depth_modality({"rgb": rgb, "d": ModalityEncoding.default("depth_hha")}) == "d"
