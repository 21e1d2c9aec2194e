"""Live replay: the bag played into the running unim2_node, its outputs recorded and evaluated.

**Live** (:func:`replay_live`): the bag's messages are published over DDS (real rclpy, domain
``ROS_DOMAIN_ID``, Fast DDS profile ``FASTDDS_DEFAULT_PROFILES_FILE`` as set) to a running
``unim2_node``, unchanged and at their recorded log times scaled by ``rate`` (as ``ros2 bag play
--rate``; ``rate=inf`` sends as fast as possible). The replay

1. waits for the node (``--node``, default ``/unim2_node``), reads its latched ``label_info``
   (label table, modalities) and its ``sync.slop`` / ``sync.queue_size`` parameters (unless
   given), so the groups it expects are the groups the node forms;
2. publishes each modality on the topic the node subscribes to: the bag's own topic when the
   node listens to it (remapped inputs, as on the robot), else ``<node namespace>/<modality>/
   image``; with the input QoS (default ``sensor_data``, the node's default);
3. records the node's ``labels`` and ``label_info`` into a new rosbag2 ``node_outputs`` in the
   output folder (messages as received; log time = this process's clock at reception, as ``ros2
   bag record`` does; header stamps are the input RGB stamps the node copied);
4. with ``lockstep``, waits after each complete group for its labels (at most ``timeout``
   seconds) before sending more, pausing the recorded timing meanwhile, so every frame is
   measured even when the model is slower than real time. Without it, frames the node drops as
   stale simply get no output; at the end the replay waits until every group has its output or
   no output came for ``timeout`` seconds.

Latency live is the time the labels arrived minus the time the RGB message was published, per
frame, both on this process's monotonic clock. Frames that got no output (dropped by the node,
lost, or timed out) are counted as missing and not scored.

Afterwards the recorded outputs are evaluated exactly like offline labels: the bag is read again
with the same synchroniser settings, and each frame's labels are taken from the output bag by
RGB stamp.
"""

from __future__ import annotations

import functools
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import rclpy
from rcl_interfaces.msg import ParameterType
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter_client import AsyncParameterClient
from rclpy.publisher import Publisher
from rclpy.qos import (
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from unim2_core.errors import ConfigError
from unim2_core.evaluation.replay_writer import ReplayResult
from unim2_core.runtime.sync import ApproximateTimeSynchronizer
from unim2_ros.bag_io import (
    CAMERA_INFO_TYPE,
    IMAGE_TYPE,
    MODALITY_ENCODINGS,
    STRING_TYPE,
    BagImageWriter,
    BagMessage,
    BagReader,
    StorageFormat,
    camera_info_topic,
    typestore,
)
from unim2_ros.bag_record import adapted_qos, bag_qos
from unim2_ros.errors import ImageConversionError, NodeConnectionError, ReplayError
from unim2_ros.image_conversion import header_stamp_ns, image_to_array
from unim2_ros.label_info import LabelInfoDocument, parse_label_info
from unim2_ros.node_parameters import QOS_NAMES, QosName
from unim2_ros.replay.common import ReplayPass, progress_bar, start_pass

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_NODE",
    "DEFAULT_TIMEOUT_S",
    "OUTPUT_BAG",
    "replay_live",
    "split_node_name",
]

DEFAULT_NODE = "/unim2_node"
DEFAULT_TIMEOUT_S = 10.0
"""Live: longest wait for one frame's labels (lockstep) or for more labels at the end."""
DEFAULT_CONNECT_TIMEOUT_S = 60.0
"""Live: longest wait for the node to appear, publish label_info and match the topics (the
node publishes label_info once its model is loaded)."""
OUTPUT_BAG = "node_outputs"
"""Name of the bag of recorded node outputs in the output folder (live mode)."""

_NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNMATCHED_LABEL = re.compile(r"cluster_\d+")
_POLL_S = 0.05
_NS_PER_S = 1_000_000_000
_LISTED_NAMES = 12


def split_node_name(node: str) -> tuple[str, str]:
    """``/ns/name`` -> (``/ns``, ``name``); a name without a leading slash is in ``/``.

    Raises:
        ValueError: The last part is not a valid ROS node name.
    """
    full = node if node.startswith("/") else f"/{node}"
    namespace, _, name = full.rpartition("/")
    if not _NODE_NAME.fullmatch(name):
        raise ValueError(f"{node!r} is not a node name such as /unim2_node or /robot/unim2_node")
    return namespace or "/", name


def _input_qos(name: QosName) -> QoSProfile:
    """The node's input QoS profiles by name (``qos.input``)."""
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "system_default":
        return qos_profile_system_default
    if name == "reliable":
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    raise ValueError(f"qos must be one of {', '.join(QOS_NAMES)}, got {name!r}")


class _Received(NamedTuple):
    """One message from the node, as it arrived."""

    topic: str
    data: bytes
    arrival_ns: int
    log_ns: int


def _listed(names: Iterable[str]) -> str:
    items = sorted(names)
    text = ", ".join(items[:_LISTED_NAMES]) or "none"
    if len(items) > _LISTED_NAMES:
        text += f", ... ({len(items)} in all)"
    return text


class _NodeLink:
    """This process's DDS participant: finds the node, publishes inputs, receives outputs.

    Subscription callbacks only stamp and queue the raw messages; the replay's thread takes
    them from :attr:`received` (the output bag's sqlite3 writer belongs to that thread).
    """

    def __init__(self, target: str, *, connect_timeout: float) -> None:
        self.namespace, self.name = split_node_name(target)
        self.target = f"{self.namespace.rstrip('/')}/{self.name}"
        self.labels_topic = f"{self.target}/labels"
        self.label_info_topic = f"{self.target}/label_info"
        self.connect_timeout = connect_timeout
        self.received: queue.Queue[_Received] = queue.Queue()
        self.context = Context()
        rclpy.init(args=[], context=self.context)
        try:
            self.node = Node("unim2_replay", context=self.context)
        except BaseException:
            self.context.try_shutdown()
            raise
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._subscriptions: list[Subscription[Any]] = []

    def close(self) -> None:
        """Stops spinning and leaves the DDS domain."""
        self.executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()
        self.context.try_shutdown()

    def _wait(self, ready: Callable[[], bool], failure: Callable[[], str]) -> None:
        deadline = time.monotonic() + self.connect_timeout
        while not ready():
            if time.monotonic() > deadline:
                raise NodeConnectionError(failure())
            time.sleep(_POLL_S)

    def _node_seen(self) -> bool:
        return (self.name, self.namespace) in self.node.get_node_names_and_namespaces()

    def wait_for_node(self) -> None:
        """Raises ReplayError unless the node appears within the connect timeout."""

        def failure() -> str:
            seen = [
                f"{ns.rstrip('/')}/{name}"
                for name, ns in self.node.get_node_names_and_namespaces()
                if name != self.node.get_name()
            ]
            return (
                f"node {self.target!r} not found within {self.connect_timeout:g} s (nodes seen: "
                f"{_listed(seen)}); start unim2_node or check --node, ROS_DOMAIN_ID and "
                "the DDS discovery settings"
            )

        self._wait(self._node_seen, failure)

    def _record(self, topic: str, data: bytes) -> None:
        arrival = time.monotonic_ns()
        log_ns = self.node.get_clock().now().nanoseconds
        self.received.put(_Received(topic, data, arrival, log_ns))

    def _published(self, topic: str) -> bool:
        return bool(self.node.get_publishers_info_by_topic(topic))

    def _not_published(self, topic: str) -> str:
        return (
            f"node {self.target!r} does not publish {topic!r} within {self.connect_timeout:g} s; "
            "is it a unim2_node?"
        )

    def subscribe_outputs(self) -> tuple[list[Any], list[Any]]:
        """Subscribes to labels and label_info once the node publishes them.

        Returns:
            The QoS profiles offered by the publishers of labels and of label_info, for the
            output bag.
        """
        offered: list[list[Any]] = []
        for topic, msg_type in ((self.labels_topic, Image), (self.label_info_topic, String)):
            self._wait(
                functools.partial(self._published, topic),
                functools.partial(self._not_published, topic),
            )
            publishers = self.node.get_publishers_info_by_topic(topic)
            profile = adapted_qos(publishers)
            profile.depth = 100
            self._subscriptions.append(
                self.node.create_subscription(
                    msg_type,
                    topic,
                    functools.partial(self._record, topic),
                    profile,
                    raw=True,
                )
            )
            offered.append([bag_qos(info.qos_profile) for info in publishers])
        return offered[0], offered[1]

    def sync_parameters(self) -> tuple[float, int]:
        """The node's ``sync.slop`` and ``sync.queue_size``.

        Raises:
            ReplayError: The node's parameter services do not answer in time.
        """
        client = AsyncParameterClient(self.node, self.target)
        if not client.wait_for_services(timeout_sec=self.connect_timeout):
            raise NodeConnectionError(
                f"node {self.target!r} offers no parameter services within "
                f"{self.connect_timeout:g} s; give --slop and --queue-size"
            )
        future = client.get_parameters(["sync.slop", "sync.queue_size"])
        self._wait(
            future.done,
            lambda: (
                f"node {self.target!r} did not answer a parameter request within "
                f"{self.connect_timeout:g} s"
            ),
        )
        response = future.result()
        values = [] if response is None else list(response.values)
        types = [value.type for value in values]
        if types != [ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_INTEGER]:
            raise ReplayError(
                f"node {self.target!r} has no double sync.slop and integer sync.queue_size; "
                "give --slop and --queue-size"
            )
        return float(values[0].double_value), int(values[1].integer_value)

    def input_topics(self, topics: Mapping[str, str]) -> dict[str, str]:
        """Where to publish each modality: the bag's topic if the node subscribes to it, else
        ``<namespace>/<modality>/image``.

        Raises:
            ReplayError: The node subscribes to neither within the connect timeout.
        """
        prefix = self.namespace.rstrip("/")
        candidates = {m: (t, f"{prefix}/{m}/image") for m, t in topics.items()}
        chosen: dict[str, str] = {}
        subscribed = self._subscribed

        def ready() -> bool:
            present = subscribed()
            for modality, options in candidates.items():
                found = [topic for topic in options if topic in present]
                if not found:
                    return False
                chosen[modality] = found[0]
            return True

        def failure() -> str:
            absent = [m for m in candidates if m not in chosen]
            return (
                f"node {self.target!r} subscribes to none of "
                + "; ".join(f"{' or '.join(map(repr, candidates[m]))}" for m in absent)
                + f" (its subscriptions: {_listed(subscribed())}); remap its inputs to the "
                "bag's topics"
            )

        self._wait(ready, failure)
        return chosen

    def camera_info_topics(self, topics: Mapping[str, str]) -> dict[str, str]:
        """Bag camera_info topic -> where to publish it: the same topic if the node subscribes
        to it, else ``<namespace>/<modality>/camera_info``; ``topics`` maps modality -> bag
        topic. Topics the node reads under neither name are left out (it does not need them).
        """
        prefix = self.namespace.rstrip("/")
        present = self._subscribed()
        chosen: dict[str, str] = {}
        for modality, topic in topics.items():
            found = [t for t in (topic, f"{prefix}/{modality}/camera_info") if t in present]
            if found:
                chosen[topic] = found[0]
        return chosen

    def _subscribed(self) -> set[str]:
        """The topics the node subscribes to (empty while it is not seen)."""
        if not self._node_seen():
            return set()
        try:
            pairs = self.node.get_subscriber_names_and_types_by_node(self.name, self.namespace)
        except RuntimeError:  # rclpy's NodeNameNonExistentError: it left in between
            return set()
        return {topic for topic, _ in pairs}

    def publishers(
        self, topics: Mapping[str, str], qos: QoSProfile, msg_type: type = Image
    ) -> dict[str, Publisher[Any]]:
        """Publishers of ``msg_type`` on ``topics``, once the node's subscriptions have matched
        them.

        Raises:
            ReplayError: A publisher is not matched within the connect timeout (QoS mismatch:
                a reliable subscription never matches a best-effort publisher).
        """
        made: dict[str, Publisher[Any]] = {
            k: self.node.create_publisher(msg_type, topic, qos) for k, topic in topics.items()
        }
        self._wait(
            lambda: (
                all(p.get_subscription_count() > 0 for p in made.values())
                and all(s.get_publisher_count() > 0 for s in self._subscriptions)
            ),
            lambda: (
                f"node {self.target!r} did not connect to "
                + ", ".join(p.topic_name for p in made.values() if p.get_subscription_count() == 0)
                + f" within {self.connect_timeout:g} s; does the input QoS match its qos.input?"
            ),
        )
        return made


class _Play:
    """The replay's state while publishing: what was sent, what came back, the output bag."""

    def __init__(
        self, link: _NodeLink, writer: BagImageWriter, *, timeout: float, lockstep: bool
    ) -> None:
        self.link = link
        self.writer = writer
        self.timeout = timeout
        self.lockstep = lockstep
        self.published: dict[int, int] = {}
        """RGB stamp -> monotonic time it was published."""
        self.arrived: dict[int, int] = {}
        """RGB stamp of labels received -> monotonic arrival time (first output only)."""
        self.groups: list[int] = []
        """RGB stamps of the groups sent, as the node's synchroniser forms them."""
        self.label_info_written = False
        self.outputs = 0
        self.timed_out = 0
        """Lockstep waits that ended without the group's labels (each cost the timeout)."""

    def drain(self, timeout: float) -> None:
        """Handles the messages received, waiting up to ``timeout`` seconds for the first."""
        try:
            item = self.link.received.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return
        while True:
            self._handle(item)
            try:
                item = self.link.received.get_nowait()
            except queue.Empty:
                return

    def _handle(self, item: _Received) -> None:
        if item.topic == self.link.label_info_topic:
            if not self.label_info_written:
                self.label_info_written = True
                self.writer.write_raw(item.topic, item.log_ns, item.data)
            return
        msg: Any = typestore().deserialize_cdr(item.data, IMAGE_TYPE)
        self.writer.write_raw(item.topic, item.log_ns, item.data)
        self.outputs += 1
        self.arrived.setdefault(header_stamp_ns(msg.header), item.arrival_ns)

    def sleep_until(self, deadline_ns: int) -> None:
        """Handles received messages until the monotonic time ``deadline_ns``."""
        while (left := deadline_ns - time.monotonic_ns()) > 0:
            self.drain(left / _NS_PER_S)

    def wait_for_output(self, stamp_ns: int) -> None:
        """Waits until the labels of ``stamp_ns`` arrived, at most the timeout."""
        deadline = time.monotonic_ns() + int(self.timeout * _NS_PER_S)
        while stamp_ns not in self.arrived and (left := deadline - time.monotonic_ns()) > 0:
            self.drain(left / _NS_PER_S)
        if stamp_ns not in self.arrived:
            self.timed_out += 1

    def wait_for_rest(self) -> None:
        """Waits until every group has its labels or none came for the timeout."""
        last = (len(self.arrived), time.monotonic_ns())
        while any(stamp not in self.arrived for stamp in self.groups):
            idle = time.monotonic_ns() - last[1]
            left = int(self.timeout * _NS_PER_S) - idle
            if left <= 0:
                return
            self.drain(left / _NS_PER_S)
            if len(self.arrived) != last[0]:
                last = (len(self.arrived), time.monotonic_ns())


def _usable(message: BagMessage, modality: str) -> bool:
    """Whether the bag reader (hence the node) can use this Image for ``modality``."""
    if str(message.msg.encoding) not in MODALITY_ENCODINGS[modality]:
        return False
    try:
        image_to_array(message.msg)
    except ImageConversionError:
        return False
    return True


def _play(
    reader: BagReader,
    play: _Play,
    publishers: Mapping[str, Publisher[Any]],
    topics: Mapping[str, str],
    *,
    camera_infos: Mapping[str, Publisher[Any]],
    rate: float,
    slop: float,
    queue_size: int,
    strict: bool,
    progress: bool,
) -> int:
    """Publishes the bag's messages of ``topics`` (and the ``camera_infos`` topics) in log order
    at ``rate``; returns the count.

    Groups are formed as the node forms them: camera_info, which the node synchronises after
    the images, is a member of each group, so lockstep waits for labels only once the group's
    camera_info is out too (the bag logs it after the images of the same stamp).
    """
    role = {topic: modality for modality, topic in topics.items()}
    members = [*topics.values(), *camera_infos]
    sync: ApproximateTimeSynchronizer[int] = ApproximateTimeSynchronizer(
        len(members), queue_size=queue_size, slop=slop
    )
    messages = reader.messages(members, strict=strict)
    total = sum(reader.info.topics[topic].message_count for topic in members)
    store = typestore()
    first_log: int | None = None
    start = time.monotonic_ns()
    paused = 0
    sent = 0
    for message in progress_bar(
        messages, total=total, unit="msg", description="publishing", enabled=progress
    ):
        if first_log is None:
            first_log = message.timestamp_ns
        if math.isfinite(rate):
            play.sleep_until(start + paused + int((message.timestamp_ns - first_log) / rate))
        else:
            play.drain(0.0)
        sent += 1
        stamp = header_stamp_ns(message.msg.header)
        if message.topic in camera_infos:
            camera_infos[message.topic].publish(
                bytes(store.serialize_cdr(message.msg, CAMERA_INFO_TYPE))
            )
        else:
            modality = role[message.topic]
            if modality == "rgb":
                play.published.setdefault(stamp, time.monotonic_ns())
            publishers[modality].publish(bytes(store.serialize_cdr(message.msg, IMAGE_TYPE)))
            if not _usable(message, modality):
                continue
        group = sync.add(members.index(message.topic), stamp, stamp)
        if group is None:
            continue
        play.groups.append(group[0])
        if play.lockstep:
            waited = time.monotonic_ns()
            play.wait_for_output(group[0])
            paused += time.monotonic_ns() - waited
    play.wait_for_rest()
    return sent


class _OutputLookup:
    """The recorded labels by RGB stamp, read from the output bag in one forward pass."""

    def __init__(self, messages: Iterator[BagMessage], stamps: Iterable[int]) -> None:
        self._messages = messages
        self._stamps = set(stamps)
        self._ahead: dict[int, Any] = {}

    def take(self, stamp_ns: int) -> npt.NDArray[Any] | None:
        if stamp_ns not in self._stamps:
            return None
        self._stamps.discard(stamp_ns)
        if stamp_ns in self._ahead:
            return np.array(image_to_array(self._ahead.pop(stamp_ns)))
        for message in self._messages:
            stamp = header_stamp_ns(message.msg.header)
            if stamp == stamp_ns:
                return np.array(image_to_array(message.msg))
            if stamp in self._stamps:
                self._ahead.setdefault(stamp, message.msg)
        return None


def _class_names_of(document: LabelInfoDocument) -> tuple[tuple[str, ...], str] | None:
    """The classes of a node whose labels are classes: the table without the trailing
    ``cluster_<k>`` entries the Segmenter appends for unmatched clusters."""
    if document.label_source != "classes":
        return None
    names = [label.name for label in document.labels]
    while names and _UNMATCHED_LABEL.fullmatch(names[-1]):
        names.pop()
    return (tuple(names), "class names from the node's label_info") if names else None


def replay_live(
    bag: str | Path,
    topics: Mapping[str, str],
    out_dir: str | Path,
    *,
    node: str = DEFAULT_NODE,
    rate: float = 1.0,
    lockstep: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    label_topic: str | None = None,
    label_dir: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = None,
    queue_size: int | None = None,
    slop: float | None = None,
    qos: QosName = "sensor_data",
    storage: StorageFormat = "sqlite3",
    strict: bool = True,
    video: bool = True,
    overlay_alpha: float = 0.5,
    progress: bool = False,
) -> ReplayResult:
    """Plays a bag into the running node, records its outputs and evaluates them.

    Args:
        bag: rosbag2 folder, ``.db3`` or ``.mcap``.
        topics: Modality -> Image topic in the bag; every modality of the node's model is
            needed.
        out_dir: Output folder, new or empty; the outputs are recorded in its ``node_outputs``.
        node: The node's fully qualified name.
        rate: Playback speed factor of the recorded timing; ``math.inf``: no pauses.
        lockstep: Wait for each group's labels before sending more.
        timeout: Seconds to wait for one frame's labels (lockstep) or, at the end, for more.
        connect_timeout: Seconds to wait for the node, its label_info and the topic matching.
        label_topic: Image topic of ground-truth class ids in the bag.
        label_dir: Folder of ground-truth PNGs (``unim2_core.evaluation.ground_truth.LabelFolder``).
        class_names: Names of the ground-truth classes (default:
            ``unim2_core.evaluation.ground_truth``).
        ignore_index: Ground-truth value of unlabelled pixels (default: the label folder's
            ``dataset.yaml``, else 255).
        queue_size: Synchroniser queue size; the node's ``sync.queue_size`` when None.
        slop: Synchroniser slop in seconds; the node's ``sync.slop`` when None.
        qos: QoS of the published inputs: ``sensor_data`` (the node's default input QoS),
            ``reliable`` or ``system_default``.
        storage: Storage of the output bag, ``sqlite3`` or ``mcap``.
        strict: Raise on an undecodable message in the bag; otherwise skip and count it.
        video: Write the overlay video.
        overlay_alpha: Weight of the label colours in the overlays.
        progress: Show progress bars on stderr.

    Returns:
        The result, with the output bag and the number of frames without labels.

    Raises:
        ValueError: A rate or timeout that is not positive, an unknown QoS name, both ground
            truth sources, or a bad node name.
        ConfigError: A modality of the node's model has no topic.
        BagError: As ``replay_offline``, or the output bag cannot be written.
        NodeConnectionError: The node does not appear, publish label_info or connect in time
            (a ReplayError).
        ReplayError: The node's answers are unusable.
        DataError: As ``replay_offline``.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate!r}")
    for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    input_qos = _input_qos(qos)
    split_node_name(node)
    if label_topic is not None and label_dir is not None:
        raise ValueError("give a label topic or a label folder, not both")
    with BagReader(bag) as reader:
        reader.frame_groups(topics, label_topic=label_topic)  # topics exist and are Images
        link = _NodeLink(node, connect_timeout=connect_timeout)
        try:
            link.wait_for_node()
            labels_qos, info_qos = link.subscribe_outputs()
            document = _wait_label_info(link)
            if slop is None or queue_size is None:
                node_slop, node_queue = link.sync_parameters()
                slop = node_slop if slop is None else slop
                queue_size = node_queue if queue_size is None else queue_size
            replay = start_pass(
                reader,
                topics,
                document.modalities,
                out_dir,
                mode="live",
                model=f"node {link.target} (checkpoint {document.checkpoint!r}, backbone "
                f"{document.backbone.get('name')}, {len(document.labels)} labels, "
                f"{document.label_source})",
                latency="Time the labels arrived here minus the time the RGB message was "
                "published from here (DDS transport, synchronisation, queueing and "
                "inference in the node)",
                labels_table=document.labels,
                model_names=_class_names_of(document),
                label_topic=label_topic,
                label_dir=label_dir,
                class_names=class_names,
                ignore_index=ignore_index,
                queue_size=queue_size,
                slop=slop,
                strict=strict,
                settings={
                    "rate": rate,
                    "lockstep": lockstep,
                    "timeout_s": timeout,
                    "qos": qos,
                },
                overlay_alpha=overlay_alpha,
                video=video,
            )
            used = replay.topics
            publishers = link.publishers(link.input_topics(used), input_qos)
            beside = {m: camera_info_topic(t) for m, t in used.items()}
            camera_infos = link.publishers(
                link.camera_info_topics(
                    {m: t for m, t in beside.items() if t in reader.info.topics}
                ),
                input_qos,
                CameraInfo,
            )
            output_bag = replay.writer.out_dir / OUTPUT_BAG
            with BagImageWriter(output_bag, storage=storage) as bag_writer:
                bag_writer.add_topic(link.labels_topic, IMAGE_TYPE, qos=labels_qos)
                bag_writer.add_topic(link.label_info_topic, STRING_TYPE, qos=info_qos)
                play = _Play(link, bag_writer, timeout=timeout, lockstep=lockstep)
                play.drain(0.0)
                sent = _play(
                    reader,
                    play,
                    publishers,
                    used,
                    camera_infos=camera_infos,
                    rate=rate,
                    slop=slop,
                    queue_size=queue_size,
                    strict=strict,
                    progress=progress,
                )
        finally:
            link.close()
        _evaluate_outputs(replay, play, output_bag, link.labels_topic, progress)
        return replay.finish(
            {
                "input messages published": sent,
                "groups sent (as the node groups them)": len(play.groups),
                "label outputs received": play.outputs,
                "lockstep waits timed out": play.timed_out,
            },
            output_bag=output_bag,
        )


def _wait_label_info(link: _NodeLink) -> LabelInfoDocument:
    """The node's latched label_info, parsed (it is also kept for the output bag)."""
    deadline = time.monotonic() + link.connect_timeout
    pending: list[_Received] = []
    while True:
        try:
            item = link.received.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            raise NodeConnectionError(
                f"node {link.target!r} published no label_info within "
                f"{link.connect_timeout:g} s (it publishes it once its model is loaded)"
            ) from None
        pending.append(item)
        if item.topic == link.label_info_topic:
            break
    for kept in pending:
        link.received.put(kept)
    msg: Any = typestore().deserialize_cdr(pending[-1].data, STRING_TYPE)
    text = str(msg.data)
    try:
        return parse_label_info(text)
    except ConfigError as err:
        raise ReplayError(f"node {link.target!r}: {err}") from err


def _evaluate_outputs(
    replay: ReplayPass,
    play: _Play,
    output_bag: Path,
    labels_topic: str,
    progress: bool,
) -> None:
    """Adds every frame of the bag to the replay with the labels recorded for it."""
    with BagReader(output_bag) as outputs:
        recorded = outputs.messages([labels_topic]) if play.outputs else iter(())
        lookup = _OutputLookup(recorded, play.arrived)
        frames = progress_bar(
            replay.stream,
            total=len(play.groups),
            unit="frame",
            description="evaluating",
            enabled=progress,
        )
        for index, frame in enumerate(frames):
            labels = lookup.take(frame.stamp_ns)
            latency_ms = None
            if labels is not None and frame.stamp_ns in play.published:
                latency_ms = (play.arrived[frame.stamp_ns] - play.published[frame.stamp_ns]) / 1e6
            replay.add(index, frame, labels, latency_ms)
