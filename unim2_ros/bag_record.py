"""unim2_record: records ROS 2 topics into a rosbag2 where ``ros2 bag`` is not installed.

``unim2_record -o OUT_BAG [--storage sqlite3|mcap] [--duration S] [--max-messages N] TOPIC...``

Messages are taken as serialised CDR bytes (raw subscriptions) and written unchanged, so the
bag holds exactly what went over the wire and recording costs no (de)serialisation. Each
message's log time is the node clock's time at reception (ROS time under ``use_sim_time``).

Like ``ros2 bag record``, the recorder waits for each topic to appear in the graph, takes its
type from the graph and adapts its subscription to the publishers present then: reliable when
every publisher is reliable (best effort otherwise, which matches any publisher), transient
local when every publisher is (so latched messages such as ``label_info`` are recorded), keep
last 10. The bag records the QoS profiles the publishers offered, so ``ros2 bag play`` offers
them again. A topic is recorded only when its type is in the ``rosbags`` type store with the
same type hash as the live type, which guarantees the bag decodes with ``rosbags``.

Beside every recorded Image topic the recorder also records its ``camera_info`` topic
(image_transport's convention, ``/cam/depth/image_raw`` -> ``/cam/depth/camera_info``) once
that topic has a publisher, so the bag keeps the calibration that ``unim2_replay`` and
``unim2_import_bag`` read; ``--no-camera-info`` records only the named topics. A camera_info
topic that never appears is not an error.

The recorder stops on SIGINT / SIGTERM, after ``--duration`` seconds (steady clock) or after
``--max-messages`` messages (camera_info messages included), and always finishes the bag it has
written so far.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import rclpy
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from rclpy.topic_endpoint_info import TopicEndpointInfo
from rclpy.utilities import remove_ros_args
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)

from unim2_core.cli import positive_float, positive_int
from unim2_core.errors import Interrupted, Unim2Error
from unim2_ros.bag_io import (
    IMAGE_TYPE,
    BagImageWriter,
    StorageFormat,
    camera_info_topic,
    typestore,
)
from unim2_ros.errors import BagError
from unim2_ros.rclpy_internals import RCLError
from unim2_ros.ros_cli import run_ros_cli

SUBSCRIPTION_DEPTH = 10
"""History depth of the recorder's subscriptions, as ``ros2 bag record``."""

DISCOVERY_PERIOD = 0.1
"""Seconds between looks at the graph for topics not yet subscribed."""

NOT_SEEN_WARNING_S = 5.0
"""Seconds after which topics that have not appeared are logged as a warning (once)."""

_NS_PER_S = 1_000_000_000


class RecordSummary(NamedTuple):
    """What a recorder wrote.

    Attributes:
        path: The bag folder.
        storage: ``"sqlite3"`` or ``"mcap"``.
        message_counts: Recorded topic -> messages written.
        msgtypes: Recorded topic -> message type.
        not_recorded: Requested topic -> why it is not in the bag (never appeared, or its type
            cannot be recorded).
    """

    path: Path
    storage: StorageFormat
    message_counts: Mapping[str, int]
    msgtypes: Mapping[str, str]
    not_recorded: Mapping[str, str]


_Command = Callable[[BagImageWriter], None]


class _WriterThread:
    """Owns the bag writer in a thread of its own and writes what the callbacks hand over.

    sqlite3 connections may only be used by the thread that opened them, and a callback must
    not wait on the disk; so every bag operation is queued to this thread. The queue is
    unbounded: nothing is dropped, memory grows only while the disk is slower than the data.
    """

    def __init__(self, path: Path, storage: StorageFormat) -> None:
        self._commands: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._opened = threading.Event()
        self._error: Unim2Error | None = None
        self._counts: Mapping[str, int] = {}
        self._thread = threading.Thread(
            target=self._run, args=(path, storage), name="unim2_record_writer", daemon=True
        )
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    @property
    def failed(self) -> bool:
        """True once a bag operation has failed; later commands are ignored."""
        return self._error is not None

    def submit(self, command: _Command) -> None:
        """Queues ``command`` to run with the writer in the writer thread."""
        self._commands.put(command)

    @property
    def counts(self) -> Mapping[str, int]:
        """Topic -> messages written; complete once :meth:`close` has returned or raised."""
        return self._counts

    def close(self) -> None:
        """Writes what is queued and finishes the bag. Idempotent.

        Raises:
            BagError: A bag operation failed (the bag is finished anyway, with what it holds).
        """
        if self._thread.is_alive():
            self._commands.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self, path: Path, storage: StorageFormat) -> None:
        try:
            writer = BagImageWriter(path, storage=storage)
        except (BagError, ValueError) as err:
            self._error = err if isinstance(err, BagError) else BagError(str(err))
            self._opened.set()
            return
        self._opened.set()
        while (command := self._commands.get()) is not None:
            if self._error is None:
                try:
                    command(writer)
                except BagError as err:
                    self._error = err
        try:
            writer.close()
        except BagError as err:
            self._error = self._error or err
        self._counts = dict(writer.message_counts)


class BagRecorder(Node):
    """Records topics into a new rosbag2 (module docstring: QoS, log times, stop rules).

    Args:
        output: Bag folder to create; it must not exist.
        topics: Topics to record (relative names are resolved in the node's namespace).
        storage: ``"sqlite3"`` or ``"mcap"``.
        max_messages: Stop after this many messages in total; None for no limit.
        duration: Stop after this many seconds; None for no limit.
        camera_info: Also record the ``camera_info`` topic beside each Image topic (module
            docstring).
        context: rclpy context of the node; the global one when None.

    Raises:
        ValueError: No topic, or a limit that is not positive.
        BagError: A topic name is invalid, or the bag cannot be created (e.g. ``output``
            exists).
    """

    def __init__(
        self,
        output: str | Path,
        topics: Sequence[str],
        *,
        storage: StorageFormat = "sqlite3",
        max_messages: int | None = None,
        duration: float | None = None,
        camera_info: bool = True,
        context: Context | None = None,
    ) -> None:
        if not topics:
            raise ValueError("at least one topic to record is required")
        if max_messages is not None and (isinstance(max_messages, bool) or max_messages < 1):
            raise ValueError(f"max_messages must be an integer >= 1, got {max_messages!r}")
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"duration must be a finite number of seconds > 0, got {duration!r}")
        super().__init__("unim2_record", context=context)
        self.done: Future[None] = Future()
        """Completes when a stop condition is reached (limit, duration or a write failure)."""
        self._path = Path(output)
        self._storage = storage
        self._max_messages = max_messages
        self._camera_info = camera_info
        self._beside: set[str] = set()
        """``camera_info`` topics beside recorded Image topics, not subscribed yet (optional:
        never in ``not_recorded`` while they have not appeared)."""
        self._lock = threading.Lock()
        self._accepted = 0
        self._msgtypes: dict[str, str] = {}
        self._not_recorded: dict[str, str] = {}
        try:
            self._pending = {_resolved(self, topic) for topic in topics}
            self._writer = _WriterThread(self._path, storage)
        except BagError:
            super().destroy_node()
            raise
        for topic in sorted(self._pending):
            self._not_recorded[topic] = "never appeared"
            self.get_logger().info(f"waiting for topic {topic!r}")
        self._started = time.monotonic()
        self._warned = False
        self._discovery = self.create_timer(DISCOVERY_PERIOD, self._discover)
        if duration is not None:
            self._stop_timer = self.create_timer(
                duration, self._on_duration, clock=Clock(clock_type=ClockType.STEADY_TIME)
            )

    def _discover(self) -> None:
        """Subscribes to every pending topic (and camera_info beside an Image topic) that now
        has a publisher."""
        graph = dict(self.get_topic_names_and_types())
        for topic in sorted(self._pending | self._beside):
            types = graph.get(topic)
            publishers = self.get_publishers_info_by_topic(topic)
            if not types or not publishers:
                continue
            self._pending.discard(topic)
            self._beside.discard(topic)
            problem = _unrecordable(topic, types, publishers)
            if problem is not None:
                with self._lock:
                    self._not_recorded[topic] = problem
                self.get_logger().error(f"not recording {topic!r}: {problem}")
                continue
            msgtype = types[0]
            offered = [bag_qos(info.qos_profile) for info in publishers]
            self._writer.submit(functools.partial(_add_topic, topic, msgtype, offered))
            self.create_subscription(
                _message_class(msgtype),
                topic,
                functools.partial(self._on_message, topic),
                adapted_qos(publishers),
                raw=True,
            )
            with self._lock:
                self._not_recorded.pop(topic, None)
                self._msgtypes[topic] = msgtype
            self.get_logger().info(f"recording {topic!r} ({msgtype})")
            if self._camera_info and msgtype == IMAGE_TYPE:
                self._record_beside(camera_info_topic(topic))
        if not self._pending and not self._beside:
            self._discovery.cancel()
        elif not self._warned and time.monotonic() - self._started > NOT_SEEN_WARNING_S:
            self._warned = True
            missing = ", ".join(repr(topic) for topic in sorted(self._pending))
            self.get_logger().warning(
                f"no publisher of {missing} after {NOT_SEEN_WARNING_S:g} s; still waiting "
                "(check the names with ros2 topic list, and ROS_DOMAIN_ID)"
            )

    def _record_beside(self, topic: str) -> None:
        """Watches for ``topic`` (a camera_info beside an Image topic) unless it is recorded or
        watched already."""
        with self._lock:
            known = topic in self._msgtypes or topic in self._not_recorded
        if known or topic in self._pending or topic in self._beside:
            return
        self._beside.add(topic)
        self.get_logger().info(f"also recording {topic!r} once it is published")

    def _on_message(self, topic: str, data: bytes) -> None:
        stamp = self.get_clock().now().nanoseconds
        with self._lock:
            if self._max_messages is not None and self._accepted >= self._max_messages:
                return
            self._accepted += 1
            self._writer.submit(functools.partial(_write, topic, stamp, data))
            limit_reached = self._accepted == self._max_messages
        if limit_reached or self._writer.failed:
            self._finish()

    def _on_duration(self) -> None:
        self._stop_timer.cancel()
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def summary(self) -> RecordSummary:
        """What was recorded; the message counts are complete once the node is destroyed.

        Safe to call from any thread while the node spins.
        """
        with self._lock:
            msgtypes, not_recorded = dict(self._msgtypes), dict(self._not_recorded)
        return RecordSummary(
            path=self._path,
            storage=self._storage,
            message_counts=dict(self._writer.counts),
            msgtypes=msgtypes,
            not_recorded=not_recorded,
        )

    def destroy_node(self) -> None:
        """Finishes the bag, then destroys the node.

        Raises:
            BagError: A bag operation failed while recording or finishing (the node is
                destroyed and the bag finished with what it holds anyway).
        """
        try:
            self._writer.close()
        finally:
            super().destroy_node()


def _resolved(node: Node, topic: str) -> str:
    """``topic`` resolved in ``node``'s namespace.

    Raises:
        BagError: ``topic`` is not a valid ROS topic name (the message says why).
    """
    try:
        return node.resolve_topic_name(topic)
    except RCLError as err:
        reason = str(err).removeprefix("failed to resolve name: ").split(", at ")[0]
        raise BagError(f"invalid topic name {topic!r}: {reason}") from err


def _add_topic(topic: str, msgtype: str, offered: list[Qos], writer: BagImageWriter) -> None:
    writer.add_topic(topic, msgtype, qos=offered)


def _write(topic: str, stamp: int, data: bytes, writer: BagImageWriter) -> None:
    writer.write_raw(topic, stamp, data)


def _unrecordable(
    topic: str, types: Sequence[str], publishers: Sequence[TopicEndpointInfo]
) -> str | None:
    """Why ``topic`` cannot be recorded faithfully, or None when it can."""
    if len(types) != 1:
        return f"it is published with several types: {', '.join(types)}"
    msgtype = types[0]
    store = typestore()
    if msgtype not in store.types:
        return f"type {msgtype!r} is not in the rosbags type store"
    try:
        _message_class(msgtype)
    except BagError as err:
        return str(err)
    expected = store.hash_rihs01(msgtype)
    for info in publishers:
        live = str(getattr(info, "topic_type_hash", "") or "")
        if live.startswith("RIHS01_") and live != expected:
            return (
                f"type {msgtype!r} has hash {live} on the graph but {expected} in the rosbags "
                "type store (a different message definition)"
            )
    return None


def _message_class(msgtype: str) -> Any:
    """Imports the rclpy message class named ``package/msg/Name``."""
    package, _, name = msgtype.rpartition("/")
    try:
        return getattr(importlib.import_module(package.replace("/", ".")), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise BagError(f"message type {msgtype!r} is not installed for rclpy: {err}") from err


def adapted_qos(publishers: Sequence[TopicEndpointInfo]) -> QoSProfile:
    """The subscription QoS that matches every publisher (``ros2 bag record``'s rule).

    Reliable when all publishers are reliable, else best effort; transient local when all are
    transient local, else volatile; keep last :data:`SUBSCRIPTION_DEPTH`.
    """
    profiles = [info.qos_profile for info in publishers]
    reliable = bool(profiles) and all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
    latched = bool(profiles) and all(
        p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles
    )
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=SUBSCRIPTION_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def bag_qos(profile: QoSProfile) -> Qos:
    """Converts a publisher's QoS as seen on the graph to the form a bag records.

    Policies map by name (an unknown one becomes ``UNKNOWN``); durations become
    ``(sec, nsec)``, infinite ones RMW_DURATION_INFINITE ``(9223372036, 854775807)``.
    """

    def policy(enum: Any, value: Any) -> Any:
        return enum.__members__.get(getattr(value, "name", ""), enum.UNKNOWN)

    def duration(value: Any) -> QosTime:
        sec, nsec = divmod(int(value.nanoseconds), _NS_PER_S)
        return QosTime(sec=sec, nsec=nsec)

    return Qos(
        history=policy(QosHistory, profile.history),
        depth=int(profile.depth),
        reliability=policy(QosReliability, profile.reliability),
        durability=policy(QosDurability, profile.durability),
        deadline=duration(profile.deadline),
        lifespan=duration(profile.lifespan),
        liveliness=policy(QosLiveliness, profile.liveliness),
        liveliness_lease_duration=duration(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unim2_record", description="Record ROS 2 topics into a rosbag2 (no ros2 bag needed)."
    )
    parser.add_argument("topics", nargs="+", metavar="TOPIC", help="topics to record")
    parser.add_argument(
        "--out",
        "-o",
        "--output",
        dest="out",
        required=True,
        type=Path,
        help="bag folder to create (-o / --output: old spellings)",
    )
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--max-messages", type=positive_int, metavar="N", help="stop after N messages in total"
    )
    parser.add_argument(
        "--no-camera-info",
        action="store_true",
        help="record only the named topics (default: also the camera_info topic beside each "
        "Image topic, when it is published)",
    )
    return parser


def _format_summary(summary: RecordSummary) -> str:
    total = sum(summary.message_counts.values())
    lines = [
        f"recorded {total} messages on {len(summary.message_counts)} topics to "
        f"{str(summary.path)!r} ({summary.storage})"
    ]
    lines += [
        f"  {topic}: {count} ({summary.msgtypes[topic]})"
        for topic, count in sorted(summary.message_counts.items())
    ]
    lines += [
        f"  {topic}: not recorded, {why}" for topic, why in sorted(summary.not_recorded.items())
    ]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> int:
    """Records until a limit is reached or SIGINT / SIGTERM; prints a summary."""
    argv = sys.argv if args is None else args
    parser = _parser()
    options = parser.parse_args(remove_ros_args(argv)[1:])

    def body() -> int:
        try:
            with rclpy.init(args=argv):
                recorder = BagRecorder(
                    options.out,
                    options.topics,
                    storage=options.storage,
                    max_messages=options.max_messages,
                    duration=options.duration,
                    camera_info=not options.no_camera_info,
                )
                try:
                    rclpy.spin_until_future_complete(recorder, recorder.done)
                except (KeyboardInterrupt, ExternalShutdownException):
                    pass
                finally:
                    recorder.destroy_node()
        except KeyboardInterrupt:
            raise Interrupted("before recording started", signal.SIGINT) from None
        summary = recorder.summary()
        print(_format_summary(summary))
        if not any(summary.message_counts.values()):
            reasons = [f"{topic!r} {why}" for topic, why in sorted(summary.not_recorded.items())]
            why_empty = "; ".join(reasons) or "no message arrived"
            raise BagError(f"nothing was recorded into {str(summary.path)!r}: {why_empty}")
        return 0

    # rclpy's own SIGTERM handler only wakes the executor; chained to Python's SIGINT handler,
    # SIGTERM stops the recording exactly as Ctrl-C does (rclpy chains to the handler it finds).
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run_ros_cli(body, prog="unim2_record")
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


if __name__ == "__main__":
    sys.exit(main())
