"""~/points and online HHA in the running node, over real rclpy / Fast DDS on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import rclpy
from conftest import make_bundle
from rclpy.context import Context
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header
from test_segmentation_node import WAIT_S, Probe, running_node, wait_matched

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.image_io import read_image
from unim2_core.errors import ConfigError
from unim2_core.model.backbone import Backbone
from unim2_core.model.checkpoint import load_bundle, save_bundle
from unim2_core.runtime.segmenter import Segmenter
from unim2_ros.image_conversion import array_to_image, image_to_array
from unim2_ros.segmentation_node import SegmentationNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

WIDTH, HEIGHT = 64, 48
CAMERA = CameraIntrinsics(40.0, 42.0, 31.5, 23.5, WIDTH, HEIGHT)
RGBD = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
RGB_HHA = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth_hha")}
RGBT = {"rgb": ModalityEncoding.default("rgb"), "thermal": ModalityEncoding.default("thermal")}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, imgfocus_backbone: Backbone) -> Any:
    folder = tmp_path_factory.mktemp("ckpt")
    return {
        name: save_bundle(
            make_bundle(imgfocus_backbone, encodings, n_clusters=5, shorter_side=112),
            folder / f"{name}.pt",
        )
        for name, encodings in (("rgbd", RGBD), ("hha", RGB_HHA), ("rgbt", RGBT))
    }


@pytest.fixture(scope="module")
def frame(sample_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 64x48 RGB image and a hand-made depth: a 2 m wall, a 1 m box, a few holes."""
    rgb = read_image(sample_data / "nyu_rgbd_sample" / "rgb" / "0003.png")
    rgb = cv2.resize(rgb, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    depth = np.full((HEIGHT, WIDTH), 2000, np.uint16)
    depth[20:40, 10:30] = 1000
    depth[0, :] = 0
    depth[5:8, 50:60] = 0
    return rgb, depth


@pytest.fixture(scope="module")
def nyu_depth(sample_data: Path) -> np.ndarray:
    """The real depth of the same frame at 64x48 (a room, for HHA)."""
    depth = read_image(sample_data / "nyu_rgbd_sample" / "depth_mm" / "0003.png")
    return cv2.resize(depth, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)


def _params(checkpoint: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model.checkpoint": str(checkpoint),
        "model.device": "cpu",
        "model.input_size": 112,
        **extra,
    }


def _camera_info(camera: CameraIntrinsics) -> CameraInfo:
    info = CameraInfo(width=camera.width, height=camera.height, distortion_model="plumb_bob")
    info.k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
    return info


def _sender(probe: Probe, rgb: np.ndarray, depth: np.ndarray) -> Callable[[Header], None]:
    rgb_pub, depth_pub = probe.publisher("/rgb/image"), probe.publisher("/depth/image")
    info_pub = probe.node.create_publisher(
        CameraInfo, "/depth/camera_info", qos_profile_sensor_data
    )
    wait_matched(rgb_pub, depth_pub)
    deadline = time.monotonic() + WAIT_S
    while info_pub.get_subscription_count() == 0:
        assert time.monotonic() < deadline, "the node never subscribed to camera_info"
        time.sleep(0.05)
    rgb_msg, depth_msg, info_msg = (
        array_to_image(rgb, "rgb8"),
        array_to_image(depth, "16UC1"),
        _camera_info(CAMERA),
    )

    def send(header: Header) -> None:
        rgb_msg.header = depth_msg.header = info_msg.header = header
        rgb_pub.publish(rgb_msg)
        depth_pub.publish(depth_msg)
        info_pub.publish(info_msg)

    return send


def _until(probe: Probe, recorder: Any, send: Callable[[Header], None]) -> Any:
    """Sends groups every 0.3 s until ``recorder`` gets a message; returns the first."""
    deadline = time.monotonic() + WAIT_S
    while not recorder.messages:
        assert time.monotonic() < deadline, "no output from the node"
        send(probe.header())
        time.sleep(0.3)
    return recorder.messages[0]


def _decode(msg: PointCloud2) -> np.ndarray:
    formats = {PointField.FLOAT32: "f4", PointField.UINT32: "u4"}
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype(
        {
            "names": [f.name for f in msg.fields],
            "formats": [order + formats[f.datatype] for f in msg.fields],
            "offsets": [f.offset for f in msg.fields],
            "itemsize": msg.point_step,
        }
    )
    return np.frombuffer(bytes(msg.data), dtype=dtype)


def test_node_publishes_labelled_points_only_while_subscribed(
    ros_domain_id: int,
    checkpoints: dict[str, Path],
    frame: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import unim2_ros.segmentation_node as module

    built: list[int] = []
    real = module.labelled_points

    def counting(*args: Any, **kwargs: Any) -> np.ndarray:
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "labelled_points", counting)
    rgb, depth = frame
    params = _params(checkpoints["rgbd"], **{"points.enabled": True, "points.stride": 1})
    with running_node(ros_domain_id, **params) as (node, probe):
        labels = probe.outputs("labels")
        send = _sender(probe, rgb, depth)
        _until(probe, labels, send)
        assert built == []  # nobody subscribes to ~/points yet

        clouds = probe.record("/unim2_node/points", PointCloud2)
        cloud = _until(probe, clouds, send)
        _, label_msg = labels.wait(lambda msg: msg.header.stamp == cloud.header.stamp)
        assert built

        assert cloud.header.frame_id == "camera_optical"
        assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
            ("x", 0, PointField.FLOAT32),
            ("y", 4, PointField.FLOAT32),
            ("z", 8, PointField.FLOAT32),
            ("rgb", 12, PointField.FLOAT32),
            ("label", 16, PointField.UINT32),
        ]
        valid = depth > 0
        assert (cloud.height, cloud.width) == (1, int(valid.sum()))
        assert (cloud.point_step, cloud.row_step, cloud.is_dense) == (20, 20 * cloud.width, True)
        points = _decode(cloud)
        rows, cols = np.nonzero(valid)
        z = depth[valid] / 1000.0
        np.testing.assert_allclose(points["z"], z, rtol=1e-6)
        np.testing.assert_allclose(points["x"], (cols - 31.5) * z / 40.0, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(points["y"], (rows - 23.5) * z / 42.0, rtol=1e-5, atol=1e-6)
        colours = points["rgb"].astype(np.float32).view(np.uint32)
        expected = rgb[valid].astype(np.uint32)
        np.testing.assert_array_equal(
            colours, (expected[:, 0] << 16) | (expected[:, 1] << 8) | expected[:, 2]
        )
        np.testing.assert_array_equal(points["label"], image_to_array(label_msg)[valid])

        result = node.set_parameters(
            [Parameter("points.stride", value=4), Parameter("points.max_range", value=1.5)]
        )
        assert all(r.successful for r in result)
        seen = len(clouds.messages)
        deadline = time.monotonic() + WAIT_S
        while len(clouds.messages) == seen:
            assert time.monotonic() < deadline, "no cloud after the parameter change"
            send(probe.header())
            time.sleep(0.3)
        strided = _decode(clouds.messages[-1])
        near = np.zeros_like(valid)
        near[::4, ::4] = (depth[::4, ::4] > 0) & (depth[::4, ::4] <= 1000)
        assert len(strided) == int(near.sum()) > 0
        np.testing.assert_allclose(strided["z"], 1.0, rtol=1e-6)


def test_depth_hha_checkpoint_segments_with_the_camera_info_intrinsics(
    ros_domain_id: int,
    checkpoints: dict[str, Path],
    frame: tuple[np.ndarray, np.ndarray],
    nyu_depth: np.ndarray,
    imgfocus_backbone: Backbone,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import unim2_core.data.encoding as encoding_module

    cameras: list[CameraIntrinsics] = []
    real = encoding_module.hha_from_depth

    def recording(array: np.ndarray, intrinsics: CameraIntrinsics, **kwargs: Any) -> np.ndarray:
        cameras.append(intrinsics)
        return real(array, intrinsics, **kwargs)

    monkeypatch.setattr(encoding_module, "hha_from_depth", recording)
    rgb, depth = frame[0], nyu_depth
    with running_node(ros_domain_id, **_params(checkpoints["hha"])) as (_, probe):
        labels = probe.outputs("labels")
        label_msg = _until(probe, labels, _sender(probe, rgb, depth))
    assert cameras and set(cameras) == {CAMERA}  # every frame used the camera_info's
    segmenter = Segmenter(
        load_bundle(checkpoints["hha"]), imgfocus_backbone, device="cpu", shorter_side=112
    )
    expected = segmenter({"rgb": rgb, "depth": depth}, intrinsics={"depth": CAMERA}).labels
    np.testing.assert_array_equal(image_to_array(label_msg), expected)


def test_points_without_a_depth_modality_stop_the_node_at_start(
    ros_domain_id: int, checkpoints: dict[str, Path]
) -> None:
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        overrides = [
            Parameter(name, value=value)
            for name, value in _params(checkpoints["rgbt"], **{"points.enabled": True}).items()
        ]
        with pytest.raises(
            ConfigError, match="parameter points.enabled: the checkpoint has no raw"
        ):
            SegmentationNode(context=context, parameter_overrides=overrides)
    finally:
        context.try_shutdown()


def test_uncalibrated_camera_info_is_counted_and_the_node_keeps_running(
    ros_domain_id: int, checkpoints: dict[str, Path], frame: tuple[np.ndarray, np.ndarray]
) -> None:
    params = _params(checkpoints["rgbd"], **{"points.enabled": True})
    with running_node(ros_domain_id, **params) as (node, probe):
        diagnostics = probe.diagnostics()
        info_pub = probe.node.create_publisher(
            CameraInfo, "/depth/camera_info", qos_profile_sensor_data
        )
        wait_matched(info_pub)
        key = "/depth/camera_info bad messages (invalid_values)"
        deadline = time.monotonic() + WAIT_S
        while not any(
            key in {kv.key for status in msg.status for kv in status.values}
            for msg in diagnostics.messages
        ):
            assert time.monotonic() < deadline, "the bad camera_info was never reported"
            uncalibrated = CameraInfo(width=WIDTH, height=HEIGHT)
            uncalibrated.header = probe.header()
            info_pub.publish(uncalibrated)
            time.sleep(0.3)
        assert node.context.ok()
        labels = probe.outputs("labels")
        _until(probe, labels, _sender(probe, *frame))  # calibrated frames still segment
