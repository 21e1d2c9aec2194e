"""What offline and live replay both set up: model topics, ground truth, frame stream, writer.

A replay pass (:func:`start_pass`) reads the bag's synchronised frame groups of the topics the
model needs, resolves the ground truth (``unim2_core.evaluation.ground_truth``) and opens the
output folder (``unim2_core.evaluation.replay_writer``); :meth:`ReplayPass.add` hands it one frame
with its labels, :meth:`ReplayPass.finish` adds the counts every replay reports and writes the
report. Offline and live differ only in where the labels and latencies come from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from unim2_core.errors import ConfigError
from unim2_core.evaluation.ground_truth import GroundTruth, resolve_ground_truth
from unim2_core.evaluation.replay_report import ReplayMode, ReplaySetup
from unim2_core.evaluation.replay_writer import ReplayResult, ReplayWriter
from unim2_core.runtime.segmenter import LabelInfo
from unim2_ros.bag_io import LABELS_ROLE, BagFrame, BagReader, FrameGroupStream
from unim2_ros.node_parameters import NODE_PARAMETERS

__all__ = [
    "NODE_QUEUE_SIZE",
    "NODE_SLOP",
    "ReplayPass",
    "model_topics",
    "progress_bar",
    "start_pass",
]


def _node_default(name: str) -> Any:
    return next(spec.default for spec in NODE_PARAMETERS if spec.name == name)


NODE_SLOP = float(_node_default("sync.slop"))
"""The node's default ``sync.slop`` (seconds): offline replay groups frames as the node would."""
NODE_QUEUE_SIZE = int(_node_default("sync.queue_size"))
"""The node's default ``sync.queue_size``."""


def model_topics(topics: Mapping[str, str], modalities: Sequence[str]) -> dict[str, str]:
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


def progress_bar(
    stream: Iterable[Any], *, total: int, unit: str, description: str, enabled: bool
) -> Iterable[Any]:
    """``stream`` behind a tqdm bar on stderr when ``enabled``."""
    bar: Iterable[Any] = tqdm(stream, total=total, unit=unit, desc=description, disable=not enabled)
    return bar


class _Located(NamedTuple):
    """Where a streamed frame's RGB and label-topic messages are in the bag."""

    stamp_ns: int
    rgb_log_ns: int
    labels: tuple[int, int] | None
    """Log time and header stamp of its label-topic message, or None."""


class ReplayPass(NamedTuple):
    """One replay's frame stream, ground truth and output folder (:func:`start_pass`).

    Attributes:
        reader: The open bag.
        topics: Modality -> topic of the modalities the model needs, in its order.
        truth: The ground truth.
        stream: The bag's synchronised frame groups of ``topics`` (and the label topic).
        writer: The output folder.
        located: Position -> where the messages of each frame with labels and ground truth
            are, so the report's comparison figures read just those again.
    """

    reader: BagReader
    topics: dict[str, str]
    truth: GroundTruth
    stream: FrameGroupStream
    writer: ReplayWriter
    located: dict[int, _Located]

    def add(
        self, index: int, frame: BagFrame, labels: npt.NDArray[Any] | None, latency_ms: float | None
    ) -> None:
        """Writes frame ``index`` of the stream with its labels (None: no output) and scores it.

        Raises:
            DataError: As :meth:`ReplayWriter.add_frame`, or ground truth that does not fit.
        """
        rgb = frame.arrays["rgb"]
        truth = self.truth.labels(frame.stamp_ns, frame.labels, rgb)
        self.writer.add_frame(index, frame.stamp_ns, rgb, labels, truth, latency_ms)
        if labels is not None and truth is not None:
            self.located[index] = _Located(
                frame.stamp_ns,
                frame.log_times_ns["rgb"],
                None
                if self.truth.topic is None
                else (frame.log_times_ns[LABELS_ROLE], frame.headers[LABELS_ROLE].stamp_ns),
            )

    def finish(self, counts: dict[str, int], *, output_bag: Path | None = None) -> ReplayResult:
        """Writes the report once the stream is exhausted; ``counts`` gain the label folder's
        files that matched no frame.

        Raises:
            DataError: A file cannot be written.
        """
        stats = self.stream.stats()
        if self.truth.folder is not None:
            counts["label files matching no frame"] = self.truth.folder.unused
        return self.writer.finish(
            skipped=stats.skipped,
            not_in_group=stats.dropped,
            counts=counts,
            output_bag=output_bag,
            frame_source=self._frame_source,
        )

    def _frame_source(
        self, positions: frozenset[int]
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """The RGB and ground truth of streamed frames, for the report's comparison figures.

        Each frame's messages are read again by their log times (:meth:`BagReader.image_at`),
        not by a second pass over the bag.
        """
        for position in sorted(positions):
            where = self.located[position]
            rgb = self.reader.image_at(self.topics["rgb"], "rgb", where.rgb_log_ns, where.stamp_ns)
            topic_labels = None
            if where.labels is not None and self.truth.topic is not None:
                topic_labels = self.reader.image_at(self.truth.topic, LABELS_ROLE, *where.labels)
            truth = self.truth.labels(where.stamp_ns, topic_labels, rgb)
            if truth is not None:
                yield position, rgb, truth


def start_pass(
    reader: BagReader,
    topics: Mapping[str, str],
    modalities: Sequence[str],
    out_dir: str | Path,
    *,
    mode: ReplayMode,
    model: str,
    latency: str,
    labels_table: Sequence[LabelInfo],
    model_names: tuple[tuple[str, ...], str] | None,
    label_topic: str | None,
    label_dir: str | Path | None,
    class_names: Sequence[str] | None,
    ignore_index: int | None,
    queue_size: int,
    slop: float,
    strict: bool,
    settings: Mapping[str, Any],
    overlay_alpha: float,
    video: bool,
) -> ReplayPass:
    """Sets up a replay of ``reader``: the model's topics, ground truth, stream and writer.

    The stream is built (topics checked against the bag's metadata, no message read) before
    the output folder is created, so a bad topic leaves no folder behind.

    Args:
        reader: The open bag.
        topics: Modality -> Image topic as given.
        modalities: The modalities the model needs.
        out_dir: Output folder, new or empty.
        mode: ``offline`` or ``live``, for the report.
        model: One line describing the model, for the report.
        latency: One line saying what the latency measures, for the report.
        labels_table: The label ids the outputs hold.
        model_names: The model's class names and their origin (ground truth fallback), or None.
        label_topic: Ground-truth label topic of the bag.
        label_dir: Ground-truth label folder.
        class_names: Ground-truth class names as given.
        ignore_index: Ground-truth ignore index as given.
        queue_size: Synchroniser queue size per topic.
        slop: Synchroniser slop, seconds.
        strict: Raise on an undecodable message; otherwise skip and count it.
        settings: Settings of this kind of pass for the report (the synchroniser's and
            ``strict`` are added here).
        overlay_alpha: Weight of the label colours in the overlays.
        video: Write the overlay video.

    Raises:
        ConfigError: A modality of the model has no topic, or bad class names.
        ValueError: Both ground truth sources, or a synchroniser argument out of range.
        BagError: A topic is not in the bag or not an Image topic.
        DataError: A bad label folder, or the output folder is not empty.
    """
    used = model_topics(topics, modalities)
    truth = resolve_ground_truth(label_topic, label_dir, class_names, ignore_index, model_names)
    stream = reader.frame_groups(
        used, label_topic=label_topic, queue_size=queue_size, slop=slop, strict=strict
    )
    writer = ReplayWriter(
        out_dir,
        setup=ReplaySetup(
            mode=mode,
            bag=reader.path,
            topics=used,
            model=model,
            latency=latency,
            ground_truth=truth.description,
            settings={"slop_s": slop, "queue_size": queue_size, "strict": strict, **settings},
        ),
        labels_table=labels_table,
        ground_truth=truth.enabled,
        class_names=truth.class_names,
        ignore_index=truth.ignore_index,
        overlay_alpha=overlay_alpha,
        video=video,
    )
    return ReplayPass(reader, used, truth, stream, writer, {})
