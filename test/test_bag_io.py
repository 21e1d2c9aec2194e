"""Tests of unim2_ros.bag_io: bags written with BagImageWriter, read back with BagReader.

Recordings are built from synthetic RGB-D frames with known labels, with the depth camera's
stamps jittered and its messages logged later than the colour ones, as a real driver does.
Expected arrays come from the frames themselves and from OpenCV; expected metadata is written
out by hand from rosbag2's format.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pytest
import yaml
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image

from unim2_demo.synthetic_scenes import SceneFrame, generate_sequence
from unim2_ros.bag_io import (
    CAMERA_INFO_TYPE,
    IMAGE_TYPE,
    QOS_PRESETS,
    STRING_TYPE,
    BagImageWriter,
    BagReader,
    StorageFormat,
    typestore,
)
from unim2_ros.errors import BagError

STORAGES: tuple[StorageFormat, ...] = ("sqlite3", "mcap")
RGB = "/camera/color/image_raw"
DEPTH = "/camera/depth/image_rect_raw"
LABELS = "/camera/labels"
INFO = "/unim2/label_info"
N_FRAMES = 6
JITTER_NS = (0, 3_000_000, -4_000_000)
DEPTH_LOG_DELAY_NS = 7_000_000
INFINITE = {"sec": 9223372036, "nsec": 854775807}


class Recording(NamedTuple):
    path: Path
    frames: list[SceneFrame]


@pytest.fixture(scope="module")
def frames() -> list[SceneFrame]:
    return list(generate_sequence(N_FRAMES, width=64, height=48, seed=3))


def _depth_stamp(frame: SceneFrame, index: int) -> int:
    return frame.stamp_ns + JITTER_NS[index % len(JITTER_NS)]


def write_recording(
    path: Path,
    frames: list[SceneFrame],
    *,
    storage: StorageFormat = "sqlite3",
    skip_depth: int | None = None,
) -> Path:
    """Colour, jittered depth (logged later) and labels of every frame, plus label_info."""
    with BagImageWriter(path, storage=storage) as writer:
        writer.add_topic(RGB, qos="sensor_data")
        writer.add_topic(INFO, STRING_TYPE, qos="latched")
        writer.write_string(INFO, '{"0": "floor"}', frames[0].stamp_ns)
        for index, frame in enumerate(frames):
            writer.write_image(RGB, frame.rgb, "rgb8", frame.stamp_ns, "color")
            if index != skip_depth:
                writer.write_image(
                    DEPTH,
                    frame.depth_mm,
                    "16UC1",
                    _depth_stamp(frame, index),
                    "depth",
                    timestamp_ns=frame.stamp_ns + DEPTH_LOG_DELAY_NS,
                )
            writer.write_image(LABELS, frame.labels, "mono8", frame.stamp_ns, "color")
    return path


@pytest.mark.parametrize("storage", STORAGES)
def test_frame_groups_return_the_recorded_arrays_and_headers(
    tmp_path: Path, frames: list[SceneFrame], storage: StorageFormat
) -> None:
    bag = write_recording(tmp_path / "bag", frames, storage=storage)
    with BagReader(bag) as reader:
        stream = reader.frame_groups({"depth": DEPTH, "rgb": RGB}, label_topic=LABELS)
        groups = list(stream)
        stats = stream.stats()
    assert len(groups) == N_FRAMES
    for index, (group, frame) in enumerate(zip(groups, frames, strict=True)):
        assert list(group.arrays) == ["rgb", "depth"]
        np.testing.assert_array_equal(group.arrays["rgb"], frame.rgb)
        np.testing.assert_array_equal(group.arrays["depth"], frame.depth_mm)
        np.testing.assert_array_equal(group.labels, frame.labels)
        assert group.arrays["rgb"].dtype == np.uint8 and group.arrays["depth"].dtype == np.uint16
        assert all(a.flags.writeable and a.flags.owndata for a in group.arrays.values())
        assert group.stamp_ns == frame.stamp_ns
        assert group.log_time_ns == frame.stamp_ns + DEPTH_LOG_DELAY_NS
        assert group.headers["rgb"] == ("color", frame.stamp_ns)
        assert group.headers["depth"] == ("depth", _depth_stamp(frame, index))
        assert group.headers["labels"] == ("color", frame.stamp_ns)
    assert stats.groups == N_FRAMES
    assert dict(stats.received) == {RGB: N_FRAMES, DEPTH: N_FRAMES, LABELS: N_FRAMES}
    assert dict(stats.dropped) == {RGB: 0, DEPTH: 0, LABELS: 0}
    assert stats.skipped == ()


def test_frame_groups_count_messages_left_without_partner(
    tmp_path: Path, frames: list[SceneFrame]
) -> None:
    bag = write_recording(tmp_path / "bag", frames, skip_depth=2)
    with BagReader(bag) as reader:
        stream = reader.frame_groups({"rgb": RGB, "depth": DEPTH}, label_topic=LABELS)
        stamps = [group.stamp_ns for group in stream]
        stats = stream.stats()
    assert stamps == [frame.stamp_ns for i, frame in enumerate(frames) if i != 2]
    assert dict(stats.received) == {RGB: N_FRAMES, DEPTH: N_FRAMES - 1, LABELS: N_FRAMES}
    assert dict(stats.dropped) == {RGB: 1, DEPTH: 0, LABELS: 1}


def test_frame_groups_respect_the_slop(tmp_path: Path, frames: list[SceneFrame]) -> None:
    bag = write_recording(tmp_path / "bag", frames)
    with BagReader(bag) as reader:
        # Jitters are 0, +3 and -4 ms: a 3.5 ms slop keeps only the frames with 0 or 3 ms.
        stream = reader.frame_groups({"rgb": RGB, "depth": DEPTH}, slop=0.0035)
        stamps = [group.stamp_ns for group in stream]
    assert stamps == [frame.stamp_ns for i, frame in enumerate(frames) if i % 3 != 2]


RGB_CONVERSIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rgb8": lambda rgb: rgb,
    "bgr8": lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
    "rgba8": lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
    "bgra8": lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA),
}


@pytest.mark.parametrize("encoding", sorted(RGB_CONVERSIONS))
def test_colour_encodings_become_rgb(
    tmp_path: Path, frames: list[SceneFrame], encoding: str
) -> None:
    frame = frames[0]
    with BagImageWriter(tmp_path / "bag") as writer:
        writer.write_image(RGB, RGB_CONVERSIONS[encoding](frame.rgb), encoding, 5, "c")
    with BagReader(tmp_path / "bag") as reader:
        (group,) = reader.frame_groups({"rgb": RGB})
    np.testing.assert_array_equal(group.arrays["rgb"], frame.rgb)


def test_mono8_colour_topic_is_replicated_to_three_channels(tmp_path: Path) -> None:
    grey = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    with BagImageWriter(tmp_path / "bag") as writer:
        writer.write_image(RGB, grey, "mono8", 5, "c")
    with BagReader(tmp_path / "bag") as reader:
        (group,) = reader.frame_groups({"rgb": RGB})
    np.testing.assert_array_equal(group.arrays["rgb"], cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB))


SINGLE_CHANNEL = [
    ("depth", "16UC1", np.uint16),
    ("depth", "mono16", np.uint16),
    ("depth", "32FC1", np.float32),
    ("thermal", "mono8", np.uint8),
    ("thermal", "mono16", np.uint16),
    ("thermal", "32FC1", np.float32),
    ("nir", "8UC1", np.uint8),
    ("dolp", "32FC1", np.float32),
]


@pytest.mark.parametrize(("modality", "encoding", "dtype"), SINGLE_CHANNEL)
def test_single_channel_modalities_keep_their_values(
    tmp_path: Path, frames: list[SceneFrame], modality: str, encoding: str, dtype: Any
) -> None:
    frame = frames[0]
    values = frame.depth_mm.astype(np.float64)
    if np.dtype(dtype).kind == "f":
        expected = np.where(values > 0, values / 1000.0, np.nan).astype(dtype)
    else:
        expected = (values % (np.iinfo(dtype).max + 1)).astype(dtype)
    with BagImageWriter(tmp_path / "bag") as writer:
        writer.write_image(RGB, frame.rgb, "rgb8", 9, "c")
        writer.write_image("/aux", expected, encoding, 9, "c")
    with BagReader(tmp_path / "bag") as reader:
        (group,) = reader.frame_groups({"rgb": RGB, modality: "/aux"})
    assert group.arrays[modality].dtype == dtype
    np.testing.assert_array_equal(group.arrays[modality], expected)


def test_messages_yield_every_type_in_log_order(tmp_path: Path) -> None:
    k = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    with BagImageWriter(tmp_path / "bag", storage="mcap") as writer:
        writer.write_string(INFO, "late", 30)
        writer.write_camera_info(
            "/camera/color/camera_info", width=64, height=48, k=k, stamp_ns=20, frame_id="c"
        )
        writer.write_string(INFO, "early", 10)
    with BagReader(tmp_path / "bag") as reader:
        messages = list(reader.messages([INFO, "/camera/color/camera_info"]))
    assert [(m.topic, m.msgtype, m.timestamp_ns) for m in messages] == [
        (INFO, STRING_TYPE, 10),
        ("/camera/color/camera_info", CAMERA_INFO_TYPE, 20),
        (INFO, STRING_TYPE, 30),
    ]
    assert [messages[0].msg.data, messages[2].msg.data] == ["early", "late"]
    info = messages[1].msg
    assert (info.width, info.height, info.header.frame_id) == (64, 48, "c")
    np.testing.assert_array_equal(info.k, k.reshape(-1))
    np.testing.assert_array_equal(info.p.reshape(3, 4), np.hstack([k, np.zeros((3, 1))]))
    np.testing.assert_array_equal(info.r, np.eye(3).reshape(-1))


@pytest.mark.parametrize("storage", STORAGES)
def test_info_summarises_topics_counts_and_times(
    tmp_path: Path, frames: list[SceneFrame], storage: StorageFormat
) -> None:
    bag = write_recording(tmp_path / "bag", frames, storage=storage)
    with BagReader(bag) as reader:
        info = reader.info
    assert {name: (t.msgtype, t.message_count) for name, t in info.topics.items()} == {
        DEPTH: (IMAGE_TYPE, N_FRAMES),
        INFO: (STRING_TYPE, 1),
        LABELS: (IMAGE_TYPE, N_FRAMES),
        RGB: (IMAGE_TYPE, N_FRAMES),
    }
    assert info.message_count == 3 * N_FRAMES + 1
    assert info.start_ns == frames[0].stamp_ns
    assert info.end_ns == frames[-1].stamp_ns + DEPTH_LOG_DELAY_NS
    assert info.duration_ns == info.end_ns - info.start_ns
    assert info.image_topics() == (RGB, DEPTH, LABELS)  # sorted by name
    assert info.topics[RGB].offered_qos == (QOS_PRESETS["sensor_data"],)
    assert info.topics[INFO].offered_qos == (QOS_PRESETS["latched"],)
    assert info.topics[DEPTH].offered_qos == (QOS_PRESETS["default"],)


EXPECTED_QOS = {
    "default": {"history": "keep_last", "depth": 10, "reliability": "reliable"},
    "sensor_data": {"history": "keep_last", "depth": 5, "reliability": "best_effort"},
    "latched": {"history": "keep_last", "depth": 1, "reliability": "reliable"},
}


@pytest.mark.parametrize("preset", sorted(QOS_PRESETS))
@pytest.mark.parametrize("storage", STORAGES)
def test_written_metadata_is_what_rosbag2_reads(
    tmp_path: Path, storage: StorageFormat, preset: str
) -> None:
    bag = tmp_path / "bag"
    with BagImageWriter(bag, storage=storage) as writer:
        writer.add_topic(INFO, STRING_TYPE, qos=preset)  # type: ignore[arg-type]
        writer.write_string(INFO, "x", 1_000)
    expected_qos = {
        **EXPECTED_QOS[preset],
        "durability": "transient_local" if preset == "latched" else "volatile",
        "deadline": INFINITE,
        "lifespan": INFINITE,
        "liveliness": "automatic",
        "liveliness_lease_duration": INFINITE,
        "avoid_ros_namespace_conventions": False,
    }
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["version"] == 9
    assert metadata["storage_identifier"] == storage
    suffix = ".db3" if storage == "sqlite3" else ".mcap"
    assert metadata["relative_file_paths"] == [f"bag{suffix}"]
    (topic,) = metadata["topics_with_message_count"]
    assert topic["message_count"] == 1
    assert topic["topic_metadata"] == {
        "name": INFO,
        "type": STRING_TYPE,
        "serialization_format": "cdr",
        "offered_qos_profiles": [expected_qos],
        "type_description_hash": typestore().hash_rihs01(STRING_TYPE),
    }
    if storage == "sqlite3":
        with sqlite3.connect(bag / "bag.db3") as db:
            (stored,) = db.execute("SELECT offered_qos_profiles FROM topics").fetchone()
        assert yaml.safe_load(stored) == [expected_qos]


def test_written_images_deserialise_with_rclpy_unchanged(
    tmp_path: Path, frames: list[SceneFrame]
) -> None:
    frame = frames[1]
    with BagImageWriter(tmp_path / "bag") as writer:
        writer.write_image(RGB, frame.rgb, "rgb8", 1_700_000_000_123_456_789, "color")
    with Reader(tmp_path / "bag") as reader:
        ((_, _, data),) = reader.messages()
    msg = deserialize_message(bytes(data), Image)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert (msg.header.frame_id, msg.encoding, msg.height, msg.width, msg.step) == (
        "color",
        "rgb8",
        48,
        64,
        64 * 3,
    )
    assert msg.is_bigendian == 0
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(48, 64, 3), frame.rgb)


def test_single_db3_file_opens_as_a_bag(tmp_path: Path, frames: list[SceneFrame]) -> None:
    bag = write_recording(tmp_path / "bag", frames)
    with BagReader(bag / "bag.db3") as reader:
        assert len(list(reader.frame_groups({"rgb": RGB, "depth": DEPTH}))) == N_FRAMES


def _write_with_bad_image(path: Path, frames: list[SceneFrame], bad: int) -> int:
    """Like write_recording without labels; depth ``bad`` holds one byte too few."""
    store = typestore()
    with BagImageWriter(path) as writer:
        writer.add_topic(DEPTH)
        for index, frame in enumerate(frames):
            writer.write_image(RGB, frame.rgb, "rgb8", frame.stamp_ns, "color")
            if index == bad:
                good = frame.depth_mm.astype("<u2").view(np.uint8).reshape(-1)
                msg = store.types[IMAGE_TYPE](
                    header=store.types["std_msgs/msg/Header"](
                        stamp=store.types["builtin_interfaces/msg/Time"](
                            sec=frame.stamp_ns // 10**9, nanosec=frame.stamp_ns % 10**9
                        ),
                        frame_id="depth",
                    ),
                    height=48,
                    width=64,
                    encoding="16UC1",
                    is_bigendian=0,
                    step=128,
                    data=good[:-1].copy(),
                )
                writer.write(DEPTH, frame.stamp_ns + 1, msg)
            else:
                writer.write_image(DEPTH, frame.depth_mm, "16UC1", frame.stamp_ns, "depth")
    return frames[bad].stamp_ns + 1


def test_image_with_wrong_data_length_is_skipped_and_counted(
    tmp_path: Path, frames: list[SceneFrame]
) -> None:
    log_time = _write_with_bad_image(tmp_path / "bag", frames, bad=3)
    with BagReader(tmp_path / "bag") as reader:
        stream = reader.frame_groups({"rgb": RGB, "depth": DEPTH})
        stamps = [group.stamp_ns for group in stream]
        stats = stream.stats()
    assert stamps == [frame.stamp_ns for i, frame in enumerate(frames) if i != 3]
    ((topic, timestamp, reason),) = stats.skipped
    assert (topic, timestamp) == (DEPTH, log_time)
    assert "6143 bytes" in reason
    assert dict(stats.received) == {RGB: N_FRAMES, DEPTH: N_FRAMES - 1}
    assert dict(stats.dropped) == {RGB: 1, DEPTH: 0}


def test_strict_frame_groups_reject_a_bad_image(tmp_path: Path, frames: list[SceneFrame]) -> None:
    log_time = _write_with_bad_image(tmp_path / "bag", frames, bad=1)
    with BagReader(tmp_path / "bag") as reader:
        stream = reader.frame_groups({"rgb": RGB, "depth": DEPTH}, strict=True)
        with pytest.raises(BagError, match=f"'{DEPTH}' at {log_time} ns in bag .*6143 bytes"):
            list(stream)


def test_image_of_an_unexpected_encoding_is_skipped(
    tmp_path: Path, frames: list[SceneFrame]
) -> None:
    with BagImageWriter(tmp_path / "bag") as writer:
        writer.write_image(RGB, frames[0].rgb, "rgb8", 5, "c")
        writer.write_image(DEPTH, frames[0].rgb, "rgb8", 5, "d")
    with BagReader(tmp_path / "bag") as reader:
        stream = reader.frame_groups({"rgb": RGB, "depth": DEPTH})
        assert list(stream) == []
    ((topic, _, reason),) = stream.stats().skipped
    assert topic == DEPTH
    assert "depth image has encoding 'rgb8'; expected one of 16UC1, 32FC1, mono16" in reason


def test_corrupt_cdr_is_skipped_leniently_and_raised_strictly(tmp_path: Path) -> None:
    with BagImageWriter(tmp_path / "bag") as writer:
        writer.add_topic(INFO, STRING_TYPE)
        writer.write_string(INFO, "ok", 1)
        writer.write_raw(INFO, 2, b"\x07\x07garbage")
        writer.write_string(INFO, "fine", 3)
    with BagReader(tmp_path / "bag") as reader:
        with pytest.raises(BagError, match=f"'{INFO}' at 2 ns in bag .*CDR"):
            list(reader.messages([INFO]))
        texts = [m.msg.data for m in reader.messages([INFO], strict=False)]
        assert texts == ["ok", "fine"]
        ((topic, timestamp, reason),) = reader.skipped
    assert (topic, timestamp) == (INFO, 2)
    assert "corrupt message" in reason


def test_reader_rejects_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"bag '.*nothing' does not exist"):
        BagReader(tmp_path / "nothing")


def test_reader_rejects_a_folder_without_metadata(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="is not a rosbag2 bag: a bag folder holds a metadata"):
        BagReader(tmp_path)


def test_reader_rejects_a_rosbag1_file(tmp_path: Path) -> None:
    (tmp_path / "old.bag").write_bytes(b"#ROSBAG V2.0\n")
    with pytest.raises(BagError, match=r"'.*old.bag' is not a rosbag2 bag"):
        BagReader(tmp_path / "old.bag")


def test_reader_rejects_unparsable_metadata(tmp_path: Path) -> None:
    (tmp_path / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")
    with pytest.raises(BagError, match=r"cannot open bag .*Could not load YAML"):
        BagReader(tmp_path)


def test_frame_groups_reject_a_topic_absent_from_the_bag(
    tmp_path: Path, frames: list[SceneFrame]
) -> None:
    bag = write_recording(tmp_path / "bag", frames)
    with (
        BagReader(bag) as reader,
        pytest.raises(
            BagError,
            match=f"topic '/thermal' is not in bag .*; its image topics: {RGB}, {DEPTH}, {LABELS}",
        ),
    ):
        reader.frame_groups({"rgb": RGB, "thermal": "/thermal"})


def test_frame_groups_reject_a_topic_of_another_type(
    tmp_path: Path, frames: list[SceneFrame]
) -> None:
    bag = write_recording(tmp_path / "bag", frames)
    with (
        BagReader(bag) as reader,
        pytest.raises(
            BagError, match=f"'{INFO}' .* has type 'std_msgs/msg/String', expected '{IMAGE_TYPE}'"
        ),
    ):
        reader.frame_groups({"rgb": RGB}, label_topic=INFO)


@pytest.mark.parametrize(
    ("topics", "label_topic", "message"),
    [
        ({"depth": DEPTH}, None, "an 'rgb' topic is required"),
        ({"rgb": RGB, "polar": DEPTH}, None, "cannot read modality 'polar'"),
        ({"rgb": RGB, "depth": RGB}, None, f"topic '{RGB}' is named more than once"),
        ({"rgb": RGB}, RGB, f"topic '{RGB}' is named more than once"),
    ],
)
def test_frame_groups_reject_impossible_topic_maps(
    tmp_path: Path,
    frames: list[SceneFrame],
    topics: dict[str, str],
    label_topic: str | None,
    message: str,
) -> None:
    bag = write_recording(tmp_path / "bag", frames[:1])
    with BagReader(bag) as reader, pytest.raises(ValueError, match=message):
        reader.frame_groups(topics, label_topic=label_topic)


def test_frame_group_stream_is_iterated_once(tmp_path: Path, frames: list[SceneFrame]) -> None:
    bag = write_recording(tmp_path / "bag", frames[:2])
    with BagReader(bag) as reader:
        stream = reader.frame_groups({"rgb": RGB})
        assert len(list(stream)) == 2
        with pytest.raises(RuntimeError, match="iterated only once"):
            iter(stream)


def test_closed_reader_refuses_to_read(tmp_path: Path, frames: list[SceneFrame]) -> None:
    bag = write_recording(tmp_path / "bag", frames[:1])
    reader = BagReader(bag)
    reader.close()
    with pytest.raises(BagError, match="is closed"):
        reader.messages([RGB])


def test_writer_never_overwrites(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="already exists; a bag is never overwritten"):
        BagImageWriter(tmp_path)


def test_writer_rejects_unknown_storage(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown bag storage 'rosbag1'"):
        BagImageWriter(tmp_path / "bag", storage="rosbag1")  # type: ignore[arg-type]


def test_writer_rejects_bad_topics_and_messages(tmp_path: Path) -> None:
    with BagImageWriter(tmp_path / "bag") as writer:
        writer.add_topic(RGB)
        with pytest.raises(BagError, match=f"topic '{RGB}' is already in bag"):
            writer.add_topic(RGB)
        with pytest.raises(ValueError, match="absolute, got 'camera/image'"):
            writer.add_topic("camera/image")
        with pytest.raises(BagError, match="'my_msgs/msg/Thing' is unknown"):
            writer.add_topic("/thing", "my_msgs/msg/Thing")
        with pytest.raises(ValueError, match="unknown QoS preset 'fast'"):
            writer.add_topic("/fast", qos="fast")  # type: ignore[arg-type]
        with pytest.raises(BagError, match=r"'/nope' is not in bag .*declare it with add_topic"):
            writer.write_raw("/nope", 1, b"")
        with pytest.raises(BagError, match=f"'{RGB}' carries '{IMAGE_TYPE}', got a 'std_msgs"):
            writer.write_string(RGB, "text", 1)
        with pytest.raises(ValueError, match="timestamp_ns must be >= 0"):
            writer.write_string("/text", "text", -1)
        with pytest.raises(ValueError, match="stamp_ns must be >= 0"):
            writer.write_image(RGB, np.zeros((2, 2, 3), np.uint8), "rgb8", -5, "c")
        with pytest.raises(ValueError, match="k must be a finite 3x3 matrix"):
            writer.write_camera_info("/i", width=2, height=2, k=np.eye(2), stamp_ns=0, frame_id="")
    writer.close()
    with pytest.raises(BagError, match="is closed"):
        writer.write_string("/text", "late", 5)


def test_writer_keeps_several_offered_profiles(tmp_path: Path) -> None:
    profiles = [QOS_PRESETS["default"], QOS_PRESETS["sensor_data"]]
    with BagImageWriter(tmp_path / "bag", storage="mcap") as writer:
        writer.add_topic(RGB, qos=profiles)
        assert dict(writer.message_counts) == {RGB: 0}
    with BagReader(tmp_path / "bag") as reader:
        assert reader.info.topics[RGB].offered_qos == tuple(profiles)


def test_writer_aborts_when_the_block_raises(tmp_path: Path) -> None:
    class StopError(Exception):
        pass

    with pytest.raises(StopError), BagImageWriter(tmp_path / "bag") as writer:
        writer.write_string(INFO, "lost", 1)
        raise StopError
    assert not (tmp_path / "bag" / "metadata.yaml").exists()
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        BagReader(tmp_path / "bag")


def test_module_reads_and_writes_without_rclpy(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        for name in ("rclpy", "sensor_msgs", "sensor_msgs.msg", "std_msgs", "std_msgs.msg"):
            sys.modules[name] = None  # any import of them now raises ImportError
        import numpy as np
        from unim2_ros.bag_io import BagImageWriter, BagReader
        with BagImageWriter({str(tmp_path / "bag")!r}) as writer:
            writer.write_image("/rgb", np.zeros((4, 4, 3), np.uint8), "rgb8", 1, "c")
        with BagReader({str(tmp_path / "bag")!r}) as reader:
            assert len(list(reader.frame_groups({{"rgb": "/rgb"}}))) == 1
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
