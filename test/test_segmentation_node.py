"""The segmentation node over real rclpy / Fast DDS on loopback, with real frames and backbone.

In-process tests run the node and a probe node in two rclpy contexts (two DDS participants) of
this process; the two-process test starts ``python -m unim2_ros.segmentation_node`` with a
params file and remaps, as ``ros2 run`` would. Every test has its own DDS domain id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import pytest
import rclpy
import yaml
from conftest import make_bundle
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.context import Context
from rclpy.exceptions import InvalidHandle
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.image_io import read_image
from unim2_core.errors import ConfigError
from unim2_core.model.backbone import Backbone
from unim2_core.model.checkpoint import ClassMapping, load_bundle, save_bundle
from unim2_core.runtime.segmenter import Segmenter
from unim2_core.runtime.visualize import overlay
from unim2_ros.image_conversion import array_to_image, header_stamp_ns, image_to_array
from unim2_ros.label_info import parse_label_info
from unim2_ros.node_parameters import NodeSettings
from unim2_ros.segmentation_node import SegmentationNode, _load_segmenter, run_until_shutdown

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DDS_PROFILE = REPO / "config" / "fastdds_localhost.xml"
# Fast DDS reads its XML profile once per process, when the first participant is created:
# set it before any test of the session creates one. It only widens shared memory and keeps
# UDP on 127.0.0.1, which every other ROS test here wants too.
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(DDS_PROFILE))

RGBD = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
RGBT = {"rgb": ModalityEncoding.default("rgb"), "thermal": ModalityEncoding.default("thermal")}
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
WAIT_S = 30.0

NodeT = TypeVar("NodeT", bound=Node)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgbd_checkpoint(tmp_path_factory: pytest.TempPathFactory, imgfocus_backbone: Backbone) -> Path:
    bundle = make_bundle(imgfocus_backbone, RGBD, n_clusters=5, shorter_side=112)
    return save_bundle(bundle, tmp_path_factory.mktemp("ckpt") / "rgbd.pt")


@pytest.fixture(scope="module")
def rgbt_checkpoint(tmp_path_factory: pytest.TempPathFactory, imgfocus_backbone: Backbone) -> Path:
    mapping = ClassMapping(
        cluster_to_class=(2, 0, -1, 1),
        class_names=("road", "person", "car"),
        palette=np.array([[128, 64, 128], [220, 20, 60], [0, 0, 142]], np.uint8),
    )
    bundle = make_bundle(
        imgfocus_backbone, RGBT, n_clusters=4, class_mapping=mapping, shorter_side=112
    )
    return save_bundle(bundle, tmp_path_factory.mktemp("ckpt") / "rgbt.pt")


@pytest.fixture(scope="module")
def nyu_frame(sample_data: Path) -> tuple[np.ndarray, np.ndarray]:
    root = sample_data / "nyu_rgbd_sample"
    rgb = read_image(root / "rgb" / "0003.png")
    depth = read_image(root / "depth_mm" / "0003.png")
    assert rgb.shape == (480, 640, 3) and depth.dtype == np.uint16
    return rgb, depth


@pytest.fixture(scope="module")
def small_nyu_frame(nyu_frame: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    rgb, depth = nyu_frame
    return (
        cv2.resize(rgb, (160, 120), interpolation=cv2.INTER_AREA),
        cv2.resize(depth, (160, 120), interpolation=cv2.INTER_NEAREST),
    )


# --- probe ----------------------------------------------------------------------------------


class Recorder:
    """Messages received on one topic, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[tuple[float, Any]] = []

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self._messages.append((time.monotonic(), msg))

    @property
    def messages(self) -> list[Any]:
        with self._lock:
            return [msg for _, msg in self._messages]

    def wait(self, predicate: Callable[[Any], bool], timeout: float = WAIT_S) -> tuple[float, Any]:
        """The first message (with its arrival time) satisfying ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with self._lock:
                fresh = self._messages[seen:]
            for arrival, msg in fresh:
                if predicate(msg):
                    return arrival, msg
            seen += len(fresh)
            time.sleep(0.02)
        raise AssertionError(f"no matching message within {timeout} s ({seen} received)")


class Probe:
    """A test-side node in its own context: publishes camera images, records outputs."""

    def __init__(self, domain_id: int, namespace: str = "/unim2_node") -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self.namespace = namespace

    def publisher(self, topic: str) -> Publisher[Image]:
        return self.node.create_publisher(Image, topic, qos_profile_sensor_data)

    def record(self, topic: str, msg_type: Any = Image, qos: QoSProfile | int = 10) -> Recorder:
        recorder = Recorder()
        self.node.create_subscription(msg_type, topic, recorder, qos)
        return recorder

    def outputs(self, name: str) -> Recorder:
        return self.record(f"{self.namespace}/{name}")

    def label_info(self) -> Recorder:
        return self.record(f"{self.namespace}/label_info", String, LATCHED)

    def diagnostics(self) -> Recorder:
        return self.record("/diagnostics", DiagnosticArray)

    def header(self) -> Header:
        now = self.node.get_clock().now().nanoseconds
        header = Header(frame_id="camera_optical")
        header.stamp.sec, header.stamp.nanosec = divmod(now, 1_000_000_000)
        return header

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()
        self.context.try_shutdown()


def wait_matched(*publishers: Publisher[Image], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while any(p.get_subscription_count() == 0 for p in publishers):
        assert time.monotonic() < deadline, "the node never subscribed"
        time.sleep(0.05)


def group_sender(
    rgb_pub: Publisher[Image],
    aux_pub: Publisher[Image],
    rgb: np.ndarray,
    aux: np.ndarray,
    aux_encoding: str,
) -> Callable[[Header], None]:
    """Publishes ``rgb`` and ``aux`` with the given header (as converted once, here)."""
    rgb_msg, aux_msg = array_to_image(rgb, "rgb8"), array_to_image(aux, aux_encoding)

    def send(header: Header) -> None:
        rgb_msg.header = aux_msg.header = header
        rgb_pub.publish(rgb_msg)
        aux_pub.publish(aux_msg)

    return send


def first_output(probe: Probe, outputs: Recorder, send: Callable[[Header], None]) -> Header:
    """Sends groups every 0.5 s until one yields an output (discovery may drop the first ones);
    returns the header of the group that did."""
    deadline = time.monotonic() + WAIT_S
    sent: list[Header] = []
    while not outputs.messages:
        assert time.monotonic() < deadline, "no output from the node"
        sent.append(probe.header())
        send(sent[-1])
        time.sleep(0.5)
    _, msg = outputs.wait(lambda msg: True)
    (header,) = [h for h in sent if h.stamp == msg.header.stamp]
    return header


def diagnostic_values(array: DiagnosticArray) -> dict[str, str]:
    (status,) = array.status
    return {kv.key: kv.value for kv in status.values}


def counts(key: str, count: int) -> Callable[[DiagnosticArray], bool]:
    """Matches diagnostics whose value of ``key`` is ``count``."""
    return lambda array: diagnostic_values(array).get(key) == str(count)


def level(array: DiagnosticArray) -> bytes:
    (status,) = array.status
    return bytes(status.level)


def same_stamp(header: Header) -> Callable[[Image], bool]:
    return lambda msg: msg.header.stamp == header.stamp


@contextlib.contextmanager
def running_node(domain_id: int, **parameters: Any) -> Iterator[tuple[SegmentationNode, Probe]]:
    """The node spinning in its own context, and a probe; both torn down afterwards."""
    with spinning(SegmentationNode, domain_id, **parameters) as running:
        yield running


@contextlib.contextmanager
def spinning(
    node_class: Callable[..., NodeT], domain_id: int, **parameters: Any
) -> Iterator[tuple[NodeT, Probe]]:
    """A ``node_class`` node spinning in its own context, and a probe; both torn down after."""
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    executor = SingleThreadedExecutor(context=context)
    node: NodeT | None = None
    probe: Probe | None = None
    thread = threading.Thread(target=executor.spin, daemon=True)
    try:
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        node = node_class(context=context, parameter_overrides=overrides)
        executor.add_node(node)
        thread.start()
        probe = Probe(domain_id)
        yield node, probe
    finally:
        if probe is not None:
            probe.close()
        executor.shutdown()
        if thread.is_alive():
            thread.join(timeout=5)
        if node is not None:
            node.destroy_node()
        context.try_shutdown()


def _params(checkpoint: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model.checkpoint": str(checkpoint),
        "model.device": "cpu",
        "model.input_size": 112,
        **extra,
    }


# --- in-process -----------------------------------------------------------------------------


def test_rgbd_vga_frames_give_labels_colours_overlay_and_label_info(
    ros_domain_id: int,
    rgbd_checkpoint: Path,
    imgfocus_backbone: Backbone,
    nyu_frame: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import unim2_ros.segmentation_node as module

    overlays_built: list[int] = []

    def counting_overlay(rgb: np.ndarray, colored: np.ndarray, alpha: float) -> np.ndarray:
        overlays_built.append(1)
        return overlay(rgb, colored, alpha)

    monkeypatch.setattr(module, "overlay", counting_overlay)
    rgb, depth = nyu_frame
    with running_node(ros_domain_id, **_params(rgbd_checkpoint)) as (_, probe):
        labels, colored, info = (
            probe.outputs("labels"),
            probe.outputs("colored"),
            probe.label_info(),
        )
        rgb_pub, depth_pub = probe.publisher("/rgb/image"), probe.publisher("/depth/image")
        wait_matched(rgb_pub, depth_pub)

        header = first_output(probe, labels, group_sender(rgb_pub, depth_pub, rgb, depth, "16UC1"))
        _, label_msg = labels.wait(same_stamp(header))
        _, colored_msg = colored.wait(same_stamp(header))

        document = parse_label_info(info.wait(lambda msg: True)[1].data)
        assert [label.name for label in document.labels] == [f"cluster_{k}" for k in range(5)]
        assert document.checkpoint == str(rgbd_checkpoint)
        assert document.backbone == imgfocus_backbone.identity.to_dict()
        assert document.modalities == ("rgb", "depth")
        assert (document.n_clusters, document.label_source) == (5, "clusters")

        for msg, encoding in ((label_msg, "mono8"), (colored_msg, "rgb8")):
            assert msg.header.frame_id == "camera_optical"
            assert (msg.encoding, msg.height, msg.width) == (encoding, 480, 640)
        label_map = image_to_array(label_msg)
        assert label_map.max() < len(document.labels)
        palette = np.array([label.color for label in document.labels], np.uint8)
        np.testing.assert_array_equal(image_to_array(colored_msg), palette[label_map])
        assert overlays_built == []

        overlays = probe.outputs("overlay")
        deadline = time.monotonic() + WAIT_S
        header = probe.header()
        while not overlays.messages:
            assert time.monotonic() < deadline, "no overlay after subscribing"
            header = probe.header()
            rgb_pub.publish(array_to_image(rgb, "rgb8", header=header))
            depth_pub.publish(array_to_image(depth, "16UC1", header=header))
            time.sleep(0.5)
        _, overlay_msg = overlays.wait(lambda msg: True)
        _, colored_msg = colored.wait(same_stamp(overlay_msg.header))
        assert (overlay_msg.encoding, overlay_msg.height, overlay_msg.width) == ("rgb8", 480, 640)
        expected = overlay(rgb, image_to_array(colored_msg), 0.5)
        np.testing.assert_array_equal(image_to_array(overlay_msg), expected)
        assert overlays_built


def test_more_than_255_labels_are_published_as_mono16(
    ros_domain_id: int,
    tmp_path: Path,
    imgfocus_backbone: Backbone,
    small_nyu_frame: tuple[np.ndarray, np.ndarray],
) -> None:
    bundle = make_bundle(imgfocus_backbone, RGBD, n_clusters=300, shorter_side=112)
    checkpoint = save_bundle(bundle, tmp_path / "many.pt")
    rgb, depth = small_nyu_frame
    with running_node(ros_domain_id, **_params(checkpoint)) as (_, probe):
        labels, info = probe.outputs("labels"), probe.label_info()
        rgb_pub, depth_pub = probe.publisher("/rgb/image"), probe.publisher("/depth/image")
        wait_matched(rgb_pub, depth_pub)
        header = first_output(probe, labels, group_sender(rgb_pub, depth_pub, rgb, depth, "16UC1"))
        _, msg = labels.wait(same_stamp(header))
        assert (msg.encoding, msg.height, msg.width) == ("mono16", 120, 160)
        assert image_to_array(msg).max() < 300
        document = parse_label_info(info.wait(lambda msg: True)[1].data)
        assert len(document.labels) == 300 and document.n_clusters == 300


def _bad_inputs(
    rgb: np.ndarray, depth: np.ndarray
) -> list[tuple[str, str, Callable[[Header], tuple[Image | None, Image | None]]]]:
    """(topic key, reason, message builder) of every kind of malformed input."""

    def wrong_step(header: Header) -> tuple[Image | None, Image | None]:
        msg = array_to_image(depth, "16UC1", header=header)
        msg.step -= 2
        return array_to_image(rgb, "rgb8", header=header), msg

    def empty(header: Header) -> tuple[Image | None, Image | None]:
        msg = Image(header=header, height=120, width=160, encoding="16UC1", step=320)
        return array_to_image(rgb, "rgb8", header=header), msg

    half = cv2.resize(depth, (80, 60), interpolation=cv2.INTER_NEAREST)
    nan = np.full(depth.shape, np.nan, np.float32)
    return [
        (
            "/depth/image",
            "wrong_encoding",
            lambda h: (
                array_to_image(rgb, "rgb8", header=h),
                array_to_image(rgb, "rgb8", header=h),
            ),
        ),
        ("/depth/image", "malformed", wrong_step),
        (
            "/depth/image",
            "size_mismatch",
            lambda h: (
                array_to_image(rgb, "rgb8", header=h),
                array_to_image(half, "16UC1", header=h),
            ),
        ),
        (
            "/depth/image",
            "invalid_values",
            lambda h: (
                array_to_image(rgb, "rgb8", header=h),
                array_to_image(nan, "32FC1", header=h),
            ),
        ),
        ("/depth/image", "empty", empty),
        (
            "/rgb/image",
            "wrong_encoding",
            lambda h: (array_to_image(depth, "16UC1", header=h), None),
        ),
    ]


def test_malformed_inputs_are_counted_and_good_groups_still_flow(
    ros_domain_id: int, rgbd_checkpoint: Path, small_nyu_frame: tuple[np.ndarray, np.ndarray]
) -> None:
    rgb, depth = small_nyu_frame
    with running_node(ros_domain_id, **_params(rgbd_checkpoint)) as (node, probe):
        labels, diagnostics = probe.outputs("labels"), probe.diagnostics()
        rgb_pub, depth_pub = probe.publisher("/rgb/image"), probe.publisher("/depth/image")
        wait_matched(rgb_pub, depth_pub)

        depth_m = depth.astype(np.float32) / 1000  # good groups send 32FC1 metres

        def send(header: Header) -> None:
            rgb_pub.publish(array_to_image(rgb, "rgb8", header=header))
            depth_pub.publish(array_to_image(depth_m, "32FC1", header=header))

        def send_good() -> None:
            header = probe.header()
            send(header)
            _, msg = labels.wait(same_stamp(header))
            assert (msg.height, msg.width) == (120, 160)

        first_output(probe, labels, send)
        expected: dict[str, int] = {}
        for topic, reason, build in _bad_inputs(rgb, depth):
            rgb_msg, depth_msg = build(probe.header())
            if rgb_msg is not None:
                rgb_pub.publish(rgb_msg)
            if depth_msg is not None:
                depth_pub.publish(depth_msg)
            key = f"{topic} bad messages ({reason})"
            expected[key] = expected.get(key, 0) + 1
            diagnostics.wait(counts(key, expected[key]))
            send_good()

        _, final = diagnostics.wait(
            lambda array: (
                diagnostic_values(array).get("groups segmented") == str(len(labels.messages))
            )
        )
        values = diagnostic_values(final)
        for key, expected_count in expected.items():
            assert values[key] == str(expected_count), key
        assert values["/depth/image bad messages"] == "5"
        assert values["/rgb/image bad messages"] == "1"
        assert node.context.ok()


class DepthCamera:
    """RGB + depth published every 0.1 s by a thread (:func:`depth_camera`); clearing
    ``depth_on`` silences the depth stream, setting it brings it back."""

    def __init__(self) -> None:
        self.depth_on = threading.Event()
        self.depth_on.set()
        self.last_depth_ns = 0
        """Header stamp of the last depth image sent."""
        self.last_depth_time = 0.0
        """``time.monotonic()`` when it was sent."""


@contextlib.contextmanager
def depth_camera(probe: Probe, rgb: np.ndarray, depth: np.ndarray) -> Iterator[DepthCamera]:
    """A :class:`DepthCamera` publishing to the node's default inputs until the block ends."""
    rgb_pub, depth_pub = probe.publisher("/rgb/image"), probe.publisher("/depth/image")
    wait_matched(rgb_pub, depth_pub)
    camera = DepthCamera()
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.1):
            header = probe.header()
            rgb_pub.publish(array_to_image(rgb, "rgb8", header=header))
            if camera.depth_on.is_set():
                depth_pub.publish(array_to_image(depth, "16UC1", header=header))
                camera.last_depth_ns = header_stamp_ns(header)
                camera.last_depth_time = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield camera
    finally:
        stop.set()
        thread.join(timeout=5)


def test_lost_auxiliary_stream_warns_within_two_seconds_and_recovers(
    ros_domain_id: int, rgbd_checkpoint: Path, small_nyu_frame: tuple[np.ndarray, np.ndarray]
) -> None:
    rgb, depth = small_nyu_frame
    with running_node(ros_domain_id, **_params(rgbd_checkpoint)) as (_, probe):
        labels, diagnostics = probe.outputs("labels"), probe.diagnostics()
        with depth_camera(probe, rgb, depth) as camera:
            diagnostics.wait(lambda array: level(array) == DiagnosticStatus.OK)
            camera.depth_on.clear()
            time.sleep(0.15)
            arrival, warning = diagnostics.wait(
                lambda array: level(array) == DiagnosticStatus.WARN, timeout=10
            )
            (status,) = warning.status
            assert "no message on /depth/image" in status.message
            assert "/rgb/image" not in status.message
            assert arrival - camera.last_depth_time <= 2.5, arrival - camera.last_depth_time

            resumed = header_stamp_ns(probe.header())
            camera.depth_on.set()
            diagnostics.wait(lambda array: level(array) == DiagnosticStatus.OK)
            labels.wait(lambda msg: header_stamp_ns(msg.header) > resumed)


def test_repeated_inference_failures_are_an_error_and_the_node_recovers(
    ros_domain_id: int,
    rgbd_checkpoint: Path,
    small_nyu_frame: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rgb, depth = small_nyu_frame
    with running_node(ros_domain_id, **_params(rgbd_checkpoint)) as (_, probe):
        labels, diagnostics = probe.outputs("labels"), probe.diagnostics()
        rgb_pub, depth_pub = probe.publisher("/rgb/image"), probe.publisher("/depth/image")
        wait_matched(rgb_pub, depth_pub)
        send = group_sender(rgb_pub, depth_pub, rgb, depth, "16UC1")
        first_output(probe, labels, send)

        def out_of_memory(*args: object, **kwargs: object) -> None:
            raise RuntimeError("CUDA out of memory (simulated)")

        monkeypatch.setattr(Segmenter, "launch", out_of_memory)  # the node queues its model here
        for count in range(1, 4):
            send(probe.header())
            diagnostics.wait(counts("inference failures", count))
        _, failing = diagnostics.wait(lambda array: level(array) == DiagnosticStatus.ERROR)
        assert failing.status[0].message.startswith("inference failed 3 times in a row")

        monkeypatch.undo()
        header = probe.header()
        send(header)
        labels.wait(same_stamp(header))
        diagnostics.wait(lambda array: level(array) == DiagnosticStatus.OK)


def test_model_compile_parameter_reaches_the_segmenter(rgbd_checkpoint: Path) -> None:
    bundle = load_bundle(rgbd_checkpoint)
    for flag in (False, True):
        settings = NodeSettings.from_parameters(
            {"model.checkpoint": str(rgbd_checkpoint), "model.device": "cpu", "model.compile": flag}
        )
        segmenter = _load_segmenter(bundle, settings)
        assert isinstance(segmenter, Segmenter) and segmenter.compiled is flag


def test_parameters_are_validated_at_run_time_and_take_effect(
    ros_domain_id: int, rgbd_checkpoint: Path
) -> None:
    with running_node(ros_domain_id, **_params(rgbd_checkpoint)) as (node, _):
        (result,) = node.set_parameters([Parameter("sync.slop", value=0.2)])
        assert result.successful
        assert node.get_parameter("sync.slop").value == 0.2
        assert node._sync.slop_ns == 200_000_000

        (result,) = node.set_parameters([Parameter("sync.slop", value=-1.0)])
        assert not result.successful and "sync.slop out of range" in result.reason
        (result,) = node.set_parameters([Parameter("model.checkpoint", value="/other.pt")])
        assert not result.successful and "read-only" in result.reason
        (result,) = node.set_parameters([Parameter("encoding.depth.low", value=20.0)])
        assert not result.successful
        assert "encoding.depth.low / encoding.depth.high" in result.reason
        assert "low < high" in result.reason

        (result,) = node.set_parameters([Parameter("encoding.depth.high", value=8.0)])
        assert result.successful
        assert node._encodings["depth"].high == 8.0
        assert node._warned_encodings == {"depth"}
        (result,) = node.set_parameters([Parameter("output.overlay_alpha", value=0.8)])
        assert result.successful and node._options.overlay_alpha == 0.8
        assert node.get_parameter("inputs.modalities").value == ["rgb", "depth"]
        descriptor = node.describe_parameter("sync.slop")
        assert descriptor.floating_point_range[0].from_value == 0.001
        assert node.describe_parameter("qos.input").read_only


@pytest.mark.parametrize(
    ("parameters", "match"),
    [
        (
            {"model.precision": "int8"},
            r"model.precision must be one of 'fp32', 'fp16', 'bf16', got 'int8'",
        ),
        ({"model.checkpoint": "/missing.pt"}, r"model.checkpoint: .*'/missing.pt'"),
        ({"model.backbone_weights": "/missing.safetensors"}, r"model.backbone_weights"),
        ({"inputs.modalities": ["rgb", "depth"]}, r"needs modality 'thermal'"),
        ({"encoding.thermal.high": -1.0}, r"encoding.thermal.low / encoding.thermal.high"),
        ({"sync.queue_size": 0}, r"sync.queue_size"),
        ({"sync.slope": 0.1}, r"^unknown parameter 'sync.slope' \(did you mean 'sync.slop'\?\)"),
        ({"qos.inptu": "reliable"}, r"unknown parameter 'qos.inptu' \(did you mean 'qos.input'"),
        ({"outputs.overlay": False}, r"'outputs.overlay' \(did you mean 'output.overlay'"),
        ({"encoding.thermal.hi": 9.0}, r"'encoding.thermal.hi' \(did you mean 'encoding.thermal"),
        ({"model.device": "cuda:x"}, r"model.device must be one of cpu, cuda, cuda:N"),
    ],
)
def test_bad_start_up_configuration_is_refused_naming_it(
    ros_domain_id: int, rgbt_checkpoint: Path, parameters: dict[str, Any], match: str
) -> None:
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        overrides = [
            Parameter(name, value=value)
            for name, value in {**_params(rgbt_checkpoint), **parameters}.items()
        ]
        with pytest.raises(ConfigError, match=match):
            SegmentationNode(context=context, parameter_overrides=overrides)
    finally:
        context.try_shutdown()


# --- two processes --------------------------------------------------------------------------


def _node_environment() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "FASTDDS_DEFAULT_PROFILES_FILE": str(DDS_PROFILE),
        "PYTHONUNBUFFERED": "1",
    }


def _start_node(params_file: Path, *remaps: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "unim2_ros.segmentation_node", "--ros-args"]
    command += ["--params-file", str(params_file)]
    for remap in remaps:
        command += ["-r", remap]
    return subprocess.Popen(
        command,
        env=_node_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate(timeout=10)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_node_process_with_params_file_and_remaps_segments_rgbt_and_stops_cleanly(
    ros_domain_id: int,
    rgbt_checkpoint: Path,
    sample_data: Path,
    tmp_path: Path,
    stop_signal: signal.Signals,
) -> None:
    shipped = yaml.safe_load((REPO / "config" / "unim2_node.yaml").read_text())
    values = shipped["/**/unim2_node"]["ros__parameters"]
    values.update(_params(rgbt_checkpoint))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(shipped))
    root = sample_data / "msrs_rgbt_sample"
    rgb = read_image(root / "rgb" / "00004N.png")
    thermal = read_image(root / "thermal" / "00004N.png")
    rgb = cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_AREA)
    thermal = cv2.resize(thermal, (320, 240), interpolation=cv2.INTER_AREA)

    process = _start_node(params_file, "rgb/image:=/cam/rgb", "thermal/image:=/cam/thermal")
    probe = Probe(ros_domain_id)
    try:
        info = probe.label_info()
        labels, colored = probe.outputs("labels"), probe.outputs("colored")
        rgb_pub, thermal_pub = probe.publisher("/cam/rgb"), probe.publisher("/cam/thermal")
        _, info_msg = info.wait(lambda msg: True, timeout=90)
        assert process.poll() is None
        document = parse_label_info(info_msg.data)
        assert [label.name for label in document.labels] == ["road", "person", "car", "cluster_2"]
        assert document.labels[1].color == (220, 20, 60)
        assert document.label_source == "classes" and document.modalities == ("rgb", "thermal")
        assert json.loads(info_msg.data)["model"]["n_clusters"] == 4
        wait_matched(rgb_pub, thermal_pub)

        header = first_output(
            probe, labels, group_sender(rgb_pub, thermal_pub, rgb, thermal, "mono8")
        )
        _, label_msg = labels.wait(same_stamp(header))
        _, colored_msg = colored.wait(same_stamp(header))
        assert label_msg.header == header and colored_msg.header == header
        assert (label_msg.encoding, label_msg.height, label_msg.width) == ("mono8", 240, 320)
        assert (colored_msg.encoding, colored_msg.height, colored_msg.width) == ("rgb8", 240, 320)
        assert image_to_array(label_msg).max() < len(document.labels)

        for _ in range(3):  # the signal arrives while groups are in flight
            header = probe.header()
            rgb_pub.publish(array_to_image(rgb, "rgb8", header=header))
            thermal_pub.publish(array_to_image(thermal, "mono8", header=header))
            time.sleep(0.03)
        process.send_signal(stop_signal)
        start = time.monotonic()
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr
        assert time.monotonic() - start < 10
        assert "Traceback" not in stderr
    finally:
        probe.close()
        _stop(process)


def test_node_process_exits_non_zero_naming_a_bad_parameter(
    ros_domain_id: int, rgbt_checkpoint: Path, tmp_path: Path
) -> None:
    params_file = tmp_path / "params.yaml"
    params = {**_params(rgbt_checkpoint), "model.precision": "int8"}
    params_file.write_text(yaml.safe_dump({"unim2_node": {"ros__parameters": params}}))
    process = _start_node(params_file)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        _stop(process)
    assert process.returncode == 1
    lines = stderr.strip().splitlines()
    assert lines == [
        "ERROR: parameter model.precision must be one of 'fp32', 'fp16', 'bf16', got 'int8'"
    ]


@pytest.mark.ros
@pytest.mark.parametrize("when", ["before", "while"])
def test_spin_returns_cleanly_however_the_shutdown_meets_the_executor(
    ros_domain_id: int, when: str
) -> None:
    # A signal shuts the context down wherever the executor is: before it exists (rclpy then
    # fails to build it) or while it waits (it stops, or fails to build its next wait set).
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = Node("spinner", context=context)
    try:
        if when == "before":
            context.shutdown()
        else:
            threading.Timer(0.3, context.shutdown).start()
        start = time.monotonic()
        run_until_shutdown(node)
        assert time.monotonic() - start < 10
        assert not context.ok()
        with pytest.raises(InvalidHandle):  # destroyed by run_until_shutdown
            node.get_publisher_names_and_types_by_node("spinner", "/")
    finally:
        context.try_shutdown()
