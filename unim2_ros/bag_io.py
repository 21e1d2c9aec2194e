"""rosbag2 reading and writing with the ``rosbags`` library: no ROS 2 install, no rclpy.

The offline trainer's bag import, the replay evaluator and the recorder all go through here, so
this module never imports rclpy. Both rosbag2 storage formats are read and written: sqlite3
(``.db3``, the ROS 2 default up to Iron) and MCAP (the default since Jazzy). A bag is a rosbag2
folder with a ``metadata.yaml``; a lone ``.db3`` or ``.mcap`` file is read too.

Messages are decoded with the ``rosbags`` type store of ROS 2 Kilted, whose definitions of
sensor_msgs/Image, sensor_msgs/CameraInfo and std_msgs/String are those of every ROS 2
distribution since Foxy.

Reading synchronised frames (:meth:`BagReader.frame_groups`) feeds the header stamps of the
named Image topics, in the bag's log order, to the project's one synchroniser
(:class:`~unim2_core.runtime.sync.ApproximateTimeSynchronizer`), so a recording is grouped
exactly as the
live node would have grouped it, and converts each group to raw arrays in the conventions of
``unim2_core.data.encoding``.

Bad messages: a message that cannot be decoded (corrupt CDR, or an Image whose sizes, encoding
or data length are wrong for its role) raises :class:`~unim2_ros.errors.BagError` in strict
mode, naming the topic and the log timestamp. In lenient mode it is skipped and recorded as a
:class:`SkippedMessage`, so one corrupt frame does not throw away an hour of recording. Reading
raw messages is strict by default (an evaluator should not silently lose frames); reading frame
groups is lenient by default (a training import should keep going and report).

Writing (:class:`BagImageWriter`) builds bags that ``ros2 bag info`` / ``ros2 bag play`` accept:
rosbag2 format version 9, CDR serialisation, each topic's message definition and RIHS01 type hash,
and its offered QoS profiles in the form rosbag2 itself writes (see :data:`QOS_PRESETS`).
"""

from __future__ import annotations

import argparse
import functools
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import numpy.typing as npt
from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.errors import DataError, EncodingError
from unim2_core.runtime.sync import ApproximateTimeSynchronizer
from unim2_ros.errors import BagError, ImageConversionError
from unim2_ros.image_conversion import (
    RGB8_SOURCES,
    array_to_image,
    camera_info_intrinsics,
    header_stamp_ns,
    image_to_array,
    to_rgb8,
)
from unim2_ros.node_parameters import SPECS_BY_NAME

__all__ = [
    "CAMERA_INFO_TYPE",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_SLOP",
    "IMAGE_TYPE",
    "LABELS_ROLE",
    "LABEL_ENCODINGS",
    "MODALITY_ENCODINGS",
    "QOS_PRESETS",
    "STRING_TYPE",
    "BagFrame",
    "BagImageWriter",
    "BagInfo",
    "BagMessage",
    "BagReader",
    "BagTopic",
    "CameraInfoTrack",
    "FrameGroupStream",
    "FrameStats",
    "ImageHeader",
    "QosPreset",
    "SkippedMessage",
    "StorageFormat",
    "add_topic_argument",
    "camera_info_topic",
    "class_names_argument",
    "modality_topic_argument",
    "parsed_topics",
    "typestore",
]

IMAGE_TYPE = "sensor_msgs/msg/Image"
STRING_TYPE = "std_msgs/msg/String"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"

DEFAULT_QUEUE_SIZE = int(cast(int, SPECS_BY_NAME["sync.queue_size"].default))
"""Synchroniser queue size per input: the node's ``sync.queue_size`` default."""

DEFAULT_SLOP = float(cast(float, SPECS_BY_NAME["sync.slop"].default))
"""Largest stamp spread of a synchronised group, in seconds: the node's ``sync.slop`` default,
so a bag imported for training groups its frames as the node would on the robot."""

StorageFormat = Literal["sqlite3", "mcap"]
QosPreset = Literal["default", "sensor_data", "latched"]

_STORAGE_PLUGINS: Mapping[str, StoragePlugin] = MappingProxyType(
    {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
)

_BAG_FILE_SUFFIXES = (".db3", ".mcap")

_INFINITE = QosTime(sec=9223372036, nsec=854775807)
"""RMW_DURATION_INFINITE, as rosbag2 records the deadline, lifespan and lease of a publisher
that sets none."""


def _qos(
    *, depth: int, reliability: QosReliability, durability: QosDurability = QosDurability.VOLATILE
) -> Qos:
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=reliability,
        durability=durability,
        deadline=_INFINITE,
        lifespan=_INFINITE,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_INFINITE,
        avoid_ros_namespace_conventions=False,
    )


QOS_PRESETS: Mapping[str, Qos] = MappingProxyType(
    {
        "default": _qos(depth=10, reliability=QosReliability.RELIABLE),
        "sensor_data": _qos(depth=5, reliability=QosReliability.BEST_EFFORT),
        "latched": _qos(
            depth=1, reliability=QosReliability.RELIABLE, durability=QosDurability.TRANSIENT_LOCAL
        ),
    }
)
"""Offered QoS profiles a written topic can declare, named as in rclpy.

``default`` is rclcpp/rclpy's default publisher (keep last 10, reliable, volatile),
``sensor_data`` is ``qos_profile_sensor_data`` (keep last 5, best effort, volatile) and
``latched`` a transient-local publisher such as the node's ``~/label_info`` (keep last 1,
reliable). Durations are infinite (``{sec: 9223372036, nsec: 854775807}``), liveliness automatic.
In a version 9 ``metadata.yaml`` a profile reads ``history: keep_last``, ``depth: 10``,
``reliability: reliable``, ``durability: volatile``, ``liveliness: automatic``, the policy
names of rmw's ``rmw_qos_*_policy_to_str``; ``ros2 bag play`` offers the recorded profile again.
"""

MODALITY_ENCODINGS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "rgb": frozenset(RGB8_SOURCES),
        "depth": frozenset({"16UC1", "mono16", "32FC1"}),
        "thermal": frozenset({"mono8", "8UC1", "mono16", "16UC1", "32FC1"}),
        "nir": frozenset({"mono8", "8UC1", "mono16", "16UC1", "32FC1"}),
        "aolp": frozenset({"32FC1"}),
        "dolp": frozenset({"32FC1"}),
    }
)
"""Image encodings accepted per modality when reading frame groups.

``rgb`` becomes uint8 RGB (bgr8 / rgba8 / bgra8 / mono8 are converted); depth 16UC1 / mono16 is
uint16 millimetres and 32FC1 float32 metres; thermal and NIR keep their type (uint8, uint16
counts, float32); AoLP (the angle, as the node takes it) and DoLP are float32 HxW. The folder
layout stores AoLP as (sin, cos) pairs: ``unim2_import_bag`` converts the angle, in radians.
"""


def modality_topic_argument(text: str) -> tuple[str, str]:
    """argparse type of the bag tools' ``--topic MODALITY=TOPIC``: a modality this module reads
    from Image topics, and its topic."""
    name, sep, topic = text.partition("=")
    if not sep or not name or not topic:
        raise argparse.ArgumentTypeError(f"expected MODALITY=TOPIC, got {text!r}")
    if name not in MODALITY_ENCODINGS:
        raise argparse.ArgumentTypeError(
            f"unknown modality {name!r}; readable from Image topics: "
            f"{', '.join(MODALITY_ENCODINGS)}"
        )
    return name, topic


def add_topic_argument(parser: argparse.ArgumentParser) -> None:
    """The bag tools' repeatable ``--topic MODALITY=TOPIC``; read it with :func:`parsed_topics`."""
    parser.add_argument(
        "--topic",
        dest="topics",
        action="append",
        required=True,
        type=modality_topic_argument,
        metavar="MODALITY=TOPIC",
        help="an Image topic per modality, e.g. rgb=/camera/color/image_raw (repeatable; "
        "rgb required)",
    )


def parsed_topics(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """Modality -> topic from :func:`add_topic_argument`'s ``--topic`` options; a modality given
    twice, or no ``rgb``, is a usage error (``parser.error``, exit status 2)."""
    topics = dict(args.topics)
    if len(topics) != len(args.topics):
        parser.error("each modality may be given one --topic")
    if "rgb" not in topics:
        parser.error("an rgb topic is required: --topic rgb=TOPIC")
    return topics


def class_names_argument(text: str) -> list[str]:
    """argparse type of the bag tools' ``--class-names A,B,...``: the names, stripped."""
    return [name.strip() for name in text.split(",")]


LABEL_ENCODINGS = frozenset({"mono8", "8UC1", "mono16", "16UC1"})
"""Image encodings of a label topic (class ids, uint8 or uint16)."""

LABELS_ROLE = "labels"
"""Key of the label topic's header in :attr:`BagFrame.headers`."""


@functools.cache
def typestore() -> Typestore:
    """The ``rosbags`` type store used to decode and encode messages (ROS 2 Kilted)."""
    return get_typestore(Stores.ROS2_KILTED)


class ImageHeader(NamedTuple):
    """The header of an Image message, kept so a replay can republish it unchanged.

    Attributes:
        frame_id: The sensor's coordinate frame.
        stamp_ns: Acquisition stamp in nanoseconds.
    """

    frame_id: str
    stamp_ns: int


class BagTopic(NamedTuple):
    """One topic of a bag.

    Attributes:
        name: Topic name.
        msgtype: Message type, e.g. ``sensor_msgs/msg/Image``; None when the bag holds the
            topic with several types.
        message_count: Messages on the topic.
        offered_qos: Offered QoS profiles recorded for the topic (one per publisher).
    """

    name: str
    msgtype: str | None
    message_count: int
    offered_qos: tuple[Qos, ...]


class BagInfo(NamedTuple):
    """Summary of a bag, as ``ros2 bag info`` shows it.

    Attributes:
        path: The bag folder or file.
        topics: Topic name -> :class:`BagTopic`, sorted by name.
        message_count: Messages in the bag.
        start_ns: Log time of the first message (0 for an empty bag).
        end_ns: Log time of the last message (0 for an empty bag).
    """

    path: Path
    topics: Mapping[str, BagTopic]
    message_count: int
    start_ns: int
    end_ns: int

    @property
    def duration_ns(self) -> int:
        """Log time from the first to the last message."""
        return self.end_ns - self.start_ns

    def image_topics(self) -> tuple[str, ...]:
        """Names of the topics of type sensor_msgs/msg/Image."""
        return tuple(name for name, topic in self.topics.items() if topic.msgtype == IMAGE_TYPE)


class BagMessage(NamedTuple):
    """One decoded message in log order.

    Attributes:
        topic: Topic name.
        msgtype: Message type.
        timestamp_ns: Log time (when the recorder received it).
        msg: The ``rosbags`` message dataclass; array fields are read-only views of the bag's
            buffer.
    """

    topic: str
    msgtype: str
    timestamp_ns: int
    msg: Any


class SkippedMessage(NamedTuple):
    """A message left out in lenient mode.

    Attributes:
        topic: Topic name.
        timestamp_ns: Log time.
        reason: Why it could not be used.
    """

    topic: str
    timestamp_ns: int
    reason: str


class BagFrame(NamedTuple):
    """One synchronised group of Image messages, converted to raw arrays.

    Attributes:
        stamp_ns: Header stamp of the RGB message.
        log_time_ns: Log time at which the group became complete (its latest message), when
            the live node's synchroniser would have emitted it.
        arrays: Modality name -> raw array (``unim2_core.data.encoding`` conventions), writable and
            owning its memory, in the order the topics were given ("rgb" first).
        labels: HxW uint8 / uint16 class ids from the label topic, or None without one.
        headers: Modality name (and ``"labels"``) -> original Image header.
        log_times_ns: Modality name (and ``"labels"``) -> log time of its message, with which
            :meth:`BagReader.image_at` reads it again.
    """

    stamp_ns: int
    log_time_ns: int
    arrays: dict[str, npt.NDArray[Any]]
    labels: npt.NDArray[Any] | None
    headers: dict[str, ImageHeader]
    log_times_ns: dict[str, int]


class FrameStats(NamedTuple):
    """What reading frame groups did with the messages of each topic.

    Per topic, ``received == groups + dropped``.

    Attributes:
        groups: Synchronised groups yielded.
        received: Topic -> messages decoded and handed to the synchroniser.
        dropped: Topic -> decoded messages never part of a group (no partner within the slop,
            evicted from a full queue, or still waiting when the bag ended).
        skipped: Messages that could not be decoded, in log order.
    """

    groups: int
    received: Mapping[str, int]
    dropped: Mapping[str, int]
    skipped: tuple[SkippedMessage, ...]


class BagReader:
    """An open rosbag2 recording (folder, ``.db3`` or ``.mcap``).

    A context manager; :meth:`close` releases the storage files. Not thread-safe.

    Args:
        path: The rosbag2 folder (with ``metadata.yaml``) or a single ``.db3`` / ``.mcap``.

    Raises:
        BagError: The path does not exist, is not a rosbag2 bag, or cannot be read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {str(self.path)!r} does not exist")
        not_a_bag = (
            f"{str(self.path)!r} is not a rosbag2 bag: a bag folder holds a metadata.yaml, "
            f"a single-file bag ends in .db3 or .mcap"
        )
        if self.path.is_file() and self.path.suffix not in _BAG_FILE_SUFFIXES:
            raise BagError(not_a_bag)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except FileNotFoundError as err:
            raise BagError(not_a_bag) from err
        except (ReaderError, OSError, sqlite3.Error) as err:
            raise BagError(f"cannot open bag {str(self.path)!r}: {err}") from err
        self.skipped: list[SkippedMessage] = []
        """Messages skipped by lenient :meth:`messages` calls on this reader, in log order."""
        self.info = self._read_info()

    def _read_info(self) -> BagInfo:
        reader = self._reader
        topics = {
            name: BagTopic(
                name=name,
                msgtype=topic.msgtype,
                message_count=topic.msgcount,
                offered_qos=tuple(
                    qos
                    for connection in topic.connections
                    for qos in getattr(connection.ext, "offered_qos_profiles", ())
                ),
            )
            for name, topic in sorted(reader.topics.items())
        }
        count = reader.message_count
        return BagInfo(
            path=self.path,
            topics=MappingProxyType(topics),
            message_count=count,
            start_ns=reader.start_time if count else 0,
            end_ns=reader.end_time - 1 if count else 0,
        )

    def close(self) -> None:
        """Closes the storage files; further reads fail."""
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()

    def messages(self, topics: Collection[str], *, strict: bool = True) -> Iterator[BagMessage]:
        """Yields the messages of ``topics`` decoded, in log order.

        Args:
            topics: Topic names to read; each must be in the bag with one message type that
                the type store knows.
            strict: Raise on a message that cannot be decoded; otherwise skip it and append
                it to :attr:`skipped`.

        Raises:
            BagError: A topic is absent or has an unusable type (raised at the call, before
                any message), a message cannot be decoded (strict), or the storage is corrupt.
        """
        connections = self._connections(list(topics), expected_type=None)
        return self._decoded(connections, strict=strict, on_skip=self.skipped.append)

    def frame_groups(
        self,
        topics: Mapping[str, str],
        *,
        label_topic: str | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        slop: float = DEFAULT_SLOP,
        strict: bool = False,
    ) -> FrameGroupStream:
        """Synchronised groups of the named Image topics, as raw arrays.

        Args:
            topics: Modality name -> Image topic; "rgb" is required. Accepted modalities and
                encodings: :data:`MODALITY_ENCODINGS`.
            label_topic: Optional Image topic of class ids (:data:`LABEL_ENCODINGS`),
                synchronised as one more input.
            queue_size: Synchroniser queue size per input.
            slop: Largest stamp spread of a group, in seconds.
            strict: Raise on a message that cannot be decoded or converted; otherwise skip it
                and count it in the stream's :meth:`FrameGroupStream.stats`.

        Returns:
            An iterable over :class:`BagFrame` that counts what it reads.

        Raises:
            ValueError: No "rgb" topic, an unknown modality, a topic named twice, or a
                synchroniser argument out of range.
            BagError: A topic is absent from the bag or not of type sensor_msgs/msg/Image
                (raised here, before any message is read).
        """
        return FrameGroupStream(
            self,
            topics,
            label_topic=label_topic,
            queue_size=queue_size,
            slop=slop,
            strict=strict,
        )

    def image_at(self, topic: str, role: str, timestamp_ns: int, stamp_ns: int) -> npt.NDArray[Any]:
        """One Image read again by its log time, converted as :meth:`frame_groups` converts it.

        Only the messages logged at ``timestamp_ns`` are read (the storage's time index), so a
        replay draws a few frames it has streamed before without a second pass over the bag.

        Args:
            topic: The Image topic.
            role: A modality of :data:`MODALITY_ENCODINGS`, or :data:`LABELS_ROLE`.
            timestamp_ns: The message's log time (:attr:`BagFrame.log_times_ns`).
            stamp_ns: Its header stamp, which tells it from others logged at the same time.

        Raises:
            BagError: The topic is not an Image topic of the bag, the message is not in it, or
                it cannot be decoded or converted.
        """
        item = _Input(
            role, topic, LABEL_ENCODINGS if role == LABELS_ROLE else MODALITY_ENCODINGS[role]
        )
        connections = self._connections([topic], expected_type=IMAGE_TYPE)
        messages = self._decoded(
            connections,
            strict=True,
            on_skip=self.skipped.append,
            start_ns=timestamp_ns,
            stop_ns=timestamp_ns + 1,
        )
        for message in messages:
            if header_stamp_ns(message.msg.header) == stamp_ns:
                try:
                    return _converted(message.msg, item)
                except ImageConversionError as err:
                    skip = SkippedMessage(topic, timestamp_ns, str(err))
                    raise self._bad_message(skip) from err
        raise BagError(
            f"bag {str(self.path)!r} has no message on {topic!r} logged at {timestamp_ns} ns "
            f"with header stamp {stamp_ns} ns"
        )

    def _connections(self, topics: list[str], *, expected_type: str | None) -> list[Connection]:
        """Returns the connections of ``topics`` after checking they exist with a usable type."""
        if not self._reader.is_open:
            raise BagError(f"bag {str(self.path)!r} is closed")
        store = typestore()
        for topic in topics:
            info = self.info.topics.get(topic)
            if info is None:
                images = ", ".join(self.info.image_topics()) or "none"
                raise BagError(
                    f"topic {topic!r} is not in bag {str(self.path)!r}; its image topics: {images}"
                )
            if info.msgtype is None:
                raise BagError(f"topic {topic!r} in bag {str(self.path)!r} has several types")
            if expected_type is not None and info.msgtype != expected_type:
                raise BagError(
                    f"topic {topic!r} in bag {str(self.path)!r} has type {info.msgtype!r}, "
                    f"expected {expected_type!r}"
                )
            if info.msgtype not in store.types:
                raise BagError(
                    f"topic {topic!r} in bag {str(self.path)!r} has type {info.msgtype!r}, "
                    f"which the ROS 2 type store does not know"
                )
        wanted = set(topics)
        return [c for c in self._reader.connections if c.topic in wanted]

    def _decoded(
        self,
        connections: list[Connection],
        *,
        strict: bool,
        on_skip: Callable[[SkippedMessage], None],
        start_ns: int | None = None,
        stop_ns: int | None = None,
    ) -> Iterator[BagMessage]:
        store = typestore()
        try:
            for connection, timestamp, data in self._reader.messages(
                connections, start=start_ns, stop=stop_ns
            ):
                try:
                    msg = store.deserialize_cdr(data, connection.msgtype)
                except SerdeError as err:
                    skip = SkippedMessage(connection.topic, timestamp, f"corrupt message: {err}")
                    if strict:
                        raise self._bad_message(skip) from err
                    on_skip(skip)
                    continue
                yield BagMessage(connection.topic, connection.msgtype, timestamp, msg)
        except (ReaderError, OSError, sqlite3.Error) as err:
            raise BagError(f"cannot read bag {str(self.path)!r}: {err}") from err

    def _bad_message(self, skip: SkippedMessage) -> BagError:
        return BagError(
            f"cannot decode the message on {skip.topic!r} at {skip.timestamp_ns} ns in bag "
            f"{str(self.path)!r}: {skip.reason}"
        )


class _Input(NamedTuple):
    """One synchroniser input of a frame stream."""

    role: str
    topic: str
    encodings: frozenset[str]


class FrameGroupStream:
    """Iterates a bag's synchronised Image groups once; built by :meth:`BagReader.frame_groups`.

    The counts of :meth:`stats` grow while iterating and are final once it is exhausted.
    """

    def __init__(
        self,
        bag: BagReader,
        topics: Mapping[str, str],
        *,
        label_topic: str | None,
        queue_size: int,
        slop: float,
        strict: bool,
    ) -> None:
        if "rgb" not in topics:
            raise ValueError(f"an 'rgb' topic is required, got modalities {sorted(topics)}")
        unknown = [name for name in topics if name not in MODALITY_ENCODINGS]
        if unknown:
            raise ValueError(
                f"cannot read modality {', '.join(map(repr, unknown))} from Image topics; "
                f"readable: {', '.join(MODALITY_ENCODINGS)}"
            )
        order = ["rgb", *(name for name in topics if name != "rgb")]
        inputs = [_Input(name, topics[name], MODALITY_ENCODINGS[name]) for name in order]
        if label_topic is not None:
            inputs.append(_Input(LABELS_ROLE, label_topic, LABEL_ENCODINGS))
        names = [item.topic for item in inputs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"topic {', '.join(map(repr, repeated))} is named more than once")
        self._sync: ApproximateTimeSynchronizer[tuple[BagMessage, npt.NDArray[Any]]] = (
            ApproximateTimeSynchronizer(len(inputs), queue_size=queue_size, slop=slop)
        )
        self._inputs = inputs
        self._index = {item.topic: i for i, item in enumerate(inputs)}
        self._bag = bag
        self._strict = strict
        self._connections = bag._connections(names, expected_type=IMAGE_TYPE)
        self._received = dict.fromkeys(names, 0)
        self._skipped: list[SkippedMessage] = []
        self._started = False

    def stats(self) -> FrameStats:
        """Counts so far (final once the stream is exhausted)."""
        groups = self._sync.stats().emitted
        return FrameStats(
            groups=groups,
            received=MappingProxyType(dict(self._received)),
            dropped=MappingProxyType({t: n - groups for t, n in self._received.items()}),
            skipped=tuple(self._skipped),
        )

    def __iter__(self) -> Iterator[BagFrame]:
        if self._started:
            raise RuntimeError("a frame group stream can be iterated only once")
        self._started = True
        return self._frames()

    def _frames(self) -> Iterator[BagFrame]:
        messages = self._bag._decoded(
            self._connections, strict=self._strict, on_skip=self._skipped.append
        )
        for message in messages:
            index = self._index[message.topic]
            item = self._inputs[index]
            try:
                array = _converted(message.msg, item)
            except ImageConversionError as err:
                skip = SkippedMessage(message.topic, message.timestamp_ns, str(err))
                if self._strict:
                    raise self._bag._bad_message(skip) from err
                self._skipped.append(skip)
                continue
            self._received[message.topic] += 1
            stamp = header_stamp_ns(message.msg.header)
            group = self._sync.add(index, stamp, (message, array))
            if group is not None:
                yield self._frame(group)

    def _frame(self, group: tuple[tuple[BagMessage, npt.NDArray[Any]], ...]) -> BagFrame:
        arrays: dict[str, npt.NDArray[Any]] = {}
        headers: dict[str, ImageHeader] = {}
        labels = None
        log_times: dict[str, int] = {}
        for item, (message, array) in zip(self._inputs, group, strict=True):
            header = message.msg.header
            headers[item.role] = ImageHeader(str(header.frame_id), header_stamp_ns(header))
            log_times[item.role] = message.timestamp_ns
            if item.role == LABELS_ROLE:
                labels = array
            else:
                arrays[item.role] = array
        return BagFrame(
            stamp_ns=headers["rgb"].stamp_ns,
            log_time_ns=max(message.timestamp_ns for message, _ in group),
            arrays=arrays,
            labels=labels,
            headers=headers,
            log_times_ns=log_times,
        )


def _converted(msg: Any, item: _Input) -> npt.NDArray[Any]:
    """Returns an Image's pixels in the role's raw convention, as a new writable array."""
    encoding = str(msg.encoding)
    if encoding not in item.encodings:
        raise ImageConversionError(
            f"{item.role} image has encoding {encoding!r}; expected one of "
            f"{', '.join(sorted(item.encodings))}"
        )
    pixels = image_to_array(msg)
    if item.role == "rgb":
        pixels = to_rgb8(pixels, encoding)
    return np.array(pixels, order="C", copy=True)


class BagImageWriter:
    """Writes a new rosbag2 (format version 9) with ``rosbags``, for images and their metadata.

    A context manager: leaving the block normally closes the bag (writes the index and
    ``metadata.yaml``); leaving it with an exception aborts it, so a half-written bag never
    looks complete. Not thread-safe, and with sqlite3 storage every call must come from the
    thread that created the writer (sqlite3 connections are bound to their thread).

    Args:
        path: The bag folder to create; it must not exist. The storage file inside is
            ``<name>.db3`` or ``<name>.mcap``.
        storage: ``"sqlite3"`` or ``"mcap"``.

    Raises:
        ValueError: Unknown storage.
        BagError: The path exists or the folder cannot be created.
    """

    def __init__(self, path: str | Path, *, storage: StorageFormat = "sqlite3") -> None:
        if storage not in _STORAGE_PLUGINS:
            raise ValueError(
                f"unknown bag storage {storage!r}; expected one of {', '.join(_STORAGE_PLUGINS)}"
            )
        self.path = Path(path)
        self.storage = storage
        if self.path.exists():
            raise BagError(f"{str(self.path)!r} already exists; a bag is never overwritten")
        self._writer = Writer(
            self.path, version=Writer.VERSION_LATEST, storage_plugin=_STORAGE_PLUGINS[storage]
        )
        try:
            self._writer.open()
        except (WriterError, OSError, sqlite3.Error) as err:
            raise BagError(f"cannot create bag {str(self.path)!r}: {err}") from err
        self._connections: dict[str, Connection] = {}
        self._open = True

    @property
    def message_counts(self) -> Mapping[str, int]:
        """Topic -> messages written so far."""
        return MappingProxyType(
            {topic: self._writer.counts[c.id] for topic, c in self._connections.items()}
        )

    def add_topic(
        self,
        topic: str,
        msgtype: str = IMAGE_TYPE,
        *,
        qos: QosPreset | Sequence[Qos] = "default",
    ) -> None:
        """Declares a topic, its message type and the QoS profiles its publishers offered.

        Args:
            topic: Absolute topic name.
            msgtype: Message type known to :func:`typestore`, e.g. ``std_msgs/msg/String``.
            qos: A key of :data:`QOS_PRESETS`, or the offered profiles (one per publisher).

        Raises:
            ValueError: The name is not absolute, or an unknown QoS preset.
            BagError: The topic is already declared, the type is unknown, or the bag is closed.
        """
        self._check_open()
        if not topic.startswith("/"):
            raise ValueError(f"bag topic names are absolute, got {topic!r}")
        if topic in self._connections:
            raise BagError(f"topic {topic!r} is already in bag {str(self.path)!r}")
        if msgtype not in typestore().types:
            raise BagError(f"message type {msgtype!r} is unknown to the ROS 2 type store")
        if isinstance(qos, str):
            if qos not in QOS_PRESETS:
                raise ValueError(
                    f"unknown QoS preset {qos!r}; expected one of {', '.join(QOS_PRESETS)}"
                )
            profiles: Sequence[Qos] = (QOS_PRESETS[qos],)
        else:
            profiles = tuple(qos)
        try:
            self._connections[topic] = self._writer.add_connection(
                topic,
                msgtype,
                typestore=typestore(),
                serialization_format="cdr",
                offered_qos_profiles=profiles,
            )
        except (WriterError, sqlite3.Error, OSError) as err:
            raise BagError(f"cannot add topic {topic!r} to {str(self.path)!r}: {err}") from err

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Writes one CDR-serialised message of a declared topic at log time ``timestamp_ns``.

        Raises:
            ValueError: A negative timestamp.
            BagError: The topic is not declared, the bag is closed, or the write fails.
        """
        self._check_open()
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(
                f"topic {topic!r} is not in bag {str(self.path)!r}; declare it with add_topic"
            )
        if timestamp_ns < 0:
            raise ValueError(f"timestamp_ns must be >= 0, got {timestamp_ns!r}")
        try:
            self._writer.write(connection, int(timestamp_ns), data)
        except (WriterError, sqlite3.Error, OSError) as err:
            raise BagError(f"cannot write to bag {str(self.path)!r}: {err}") from err

    def write(self, topic: str, timestamp_ns: int, msg: Any) -> None:
        """Serialises a ``rosbags`` message and writes it at log time ``timestamp_ns``.

        An undeclared topic is declared with the message's type and the ``default`` QoS.

        Raises:
            ValueError: A negative timestamp.
            BagError: The message's type differs from the topic's, cannot be serialised, or
                the bag is closed.
        """
        self._check_open()
        msgtype = str(msg.__msgtype__)
        if topic not in self._connections:
            self.add_topic(topic, msgtype)
        expected = self._connections[topic].msgtype
        if msgtype != expected:
            raise BagError(f"topic {topic!r} carries {expected!r}, got a {msgtype!r} message")
        try:
            data = typestore().serialize_cdr(msg, msgtype)
        except (SerdeError, TypeError, ValueError, AttributeError) as err:
            raise BagError(f"cannot serialise {msgtype!r} for {topic!r}: {err}") from err
        self.write_raw(topic, timestamp_ns, data)

    def write_image(
        self,
        topic: str,
        array: npt.ArrayLike,
        encoding: str,
        stamp_ns: int,
        frame_id: str,
        *,
        timestamp_ns: int | None = None,
    ) -> None:
        """Writes a sensor_msgs/Image holding ``array``.

        Args:
            topic: Absolute topic name (declared as an Image topic if new).
            array: Pixels in the layout of ``encoding`` (see ``image_conversion.ENCODINGS``).
            encoding: Image encoding, e.g. ``rgb8``, ``16UC1``, ``32FC1``.
            stamp_ns: Header stamp in nanoseconds.
            frame_id: Header frame id.
            timestamp_ns: Log time; the header stamp when None.

        Raises:
            ImageConversionError: The array does not match the encoding.
            ValueError: A negative stamp.
            BagError: As :meth:`write`.
        """
        msg = array_to_image(
            array,
            encoding,
            header=_header(stamp_ns, frame_id),
            msg_class=typestore().types[IMAGE_TYPE],
        )
        self.write(topic, stamp_ns if timestamp_ns is None else timestamp_ns, msg)

    def write_string(self, topic: str, text: str, timestamp_ns: int) -> None:
        """Writes a std_msgs/String (e.g. the node's ``label_info`` JSON).

        Raises:
            BagError: As :meth:`write`.
        """
        self.write(topic, timestamp_ns, typestore().types[STRING_TYPE](data=text))

    def write_camera_info(
        self,
        topic: str,
        *,
        width: int,
        height: int,
        k: npt.ArrayLike,
        stamp_ns: int,
        frame_id: str,
        d: Sequence[float] = (),
        distortion_model: str = "plumb_bob",
        timestamp_ns: int | None = None,
    ) -> None:
        """Writes a sensor_msgs/CameraInfo of a monocular camera.

        The rectification is the identity and the projection ``P = [K | 0]``, as for an image
        that is already rectified (or a simulated pinhole camera).

        Args:
            topic: Absolute topic name.
            width: Image width in pixels.
            height: Image height in pixels.
            k: 3x3 intrinsic matrix.
            stamp_ns: Header stamp in nanoseconds.
            frame_id: Header frame id.
            d: Distortion coefficients of ``distortion_model``.
            distortion_model: Distortion model name.
            timestamp_ns: Log time; the header stamp when None.

        Raises:
            ValueError: ``k`` is not 3x3 and finite.
            BagError: As :meth:`write`.
        """
        intrinsics = np.asarray(k, dtype=np.float64)
        if intrinsics.shape != (3, 3) or not np.isfinite(intrinsics).all():
            raise ValueError(f"k must be a finite 3x3 matrix, got shape {intrinsics.shape}")
        types = typestore().types
        projection = np.zeros((3, 4), dtype=np.float64)
        projection[:, :3] = intrinsics
        msg = types[CAMERA_INFO_TYPE](
            header=_header(stamp_ns, frame_id),
            height=height,
            width=width,
            distortion_model=distortion_model,
            d=np.asarray(d, dtype=np.float64).reshape(-1),
            k=intrinsics.reshape(-1),
            r=np.eye(3, dtype=np.float64).reshape(-1),
            p=projection.reshape(-1),
            binning_x=0,
            binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            ),
        )
        self.write(topic, stamp_ns if timestamp_ns is None else timestamp_ns, msg)

    def close(self) -> None:
        """Finishes the bag: writes the storage index and ``metadata.yaml``. Idempotent.

        Raises:
            BagError: The files cannot be written.
        """
        if not self._open:
            return
        self._open = False
        try:
            self._writer.close()
        except (WriterError, sqlite3.Error, OSError) as err:
            raise BagError(f"cannot finish bag {str(self.path)!r}: {err}") from err

    def abort(self) -> None:
        """Stops writing without finishing the bag (no ``metadata.yaml``). Idempotent."""
        if self._open:
            self._open = False
            self._writer.abort()

    def __enter__(self) -> BagImageWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _check_open(self) -> None:
        if not self._open:
            raise BagError(f"bag {str(self.path)!r} is closed")


def _header(stamp_ns: int, frame_id: str) -> Any:
    """A rosbags std_msgs/Header."""
    if stamp_ns < 0:
        raise ValueError(f"stamp_ns must be >= 0, got {stamp_ns!r}")
    types = typestore().types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    stamp = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def camera_info_topic(image_topic: str) -> str:
    """The ``camera_info`` topic beside an image topic (image_transport's convention):
    ``/cam/depth/image_raw`` -> ``/cam/depth/camera_info``."""
    return f"{image_topic.rsplit('/', 1)[0]}/camera_info"


class CameraInfoTrack:
    """A bag's CameraInfo messages of one topic, as intrinsics by header stamp.

    A frame takes the last calibration stamped at or before it (the first one for frames
    before any), as a node that keeps the latest camera_info would. Messages with an
    uncalibrated (all-zero) matrix are skipped and counted.

    Raises:
        BagError: The topic is not a CameraInfo topic of the bag, or a message is undecodable.
        DataError: The topic holds no usable calibration.
    """

    def __init__(self, reader: BagReader, topic: str) -> None:
        self.topic = topic
        self.unusable = 0
        track: dict[int, CameraIntrinsics] = {}
        for message in reader.messages([topic]):
            if message.msgtype != CAMERA_INFO_TYPE:
                raise BagError(
                    f"topic {topic!r} of bag {str(reader.path)!r} holds {message.msgtype}, "
                    f"not {CAMERA_INFO_TYPE}"
                )
            try:
                track[header_stamp_ns(message.msg.header)] = camera_info_intrinsics(message.msg)
            except EncodingError:
                self.unusable += 1
        if not track:
            raise DataError(
                f"camera_info topic {topic!r} of bag {str(reader.path)!r} holds no calibrated "
                f"camera ({self.unusable} messages with an all-zero matrix or empty size)"
            )
        self._stamps = np.array(sorted(track), dtype=np.int64)
        self._intrinsics = [track[int(stamp)] for stamp in self._stamps]

    @property
    def calibrations(self) -> list[CameraIntrinsics]:
        """The distinct calibrations of the topic, in stamp order (one for a fixed camera)."""
        distinct: list[CameraIntrinsics] = []
        for intrinsics in self._intrinsics:
            if intrinsics not in distinct:
                distinct.append(intrinsics)
        return distinct

    def at(self, stamp_ns: int) -> CameraIntrinsics:
        """The calibration in force at ``stamp_ns``."""
        index = int(np.searchsorted(self._stamps, stamp_ns, side="right")) - 1
        return self._intrinsics[max(index, 0)]
