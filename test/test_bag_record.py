"""Tests of unim2_record with real rclpy over Fast DDS on loopback.

A talker node in the test publishes small Image messages and a latched String; the recorder
runs in-process (its own executor thread) or as ``python -m unim2_ros.bag_record`` stopped by
a signal. Bags are read back with the rosbags library itself and compared with what was
published.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability
from rosbags.interfaces import QosTime as T
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String

from unim2_ros.bag_io import (
    CAMERA_INFO_TYPE,
    IMAGE_TYPE,
    STRING_TYPE,
    BagReader,
    CameraInfoTrack,
    StorageFormat,
    camera_info_topic,
    typestore,
)
from unim2_ros.bag_record import (
    DISCOVERY_PERIOD,
    BagRecorder,
    _unrecordable,
    adapted_qos,
    bag_qos,
    main,
)
from unim2_ros.errors import BagError
from unim2_ros.image_conversion import array_to_image, image_to_array

pytestmark = pytest.mark.ros

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_TOPIC = "/camera/image_raw"
TEXT_TOPIC = "/unim2/label_info"
N_IMAGES = 5
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
INFINITE = T(9223372036, 854775807)


@pytest.fixture
def context(ros_domain_id: int) -> Iterator[Context]:
    ctx = Context()
    rclpy.init(context=ctx, domain_id=ros_domain_id)
    yield ctx
    ctx.try_shutdown()


@contextlib.contextmanager
def spinning(context: Context, *nodes: Node) -> Iterator[None]:
    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        executor.shutdown()
        thread.join(timeout=5)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def images() -> list[Image]:
    """Small distinct rgb8 images with distinct stamps and frame ids."""
    rng = np.random.default_rng(0)
    messages = []
    for index in range(N_IMAGES):
        header = Header(frame_id=f"camera_{index}")
        header.stamp.sec, header.stamp.nanosec = 1_700_000_000 + index, 1_000 * index
        pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        messages.append(array_to_image(pixels, "rgb8", header=header))
    return messages


def check_bag(path: Path, published: list[Image], text: str) -> None:
    """The bag holds ``published`` then-or-before ``text``, decoded with rosbags alone."""
    store = typestore()
    with Reader(path) as reader:
        topics = {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items()}
        assert topics == {IMAGE_TOPIC: (IMAGE_TYPE, N_IMAGES), TEXT_TOPIC: (STRING_TYPE, 1)}
        decoded: list[tuple[str, int, Any]] = [
            (c.topic, t, store.deserialize_cdr(data, c.msgtype)) for c, t, data in reader.messages()
        ]
    recorded = [msg for topic, _, msg in decoded if topic == IMAGE_TOPIC]
    for sent, got in zip(published, recorded, strict=True):
        assert got.header.frame_id == sent.header.frame_id
        assert (got.header.stamp.sec, got.header.stamp.nanosec) == (
            sent.header.stamp.sec,
            sent.header.stamp.nanosec,
        )
        np.testing.assert_array_equal(image_to_array(got), image_to_array(sent))
    assert [msg.data for topic, _, msg in decoded if topic == TEXT_TOPIC] == [text]
    stamps = [t for _, t, _ in decoded]
    assert stamps == sorted(stamps)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_recorder_writes_what_was_published(
    tmp_path: Path, context: Context, storage: StorageFormat
) -> None:
    talker = Node("talker", context=context)
    image_pub = talker.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
    text_pub = talker.create_publisher(String, TEXT_TOPIC, LATCHED)
    text_pub.publish(String(data="latched before the recorder started"))
    published = images()
    out = tmp_path / "bag"
    before = time.time_ns()
    recorder = BagRecorder(
        out,
        [IMAGE_TOPIC, TEXT_TOPIC, "never/published"],
        storage=storage,
        max_messages=N_IMAGES + 1,
        context=context,
    )
    try:
        with spinning(context, talker, recorder):
            wait_until(lambda: image_pub.get_subscription_count() == 1, 10, "the subscription")
            for msg in published:
                image_pub.publish(msg)
            wait_until(recorder.done.done, 10, "the message limit")
    finally:
        recorder.destroy_node()
        talker.destroy_node()
    after = time.time_ns()

    summary = recorder.summary()
    assert dict(summary.message_counts) == {IMAGE_TOPIC: N_IMAGES, TEXT_TOPIC: 1}
    assert dict(summary.msgtypes) == {IMAGE_TOPIC: IMAGE_TYPE, TEXT_TOPIC: STRING_TYPE}
    assert dict(summary.not_recorded) == {"/never/published": "never appeared"}
    assert (out / ("bag.db3" if storage == "sqlite3" else "bag.mcap")).is_file()
    check_bag(out, published, "latched before the recorder started")
    with BagReader(out) as bag:
        assert before <= bag.info.start_ns <= bag.info.end_ns <= after
        (image_qos,) = bag.info.topics[IMAGE_TOPIC].offered_qos
        (text_qos,) = bag.info.topics[TEXT_TOPIC].offered_qos
    assert (image_qos.reliability, image_qos.durability) == (
        QosReliability.RELIABLE,
        QosDurability.VOLATILE,
    )
    assert (text_qos.reliability, text_qos.durability) == (
        QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL,
    )
    assert image_qos.deadline == INFINITE


DEPTH_TOPIC = "/cam/depth/image_raw"
DEPTH_INFO = "/cam/depth/camera_info"


def camera_infos() -> list[CameraInfo]:
    """One calibration per image of :func:`images`, with the same stamps."""
    infos = []
    for index, image in enumerate(images()):
        info = CameraInfo(header=image.header, width=64, height=48)
        info.k = [500.0 + index, 0.0, 32.0, 0.0, 501.0, 24.0, 0.0, 0.0, 1.0]
        infos.append(info)
    return infos


def test_recorder_also_records_the_camera_info_beside_an_image_topic(
    tmp_path: Path, context: Context
) -> None:
    talker = Node("talker", context=context)
    image_pub = talker.create_publisher(Image, DEPTH_TOPIC, RELIABLE)
    info_pub = talker.create_publisher(CameraInfo, DEPTH_INFO, RELIABLE)
    out = tmp_path / "bag"
    recorder = BagRecorder(out, [DEPTH_TOPIC], max_messages=2 * N_IMAGES, context=context)
    try:
        with spinning(context, talker, recorder):
            wait_until(lambda: info_pub.get_subscription_count() == 1, 10, "camera_info")
            for image, info in zip(images(), camera_infos(), strict=True):
                image_pub.publish(image)
                info_pub.publish(info)
            wait_until(recorder.done.done, 10, "the message limit")
    finally:
        recorder.destroy_node()
        talker.destroy_node()

    summary = recorder.summary()
    assert dict(summary.message_counts) == {DEPTH_TOPIC: N_IMAGES, DEPTH_INFO: N_IMAGES}
    assert dict(summary.msgtypes) == {DEPTH_TOPIC: IMAGE_TYPE, DEPTH_INFO: CAMERA_INFO_TYPE}
    assert dict(summary.not_recorded) == {}
    with BagReader(out) as bag:
        track = CameraInfoTrack(bag, camera_info_topic(DEPTH_TOPIC))
    first, last = images()[0].header.stamp, images()[-1].header.stamp
    assert track.at(first.sec * 1_000_000_000 + first.nanosec).fx == 500.0
    assert track.at(last.sec * 1_000_000_000 + last.nanosec).fx == 500.0 + N_IMAGES - 1


def test_recorder_without_camera_info_records_only_the_named_topics(
    tmp_path: Path, context: Context
) -> None:
    talker = Node("talker", context=context)
    image_pub = talker.create_publisher(Image, DEPTH_TOPIC, RELIABLE)
    info_pub = talker.create_publisher(CameraInfo, DEPTH_INFO, RELIABLE)
    recorder = BagRecorder(
        tmp_path / "bag", [DEPTH_TOPIC], max_messages=1, camera_info=False, context=context
    )
    try:
        with spinning(context, talker, recorder):
            wait_until(lambda: image_pub.get_subscription_count() == 1, 10, "the subscription")
            time.sleep(5 * DISCOVERY_PERIOD)  # discovery rounds in which camera_info is seen
            assert info_pub.get_subscription_count() == 0
            image_pub.publish(images()[0])
            wait_until(recorder.done.done, 10, "the message limit")
    finally:
        recorder.destroy_node()
        talker.destroy_node()
    assert dict(recorder.summary().message_counts) == {DEPTH_TOPIC: 1}


def test_recorder_stops_after_its_duration(tmp_path: Path, context: Context) -> None:
    recorder = BagRecorder(tmp_path / "bag", ["/silent"], duration=0.3, context=context)
    start = time.monotonic()
    try:
        with spinning(context, recorder):
            wait_until(recorder.done.done, 5, "the duration")
        elapsed = time.monotonic() - start
    finally:
        recorder.destroy_node()
    assert 0.25 <= elapsed < 3
    assert recorder.summary().not_recorded == {"/silent": "never appeared"}
    with BagReader(tmp_path / "bag") as bag:
        assert (bag.info.message_count, dict(bag.info.topics)) == (0, {})


def test_recorder_skips_a_topic_with_several_types(
    tmp_path: Path, context: Context, ros_domain_id: int
) -> None:
    # One DDS participant refuses a second type on a topic: the String talker gets its own.
    other = Context()
    rclpy.init(context=other, domain_id=ros_domain_id)
    image_talker = Node("image_talker", context=context)
    text_talker = Node("text_talker", context=other)
    image_talker.create_publisher(Image, "/mixed", RELIABLE)
    text_talker.create_publisher(String, "/mixed", RELIABLE)
    wait_until(
        lambda: len(dict(image_talker.get_topic_names_and_types()).get("/mixed", [])) == 2,
        10,
        "both types in the graph",
    )
    recorder = BagRecorder(tmp_path / "bag", ["/mixed"], context=context)
    try:
        with spinning(context, image_talker, recorder):
            wait_until(
                lambda: recorder.summary().not_recorded.get("/mixed") != "never appeared",
                10,
                "discovery",
            )
    finally:
        recorder.destroy_node()
        image_talker.destroy_node()
        text_talker.destroy_node()
        other.try_shutdown()
    (reason,) = recorder.summary().not_recorded.values()
    assert reason.startswith("it is published with several types: ")
    assert IMAGE_TYPE in reason and STRING_TYPE in reason


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_command_line_recorder_stops_cleanly_on_a_signal(
    tmp_path: Path, context: Context, stop: signal.Signals
) -> None:
    talker = Node("talker", context=context)
    image_pub = talker.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
    text_pub = talker.create_publisher(String, TEXT_TOPIC, LATCHED)
    text_pub.publish(String(data="hello"))
    published = images()
    out = tmp_path / "bag"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    command = [sys.executable, "-m", "unim2_ros.bag_record", "-o", str(out), IMAGE_TOPIC]
    process = subprocess.Popen(
        [*command, TEXT_TOPIC, "--storage", "mcap"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with spinning(context, talker):
            wait_until(
                lambda: (
                    image_pub.get_subscription_count() == 1
                    and text_pub.get_subscription_count() == 1
                ),
                20,
                "the recorder's subscriptions",
            )
            for msg in published:
                image_pub.publish(msg)
            time.sleep(1.0)  # reliable delivery on loopback takes milliseconds
            process.send_signal(stop)
            stdout, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        talker.destroy_node()
    assert process.returncode == 0, stderr
    assert stdout.startswith(f"recorded {N_IMAGES + 1} messages on 2 topics to '{out}' (mcap)")
    assert f"{IMAGE_TOPIC}: {N_IMAGES} ({IMAGE_TYPE})" in stdout
    check_bag(out, published, "hello")


def test_recorder_refuses_an_existing_output(tmp_path: Path, context: Context) -> None:
    with pytest.raises(BagError, match="already exists; a bag is never overwritten"):
        BagRecorder(tmp_path, ["/x"], context=context)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topics": []}, "at least one topic"),
        ({"max_messages": 0}, "max_messages must be an integer >= 1"),
        ({"duration": -1.0}, "duration must be a finite number of seconds > 0"),
        ({"duration": float("nan")}, "duration must be a finite number of seconds > 0"),
    ],
)
def test_recorder_rejects_bad_limits(
    tmp_path: Path, context: Context, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"topics": ["/x"], **kwargs}
    with pytest.raises(ValueError, match=message):
        BagRecorder(tmp_path / "bag", context=context, **arguments)
    assert not (tmp_path / "bag").exists()


def test_command_line_reports_an_existing_output(
    tmp_path: Path, ros_domain_id: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["unim2_record", "-o", str(tmp_path), "/x"]) == 1
    assert capsys.readouterr().err.startswith(f"ERROR: '{tmp_path}' already exists")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--duration", "0"], "argument --duration: must be a finite number > 0, got 0"),
        (["--duration", "nan"], "argument --duration: must be a finite number > 0, got nan"),
        (["--max-messages", "0"], "argument --max-messages: must be >= 1, got 0"),
    ],
)
def test_command_line_rejects_bad_limits(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["unim2_record", "-o", str(tmp_path / "bag"), "/x", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _endpoints(*profiles: QoSProfile, type_hash: str = "") -> list[Any]:
    return [SimpleNamespace(qos_profile=p, topic_type_hash=type_hash) for p in profiles]


@pytest.mark.parametrize(
    ("profiles", "reliability", "durability"),
    [
        ((RELIABLE, RELIABLE), ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE),
        ((RELIABLE, qos_profile_sensor_data), ReliabilityPolicy.BEST_EFFORT, None),
        ((LATCHED,), ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL),
        ((LATCHED, RELIABLE), ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE),
    ],
)
def test_subscription_qos_matches_every_publisher(
    profiles: tuple[QoSProfile, ...],
    reliability: ReliabilityPolicy,
    durability: DurabilityPolicy | None,
) -> None:
    qos = adapted_qos(_endpoints(*profiles))
    assert qos.reliability == reliability
    assert qos.durability == (durability or DurabilityPolicy.VOLATILE)
    assert qos.depth == 10


def test_offered_profile_is_converted_for_the_bag() -> None:
    profile = QoSProfile(
        depth=7,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
        deadline=Duration(seconds=1, nanoseconds=500),
    )
    assert bag_qos(profile) == Qos(
        history=QosHistory.KEEP_LAST,
        depth=7,
        reliability=QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL,
        deadline=T(1, 500),
        lifespan=T(0, 0),
        liveliness=QosLiveliness.SYSTEM_DEFAULT,
        liveliness_lease_duration=T(0, 0),
        avoid_ros_namespace_conventions=False,
    )


def test_topic_whose_type_differs_from_the_type_store_is_not_recorded() -> None:
    endpoints = _endpoints(RELIABLE, type_hash="RIHS01_" + "0" * 64)
    reason = _unrecordable("/t", [IMAGE_TYPE], endpoints)
    assert reason is not None and "a different message definition" in reason
    assert _unrecordable("/t", ["my_msgs/msg/Thing"], endpoints) == (
        "type 'my_msgs/msg/Thing' is not in the rosbags type store"
    )
    matching = _endpoints(RELIABLE, type_hash=typestore().hash_rihs01(IMAGE_TYPE))
    assert _unrecordable("/t", [IMAGE_TYPE], matching) is None


def test_invalid_topic_name_is_one_error_and_creates_nothing(
    tmp_path: Path, context: Context
) -> None:
    with pytest.raises(BagError, match=r"^invalid topic name 'bad topic!': topic name must not"):
        BagRecorder(tmp_path / "bag", ["bad topic!"], context=context)
    assert not (tmp_path / "bag").exists()


def test_command_line_fails_when_nothing_was_recorded(
    tmp_path: Path, ros_domain_id: int, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bag"
    assert main(["unim2_record", "--out", str(out), "/never_published", "--duration", "0.3"]) == 1
    captured = capsys.readouterr()
    assert "/never_published: not recorded, never appeared" in captured.out
    assert captured.err.splitlines()[-1] == (
        f"ERROR: nothing was recorded into '{out}': '/never_published' never appeared"
    )
