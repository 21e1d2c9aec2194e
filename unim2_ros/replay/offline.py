"""Offline replay: the bag's frame groups segmented in this process.

**Offline** (:func:`replay_offline`): the named Image topics of the bag (sqlite3 or MCAP) are
grouped by the project's synchroniser (:meth:`BagReader.frame_groups`), exactly as the node
groups them live, and each group is segmented by a
:class:`~unim2_core.runtime.segmenter.Segmenter` in
this process. Latency is the Segmenter call time. Only the modalities the checkpoint needs are
read (others named are ignored, as the node subscribes only to those). The CLI builds the
Segmenter as the node does (cluster -> class mapping applied), so offline labels are the labels
the node would publish.

Ground truth, outputs and report are shared with the live replay (``unim2_ros.replay.common``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from unim2_core.data.encoding import EncodingKind
from unim2_core.errors import DataError, EncodingError
from unim2_core.evaluation.replay_writer import ReplayResult
from unim2_core.runtime.segmenter import Segmenter
from unim2_ros.bag_io import BagReader, CameraInfoTrack, camera_info_topic
from unim2_ros.replay.common import NODE_QUEUE_SIZE, NODE_SLOP, progress_bar, start_pass

__all__ = ["replay_offline"]


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
        out_dir: Output folder, new or empty (``unim2_core.evaluation.replay_writer``).
        label_topic: Image topic of ground-truth class ids in the bag.
        label_dir: Folder of ground-truth PNGs (``unim2_core.evaluation.ground_truth.LabelFolder``).
        class_names: Names of the ground-truth classes (default:
            ``unim2_core.evaluation.ground_truth``).
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
    mapping = segmenter.bundle.class_mapping
    device = f"{segmenter.device} ({segmenter.precision})"
    model = (
        f"Segmenter {segmenter.bundle.backbone.name} + heads, {len(segmenter.labels_table)} "
        f"labels, {'+'.join(segmenter.modalities)}, shorter side {segmenter.shorter_side}, "
        f"on {device}"
    )
    with BagReader(bag) as reader:
        cameras, intrinsics_source = _camera_tracks(reader, segmenter, topics)
        replay = start_pass(
            reader,
            topics,
            segmenter.modalities,
            out_dir,
            mode="offline",
            model=model,
            latency="Segmenter call time per frame in this process (preprocessing, "
            "backbone, heads, label map at input resolution)",
            labels_table=segmenter.labels_table,
            model_names=None
            if mapping is None
            else (tuple(mapping.class_names), "class names from the checkpoint"),
            label_topic=label_topic,
            label_dir=label_dir,
            class_names=class_names,
            ignore_index=ignore_index,
            queue_size=queue_size,
            slop=slop,
            strict=strict,
            settings={"intrinsics": intrinsics_source} if intrinsics_source else {},
            overlay_alpha=overlay_alpha,
            video=video,
        )
        refused = 0
        frames = progress_bar(
            replay.stream,
            total=reader.info.topics[replay.topics["rgb"]].message_count,
            unit="frame",
            description="segmenting",
            enabled=progress,
        )
        for index, frame in enumerate(frames):
            start = time.perf_counter()
            try:
                intrinsics = {m: track.at(frame.stamp_ns) for m, track in cameras.items()}
                labels = segmenter(frame.arrays, intrinsics=intrinsics).labels
            except EncodingError as err:
                if strict:
                    raise DataError(
                        f"the model refuses the frame with RGB stamp {frame.stamp_ns} ns in bag "
                        f"{str(reader.path)!r}: {err}"
                    ) from err
                labels = None
                refused += 1
            latency_ms = (time.perf_counter() - start) * 1e3
            replay.add(index, frame, labels, latency_ms)
        return replay.finish({"frames refused by the model": refused})


def _camera_tracks(
    reader: BagReader, segmenter: Segmenter, topics: Mapping[str, str]
) -> tuple[dict[str, CameraInfoTrack], str | None]:
    """The camera_info track of each modality whose encoding needs intrinsics (``depth_hha``),
    read from the topic beside its image topic, and a line saying where intrinsics came from.

    A modality without such a topic in the bag uses the intrinsics stored in the checkpoint
    (the training camera's), as ``Segmenter`` does without per-frame intrinsics.
    """
    tracks: dict[str, CameraInfoTrack] = {}
    sources: list[str] = []
    for modality, encoding in segmenter.encodings.items():
        if encoding.kind is not EncodingKind.DEPTH_HHA or modality not in topics:
            continue
        topic = camera_info_topic(topics[modality])
        if topic in reader.info.topics:
            tracks[modality] = CameraInfoTrack(reader, topic)
            sources.append(f"{modality}: {topic} of the bag")
        else:
            stored = encoding.intrinsics
            sources.append(
                f"{modality}: the checkpoint's {stored.to_list() if stored else None} "
                f"(no {topic} in the bag)"
            )
    return tracks, "; ".join(sources) or None
