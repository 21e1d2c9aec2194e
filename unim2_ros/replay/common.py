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
from unim2_core.evaluation.replay_writer import FrameSource, ReplayResult, ReplayWriter
from unim2_core.runtime.segmenter import LabelInfo
from unim2_ros.bag_io import BagFrame, BagReader, FrameGroupStream
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


class ReplayPass(NamedTuple):
    """One replay's frame stream, ground truth and output folder (:func:`start_pass`).

    Attributes:
        reader: The open bag.
        topics: Modality -> topic of the modalities the model needs, in its order.
        truth: The ground truth.
        stream: The bag's synchronised frame groups of ``topics`` (and the label topic).
        writer: The output folder.
        queue_size: Synchroniser queue size of ``stream``.
        slop: Synchroniser slop of ``stream``, seconds.
    """

    reader: BagReader
    topics: dict[str, str]
    truth: GroundTruth
    stream: FrameGroupStream
    writer: ReplayWriter
    queue_size: int
    slop: float

    def add(
        self, index: int, frame: BagFrame, labels: npt.NDArray[Any] | None, latency_ms: float | None
    ) -> None:
        """Writes frame ``index`` of the stream with its labels (None: no output) and scores it.

        Raises:
            DataError: As :meth:`ReplayWriter.add_frame`, or ground truth that does not fit.
        """
        rgb = frame.arrays["rgb"]
        self.writer.add_frame(
            index,
            frame.stamp_ns,
            rgb,
            labels,
            self.truth.labels(frame.stamp_ns, frame.labels, rgb),
            latency_ms,
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
            frame_source=_frame_source(
                self.reader, self.topics, self.truth, queue_size=self.queue_size, slop=self.slop
            ),
        )


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
        settings: Other settings for the report.
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
            settings=settings,
        ),
        labels_table=labels_table,
        ground_truth=truth.enabled,
        class_names=truth.class_names,
        ignore_index=truth.ignore_index,
        overlay_alpha=overlay_alpha,
        video=video,
    )
    return ReplayPass(reader, used, truth, stream, writer, queue_size, slop)


def _frame_source(
    reader: BagReader,
    topics: Mapping[str, str],
    truth: GroundTruth,
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
