"""What a replay evaluation writes, without ROS: frame outputs, scores, latency, video, report.

The replay evaluator (``unim2_ros.bag_replay``) reads a rosbag2 recording, gets a label map for
every synchronised frame group (from the Segmenter offline, or from the running node live) and
hands each frame to a :class:`ReplayWriter`, which writes, under the output folder:

- ``labels/<stem>.png``: the label ids as published by the node (8 bit, 16 bit beyond 255 ids);
- ``overlays/<stem>.png``: the ids in their palette colours blended over the RGB frame;
- ``overlays.mp4``: the overlays as a video (MPEG-4 part 2, ``mp4v``), at the frame rate of the
  RGB header stamps;
- ``confusion.png``: the row-normalised confusion matrix, when there is ground truth, and
  ``comparisons/<best|worst>_<rank>_<stem>.png``: RGB | prediction through the sequence's
  matching | ground truth, for the best and worst frames;
- ``replay.json``: every number (counts, latency statistics, scores, each frame's latency and
  scores) and ``report.md``: the same for people, with links to a few overlays.

Frames are named ``<index>_<rgb stamp ns>`` (index: position among the bag's synchronised
groups, six digits), as ``unim2_import_bag`` names them, so the labels of a replay can serve as a
label folder and an imported dataset's labels can be matched to a replay's frames.

Scoring is the training evaluator's protocol (``unim2_core.evaluate``): one confusion matrix of
predicted ids x ground-truth classes accumulated over every scored frame with
``metrics.confusion_matrix``, one Hungarian matching (``metrics.score``), and each frame scored
under that global matching (``evaluate.score_with_mapping``) to pick the best and worst frames.
Only frames with both an output and ground truth are scored; frames that got no output are
counted, never scored as wrong.

Class names of the ground truth, when nobody names them, are ``class 0 .. class n-1`` with n one
more than the largest id seen (the ignore index excluded).

Latency statistics are over the per-frame values in milliseconds: count, mean, median, 90th and
99th percentiles (numpy's linear interpolation between order statistics) and maximum.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

from unim2_core.atomic import atomic_path, atomic_write_text
from unim2_core.datasets.base import default_palette
from unim2_core.errors import DataError
from unim2_core.evaluate import FrameScore, score_with_mapping
from unim2_core.image_io import read_image, write_png
from unim2_core.metrics import (
    IGNORE_INDEX,
    SegmentationScores,
    apply_mapping,
    confusion_matrix,
    score,
)
from unim2_core.plots import plot_confusion, plot_overlay
from unim2_core.segmenter import LabelInfo
from unim2_core.visualize import colorize, overlay

__all__ = [
    "COMPARISONS_DIR",
    "CONFUSION_FILE",
    "DEFAULT_FPS",
    "JSON_FILE",
    "LABELS_DIR",
    "OVERLAYS_DIR",
    "REPORT_FILE",
    "VIDEO_FILE",
    "FrameRecord",
    "FrameSource",
    "LatencyStats",
    "ReplayMode",
    "ReplayResult",
    "ReplaySetup",
    "ReplayWriter",
    "SequenceScorer",
    "SequenceScores",
    "check_output_folder",
    "fps_from_stamps",
    "frame_stem",
    "generic_class_names",
    "latency_stats",
    "score_sequence",
    "write_video",
]

REPORT_FILE = "report.md"
JSON_FILE = "replay.json"
LABELS_DIR = "labels"
OVERLAYS_DIR = "overlays"
VIDEO_FILE = "overlays.mp4"
CONFUSION_FILE = "confusion.png"
COMPARISONS_DIR = "comparisons"
DEFAULT_FPS = 10.0
"""Video frame rate when the stamps cannot give one (fewer than two distinct stamps)."""

REPORT_FRAMES = 2
"""Best and worst frames linked in the report when there are scores."""
SPACED_FRAMES = 4
"""Evenly spaced frames linked in the report without scores."""
_LISTED_SKIPS = 10
_VIDEO_CODEC = "mp4v"

ReplayMode = Literal["offline", "live"]

FrameSource = Callable[[frozenset[int]], Iterable[tuple[int, np.ndarray, np.ndarray]]]
"""Reads frames again: given frame positions, yields ``(position, rgb, ground truth)`` of each
(the replay keeps no frame in memory, so the comparison figures of the best and worst frames
are drawn from a second read of the bag)."""


def frame_stem(index: int, stamp_ns: int) -> str:
    """The name of a replayed frame: ``<index, 6 digits>_<rgb stamp ns>`` (as the bag import)."""
    return f"{index:06d}_{stamp_ns}"


def generic_class_names(n_classes: int) -> tuple[str, ...]:
    """``class 0 .. class n-1``, for ground truth whose classes nobody named."""
    return tuple(f"class {i}" for i in range(n_classes))


# --- latency ----------------------------------------------------------------------------------


class LatencyStats(NamedTuple):
    """Statistics of per-frame latencies, in milliseconds (NaN when ``n`` is 0).

    Attributes:
        n: Number of frames measured.
        mean_ms: Mean.
        median_ms: Median.
        p90_ms: 90th percentile.
        p99_ms: 99th percentile.
        max_ms: Largest value.
    """

    n: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain JSON types; NaN becomes None."""
        return {key: _finite(value) for key, value in self._asdict().items()}


def latency_stats(values_ms: npt.ArrayLike) -> LatencyStats:
    """Count, mean, median, 90th / 99th percentile and maximum of latencies in milliseconds.

    Raises:
        ValueError: ``values_ms`` is not a 1-D sequence of finite numbers.
    """
    values = np.asarray(values_ms, dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError(f"latencies must be a 1-D sequence of finite numbers, got {values!r}")
    if values.size == 0:
        return LatencyStats(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    p50, p90, p99 = np.percentile(values, [50.0, 90.0, 99.0])
    return LatencyStats(
        n=int(values.size),
        mean_ms=float(values.mean()),
        median_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(values.max()),
    )


# --- scores -----------------------------------------------------------------------------------


class SequenceScores(NamedTuple):
    """Scores of a sequence of (predicted, ground truth) label maps.

    Attributes:
        scores: Hungarian-matched scores of the sequence's one confusion matrix (percent).
        confusion: [n_predicted, n_classes] raw counts of predicted id x ground-truth class.
        class_names: Name of each ground-truth class.
        frame_scores: Each scored frame's mIoU and accuracy under the sequence's matching, in
            the order the frames were added (NaN for a frame without labelled pixels).
    """

    scores: SegmentationScores
    confusion: np.ndarray
    class_names: tuple[str, ...]
    frame_scores: tuple[FrameScore, ...]


class _FrameCounts(NamedTuple):
    """One frame's confusion matrix, sparse (the class count may still grow)."""

    position: int
    stem: str
    rows: np.ndarray
    cols: np.ndarray
    counts: np.ndarray


class SequenceScorer:
    """Accumulates one confusion matrix over a sequence of predicted and ground-truth maps.

    Args:
        n_predicted: Number of ids the predictions can hold (the label table's length).
        class_names: Names of the ground-truth classes (ids ``0 .. n-1``); when None the
            classes are ``class 0 ..`` up to the largest id seen.
        ignore_index: Ground-truth value of unlabelled pixels; never a class id.

    Raises:
        ValueError: ``n_predicted`` below 1, empty or repeated class names, or an ignore index
            that is a class id.
    """

    def __init__(
        self,
        n_predicted: int,
        *,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if n_predicted < 1:
            raise ValueError(f"n_predicted must be >= 1, got {n_predicted}")
        if class_names is not None:
            names = list(class_names)
            if not names or not all(names) or len(set(names)) != len(names):
                raise ValueError(f"class names must be non-empty and distinct, got {names}")
            if 0 <= ignore_index < len(names):
                raise ValueError(
                    f"ignore_index {ignore_index} is a class id of {len(names)} classes"
                )
        self.n_predicted = n_predicted
        self.ignore_index = ignore_index
        self._names = None if class_names is None else tuple(class_names)
        self._n_classes = 0 if class_names is None else len(class_names)
        self._counts = np.zeros((n_predicted, self._n_classes), dtype=np.int64)
        self._frames: list[_FrameCounts] = []

    @property
    def n_frames(self) -> int:
        """Frames added so far."""
        return len(self._frames)

    @property
    def pixel_count(self) -> int:
        """Labelled pixels accumulated so far."""
        return int(self._counts.sum())

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes as named or as seen so far."""
        return self._names or generic_class_names(self._n_classes)

    def update(
        self,
        predicted: npt.ArrayLike,
        truth: npt.ArrayLike,
        *,
        stem: str,
        position: int | None = None,
    ) -> None:
        """Adds one frame.

        Args:
            predicted: HxW integer predicted ids.
            truth: HxW integer class ids, the ignore index on unlabelled pixels.
            stem: The frame's name, for messages and per-frame scores.
            position: The frame's index in the replay (default: frames added so far).

        Raises:
            DataError: The maps differ in size or are not integer, a predicted id is
                ``n_predicted`` or more, a ground-truth id is not a class (named classes) or
                lies above the ignore index (unnamed classes); the message names ``stem``.
        """
        pred = np.asarray(predicted)
        labels = np.asarray(truth)
        if pred.shape != labels.shape:
            raise DataError(
                f"frame {stem!r}: ground truth {labels.shape} and label map {pred.shape} "
                "differ in size"
            )
        if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer)):
            raise DataError(
                f"frame {stem!r}: label maps must hold integer ids, got {pred.dtype} and "
                f"{labels.dtype}"
            )
        if self._names is None:
            self._grow(labels, stem)
        try:
            counts = confusion_matrix(
                pred,
                labels,
                n_clusters=self.n_predicted,
                n_classes=max(self._n_classes, 1),
                ignore_index=self.ignore_index,
            )
        except DataError as err:
            raise DataError(f"frame {stem!r}: {err}") from err
        counts = counts[:, : self._n_classes]
        self._counts += counts
        rows, cols = np.nonzero(counts)
        self._frames.append(
            _FrameCounts(
                len(self._frames) if position is None else position,
                stem,
                rows.astype(np.int32),
                cols.astype(np.int32),
                counts[rows, cols],
            )
        )

    def _grow(self, labels: np.ndarray, stem: str) -> None:
        """Widens the class axis to the largest ground-truth id of ``labels``."""
        valid = labels[labels != self.ignore_index]
        if valid.size == 0:
            return
        low, high = int(valid.min()), int(valid.max())
        if low < 0 or 0 <= self.ignore_index <= high:
            bad = low if low < 0 else high
            raise DataError(
                f"frame {stem!r}: ground-truth id {bad} cannot be a class when the classes are "
                f"not named and the ignore index is {self.ignore_index}; name the classes"
            )
        if high >= self._n_classes:
            grown = np.zeros((self.n_predicted, high + 1), dtype=np.int64)
            grown[:, : self._n_classes] = self._counts
            self._counts = grown
            self._n_classes = high + 1

    def result(self) -> SequenceScores | None:
        """The sequence's scores; None when no labelled pixel has been added."""
        if self.pixel_count == 0:
            return None
        scores = score(self._counts)
        frame_scores = []
        for frame in self._frames:
            dense = np.zeros_like(self._counts)
            dense[frame.rows, frame.cols] = frame.counts
            miou, accuracy = score_with_mapping(dense, scores.mapping)
            frame_scores.append(FrameScore(frame.position, frame.stem, miou, accuracy))
        return SequenceScores(scores, self._counts.copy(), self.class_names, tuple(frame_scores))


def score_sequence(
    pairs: Iterable[tuple[npt.ArrayLike, npt.ArrayLike]],
    *,
    n_predicted: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> SequenceScores | None:
    """Scores (predicted, ground truth) label maps as a replay does (see :class:`SequenceScorer`).

    Frames are named ``frame_<i>``. Returns None when no pixel is labelled.

    Raises:
        ValueError: As :class:`SequenceScorer`.
        DataError: As :meth:`SequenceScorer.update`.
    """
    scorer = SequenceScorer(n_predicted, class_names=class_names, ignore_index=ignore_index)
    for index, (predicted, truth) in enumerate(pairs):
        scorer.update(predicted, truth, stem=f"frame_{index}")
    return scorer.result()


# --- video ------------------------------------------------------------------------------------


def fps_from_stamps(stamps_ns: Sequence[int], *, default: float = DEFAULT_FPS) -> float:
    """Mean frame rate of the distinct stamps: (n - 1) / (last - first); ``default`` without two.

    Raises:
        ValueError: ``default`` is not a positive finite number.
    """
    if not (math.isfinite(default) and default > 0):
        raise ValueError(f"default fps must be a finite number > 0, got {default!r}")
    distinct = sorted(set(int(s) for s in stamps_ns))
    if len(distinct) < 2:
        return default
    return (len(distinct) - 1) * 1e9 / (distinct[-1] - distinct[0])


def write_video(frames: Iterable[npt.ArrayLike], path: str | Path, *, fps: float) -> int:
    """Writes HxWx3 uint8 RGB frames as an MPEG-4 (``mp4v``) video, atomically.

    The video takes the first frame's size, padded by repeating the last row / column to even
    sides (the encoder crops odd ones); later frames of another size are resized to it.
    Nothing is written for no frame.

    Args:
        frames: RGB frames in order.
        path: The ``.mp4`` file; replaced only once the video is complete.
        fps: Frame rate.

    Returns:
        Number of frames written.

    Raises:
        ValueError: ``fps`` is not positive and finite, or a frame is not HxWx3 uint8.
        DataError: The encoder cannot be opened or the file cannot be written.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    path = Path(path)
    writer: Any = None
    size: tuple[int, int] = (0, 0)
    count = 0
    try:
        with contextlib.ExitStack() as stack:
            for frame in frames:
                image = np.asarray(frame)
                if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                    raise ValueError(
                        f"video frames must be HxWx3 uint8, got {image.dtype} {image.shape}"
                    )
                if writer is None:
                    size = _even_size(image)
                    temporary = stack.enter_context(atomic_path(path, suffix=".mp4"))
                    fourcc = cv2.VideoWriter.fourcc(*_VIDEO_CODEC)
                    writer = cv2.VideoWriter(str(temporary), fourcc, float(fps), size)
                    stack.callback(writer.release)  # runs before the rename
                    if not writer.isOpened():
                        raise DataError(
                            f"cannot open an {_VIDEO_CODEC} video encoder for {str(path)!r}"
                        )
                writer.write(_video_frame(image, size))
                count += 1
    except OSError as err:
        raise DataError(f"cannot write video {str(path)!r}: {err}") from err
    return count


def _video_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` as a BGR frame of ``size`` (width, height): padded to even sides or resized."""
    if _even_size(image) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    pad_y, pad_x = size[1] - image.shape[0], size[0] - image.shape[1]
    if pad_y or pad_x:
        image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
    return np.ascontiguousarray(image[:, :, ::-1])


def _even_size(image: np.ndarray) -> tuple[int, int]:
    """(width, height) of ``image`` rounded up to even numbers."""
    height, width = image.shape[:2]
    return width + width % 2, height + height % 2


# --- the replay's output folder ---------------------------------------------------------------


class ReplaySetup(NamedTuple):
    """What was replayed, as the report states it.

    Attributes:
        mode: ``offline`` (Segmenter in this process) or ``live`` (through the running node).
        bag: The input bag.
        topics: Modality -> Image topic read from the bag.
        model: One line describing the model (or node) that produced the labels.
        latency: One line saying what the latency measures.
        ground_truth: One line naming the ground truth (label topic or folder), or None.
        settings: Other settings worth recording (slop, queue size, rate, ...).
    """

    mode: ReplayMode
    bag: Path
    topics: Mapping[str, str]
    model: str
    latency: str
    ground_truth: str | None
    settings: Mapping[str, Any]


class FrameRecord(NamedTuple):
    """One frame of a replay.

    Attributes:
        position: Index among the bag's synchronised groups.
        stem: File name stem of its outputs.
        stamp_ns: RGB header stamp.
        has_output: Whether a label map was obtained (always, offline).
        has_truth: Whether ground truth was given for it.
        latency_ms: Its latency, None without output.
    """

    position: int
    stem: str
    stamp_ns: int
    has_output: bool
    has_truth: bool
    latency_ms: float | None


class ReplayResult(NamedTuple):
    """Outcome of a replay evaluation.

    Attributes:
        out_dir: The output folder.
        n_frames: Synchronised frame groups of the bag (frames replayed).
        scores: Hungarian-matched scores over the frames with ground truth and output, or
            None without ground truth (or without a labelled pixel).
        latency: Per-frame latency statistics.
        report: ``report.md``.
        output_bag: The bag of the node's outputs (live mode), else None.
        missing: Frames that got no output (live mode; 0 offline).
        class_names: Ground-truth class names that ``scores.per_class_iou`` follows (empty
            without scores).
        json: ``replay.json``.
        video: The overlay video, or None when not written.
    """

    out_dir: Path
    n_frames: int
    scores: SegmentationScores | None
    latency: LatencyStats
    report: Path
    output_bag: Path | None
    missing: int
    class_names: tuple[str, ...]
    json: Path
    video: Path | None


def check_output_folder(out_dir: str | Path) -> Path:
    """Creates ``out_dir`` or accepts it empty, so outputs of two runs never mix.

    Raises:
        DataError: It exists and is not an empty folder, or cannot be created.
    """
    out = Path(out_dir)
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise DataError(f"output folder {str(out)!r} exists and is not empty; choose a new one")
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create output folder {str(out)!r}: {err}") from err
    return out


class ReplayWriter:
    """Writes each replayed frame's outputs, then the video, scores, ``replay.json`` and report.

    Args:
        out_dir: Output folder; created, or accepted when empty (:func:`check_output_folder`).
        setup: What is replayed.
        labels_table: The label ids the outputs can hold, with names and colours.
        ground_truth: Whether frames come with ground truth (then they are scored).
        class_names: Ground-truth class names; None for ``class i`` names sized from the data.
        ignore_index: Ground-truth value of unlabelled pixels.
        overlay_alpha: Weight of the label colours in the overlays, in [0, 1].
        video: Write the overlay video.

    Raises:
        DataError: The output folder is not empty or cannot be created.
        ValueError: An empty label table, an ``overlay_alpha`` outside [0, 1], or class names
            :class:`SequenceScorer` refuses.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        setup: ReplaySetup,
        labels_table: Sequence[LabelInfo],
        ground_truth: bool,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        overlay_alpha: float = 0.5,
        video: bool = True,
    ) -> None:
        if not labels_table:
            raise ValueError("the label table is empty")
        if not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha!r}")
        self._scorer = (
            SequenceScorer(len(labels_table), class_names=class_names, ignore_index=ignore_index)
            if ground_truth
            else None
        )
        self.out_dir = check_output_folder(out_dir)
        self.setup = setup
        self.labels_table = tuple(labels_table)
        self.palette = np.asarray([label.color for label in labels_table], dtype=np.uint8)
        self.ignore_index = ignore_index
        self.overlay_alpha = overlay_alpha
        self.video = video
        self.frames: list[FrameRecord] = []

    def add_frame(
        self,
        index: int,
        stamp_ns: int,
        rgb: npt.NDArray[np.uint8],
        labels: npt.NDArray[Any] | None,
        truth: npt.NDArray[Any] | None,
        latency_ms: float | None,
    ) -> FrameRecord:
        """Writes one frame's label and overlay PNGs and adds it to the scores.

        Args:
            index: Position among the bag's synchronised groups.
            stamp_ns: RGB header stamp.
            rgb: HxWx3 uint8 RGB frame.
            labels: HxW uint8 / uint16 label ids, or None when no output came.
            truth: HxW ground-truth class ids, or None.
            latency_ms: The frame's latency (None without output).

        Raises:
            DataError: A label id without a label table entry, a label map of another size
                than the frame, ground truth the scorer refuses, or a file that cannot be
                written; the message names the frame.
        """
        stem = frame_stem(index, stamp_ns)
        if labels is not None:
            if labels.shape != rgb.shape[:2]:
                raise DataError(
                    f"frame {stem!r}: label map {labels.shape} differs from the RGB frame "
                    f"{rgb.shape[:2]}"
                )
            try:
                colored = colorize(labels, self.palette)
            except ValueError as err:
                raise DataError(f"frame {stem!r}: {err}") from err
            write_png(self.out_dir / LABELS_DIR / f"{stem}.png", labels)
            write_png(
                self.out_dir / OVERLAYS_DIR / f"{stem}.png",
                overlay(rgb, colored, self.overlay_alpha),
            )
            if truth is not None and self._scorer is not None:
                self._scorer.update(labels, truth, stem=stem, position=index)
        record = FrameRecord(
            position=index,
            stem=stem,
            stamp_ns=stamp_ns,
            has_output=labels is not None,
            has_truth=truth is not None,
            latency_ms=None if labels is None else latency_ms,
        )
        self.frames.append(record)
        return record

    def finish(
        self,
        *,
        skipped: Sequence[tuple[str, int, str]] = (),
        not_in_group: Mapping[str, int] | None = None,
        counts: Mapping[str, int] | None = None,
        output_bag: Path | None = None,
        frame_source: FrameSource | None = None,
    ) -> ReplayResult:
        """Writes the video, confusion plot, comparisons, ``replay.json`` and ``report.md``.

        Args:
            skipped: Messages left out as undecodable: (topic, log time ns, reason).
            not_in_group: Topic -> messages that were part of no synchronised group.
            counts: Other counts for the report (e.g. live: outputs received).
            output_bag: The bag of recorded node outputs (live mode).
            frame_source: Reads frames again for the comparison figures of the best and worst
                frames; none are drawn without it.

        Raises:
            DataError: A file cannot be written.
        """
        with_output = [frame for frame in self.frames if frame.has_output]
        video_path: Path | None = None
        fps = fps_from_stamps([frame.stamp_ns for frame in with_output])
        if self.video and with_output:
            video_path = self.out_dir / VIDEO_FILE
            write_video(
                (read_image(self.out_dir / OVERLAYS_DIR / f"{f.stem}.png") for f in with_output),
                video_path,
                fps=fps,
            )
        sequence = self._scorer.result() if self._scorer is not None else None
        if sequence is not None:
            plot_confusion(
                sequence.scores.confusion,
                sequence.scores.unmatched,
                sequence.class_names,
                self.out_dir / CONFUSION_FILE,
                title=f"{self.setup.bag.name} ({self.setup.mode} replay) - "
                f"mIoU {sequence.scores.miou:.1f}, Acc {sequence.scores.accuracy:.1f}",
            )
        latency = latency_stats([f.latency_ms for f in with_output if f.latency_ms is not None])
        shown = _shown_frames(self.frames, sequence)
        comparisons: dict[int, Path] = {}
        if sequence is not None and frame_source is not None:
            comparisons = self._draw_comparisons(sequence, shown, frame_source)
        summary = _Summary(
            setup=self.setup,
            frames=tuple(self.frames),
            latency=latency,
            sequence=sequence,
            labels_table=self.labels_table,
            ignore_index=self.ignore_index,
            skipped=tuple((str(t), int(s), str(r)) for t, s, r in skipped),
            not_in_group=dict(not_in_group or {}),
            counts=dict(counts or {}),
            video=video_path,
            fps=fps,
            output_bag=output_bag,
            shown=shown,
            comparisons=comparisons,
        )
        json_path = self.out_dir / JSON_FILE
        report_path = self.out_dir / REPORT_FILE
        _write_text(
            json_path,
            json.dumps(_replay_dict(summary, self.out_dir), indent=2, allow_nan=False) + "\n",
        )
        _write_text(report_path, _format_report(summary, self.out_dir))
        return ReplayResult(
            out_dir=self.out_dir,
            n_frames=len(self.frames),
            scores=None if sequence is None else sequence.scores,
            latency=latency,
            report=report_path,
            output_bag=output_bag,
            missing=len(self.frames) - len(with_output),
            class_names=() if sequence is None else sequence.class_names,
            json=json_path,
            video=video_path,
        )

    def _draw_comparisons(
        self,
        sequence: SequenceScores,
        shown: Sequence[tuple[str, FrameRecord, FrameScore | None]],
        frame_source: FrameSource,
    ) -> dict[int, Path]:
        """RGB | matched prediction | ground truth of the shown frames; position -> file."""
        wanted = {frame.position: (title, frame, scored) for title, frame, scored in shown}
        names = sequence.class_names
        palette = default_palette(len(names))
        drawn: dict[int, Path] = {}
        for position, rgb, truth in frame_source(frozenset(wanted)):
            title, frame, scored = wanted[position]
            labels = read_image(self.out_dir / LABELS_DIR / f"{frame.stem}.png")
            kind, rank = title.split(" #")
            caption = f"{title}: {frame.stem}"
            if scored is not None:
                caption += f" - mIoU {scored.miou:.1f}, Acc {scored.accuracy:.1f}"
            drawn[position] = plot_overlay(
                rgb,
                apply_mapping(labels, sequence.scores.mapping, unmatched_value=-1),
                truth,
                names,
                palette,
                self.out_dir / COMPARISONS_DIR / f"{kind}_{rank}_{frame.stem}.png",
                title=caption,
            )
        return drawn


class _Summary(NamedTuple):
    """Everything ``replay.json`` and ``report.md`` are made of."""

    setup: ReplaySetup
    frames: tuple[FrameRecord, ...]
    latency: LatencyStats
    sequence: SequenceScores | None
    labels_table: tuple[LabelInfo, ...]
    ignore_index: int
    skipped: tuple[tuple[str, int, str], ...]
    not_in_group: dict[str, int]
    counts: dict[str, int]
    video: Path | None
    fps: float
    output_bag: Path | None
    shown: tuple[tuple[str, FrameRecord, FrameScore | None], ...]
    comparisons: dict[int, Path]


def _shown_frames(
    frames: Sequence[FrameRecord], sequence: SequenceScores | None
) -> tuple[tuple[str, FrameRecord, FrameScore | None], ...]:
    """The frames the report shows: best and worst by mIoU with scores, else evenly spaced."""
    by_position = {frame.position: frame for frame in frames}
    if sequence is not None:
        ranked = sorted(
            (f for f in sequence.frame_scores if not math.isnan(f.miou)),
            key=lambda f: (f.miou, f.accuracy, -f.position),
        )
        n_best = min(REPORT_FRAMES, (len(ranked) + 1) // 2)  # best and worst never share a frame
        n_worst = min(REPORT_FRAMES, len(ranked) - n_best)
        best = [(f"best #{i + 1}", f) for i, f in enumerate(ranked[::-1][:n_best])]
        worst = [(f"worst #{i + 1}", f) for i, f in enumerate(ranked[:n_worst])]
        return tuple((title, by_position[f.position], f) for title, f in best + worst)
    with_output = [frame for frame in frames if frame.has_output]
    if not with_output:
        return ()
    count = min(SPACED_FRAMES, len(with_output))
    picks = sorted({round(i * (len(with_output) - 1) / max(count - 1, 1)) for i in range(count)})
    return tuple((f"frame {with_output[i].position}", with_output[i], None) for i in picks)


def _finite(value: float | int) -> float | int | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_value(value: Any) -> Any:
    """A setting in standard JSON: an infinite or NaN float (e.g. rate ``inf``) becomes text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _relative(path: Path | None, out_dir: Path) -> str | None:
    if path is None:
        return None
    try:
        return path.relative_to(out_dir).as_posix()
    except ValueError:
        return str(path)


def _scores_dict(summary: _Summary) -> dict[str, Any] | None:
    sequence = summary.sequence
    if sequence is None:
        return None
    scores = sequence.scores
    names = sequence.class_names
    return {
        "miou": scores.miou,
        "accuracy": scores.accuracy,
        "per_class_iou": {
            name: _finite(value)
            for name, value in zip(names, scores.per_class_iou.tolist(), strict=True)
        },
        "label_to_class": {
            label.name: (names[c] if c >= 0 else None)
            for label, c in zip(summary.labels_table, scores.mapping.tolist(), strict=True)
        },
        "n_classes": len(names),
        "ignore_index": summary.ignore_index,
        "scored_frames": len(sequence.frame_scores),
        "labelled_pixels": int(sequence.confusion.sum()),
        "confusion": CONFUSION_FILE,
    }


def _replay_dict(summary: _Summary, out_dir: Path) -> dict[str, Any]:
    frames = summary.frames
    frame_scores = (
        {f.position: f for f in summary.sequence.frame_scores} if summary.sequence else {}
    )
    per_frame = []
    for frame in frames:
        entry: dict[str, Any] = {
            "index": frame.position,
            "stem": frame.stem,
            "stamp_ns": frame.stamp_ns,
            "output": frame.has_output,
            "ground_truth": frame.has_truth,
            "latency_ms": frame.latency_ms,
        }
        scored = frame_scores.get(frame.position)
        if scored is not None:
            entry["miou"] = _finite(scored.miou)
            entry["accuracy"] = _finite(scored.accuracy)
        per_frame.append(entry)
    setup = summary.setup
    return {
        "mode": setup.mode,
        "bag": str(setup.bag),
        "topics": dict(setup.topics),
        "model": setup.model,
        "ground_truth": setup.ground_truth,
        "settings": {key: _json_value(value) for key, value in setup.settings.items()},
        "frames": len(frames),
        "frames_with_output": sum(f.has_output for f in frames),
        "missing_outputs": sum(not f.has_output for f in frames),
        "frames_with_ground_truth": sum(f.has_truth for f in frames),
        "skipped_messages": [
            {"topic": topic, "timestamp_ns": stamp, "reason": reason}
            for topic, stamp, reason in summary.skipped
        ],
        "not_in_group": summary.not_in_group,
        "counts": summary.counts,
        "latency": {"measures": setup.latency, **summary.latency.to_dict()},
        "scores": _scores_dict(summary),
        "shown_frames": [
            {
                "title": title,
                "stem": frame.stem,
                "overlay": f"{OVERLAYS_DIR}/{frame.stem}.png",
                "comparison": _relative(summary.comparisons.get(frame.position), out_dir),
            }
            for title, frame, _ in summary.shown
        ],
        "video": _relative(summary.video, out_dir),
        "video_fps": summary.fps if summary.video is not None else None,
        "output_bag": _relative(summary.output_bag, out_dir),
        "per_frame": per_frame,
    }


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def _format_report(summary: _Summary, out_dir: Path) -> str:
    setup = summary.setup
    frames = summary.frames
    missing = sum(not f.has_output for f in frames)
    lines = [
        f"# Replay of {setup.bag.name} ({setup.mode})",
        "",
        f"- bag: `{setup.bag}`",
        "- topics: " + ", ".join(f"{m} `{t}`" for m, t in setup.topics.items()),
        f"- model: {setup.model}",
        f"- ground truth: {setup.ground_truth or 'none'}",
    ]
    if setup.settings:
        lines.append("- settings: " + ", ".join(f"{k} {v}" for k, v in setup.settings.items()))
    lines += [
        "",
        "## Counts",
        "",
        "| | frames / messages |",
        "|---|---|",
        f"| synchronised frames | {len(frames)} |",
        f"| frames with output | {len(frames) - missing} |",
        f"| missing outputs | {missing} |",
        f"| frames with ground truth | {sum(f.has_truth for f in frames)} |",
        f"| undecodable messages skipped | {len(summary.skipped)} |",
    ]
    lines += [f"| {name} | {value} |" for name, value in summary.counts.items()]
    lines += [
        f"| `{topic}` messages in no group | {count} |"
        for topic, count in summary.not_in_group.items()
    ]
    if summary.skipped:
        lines += ["", "Skipped messages:", ""]
        lines += [
            f"- `{topic}` at {stamp} ns: {reason}"
            for topic, stamp, reason in summary.skipped[:_LISTED_SKIPS]
        ]
        if len(summary.skipped) > _LISTED_SKIPS:
            lines.append(f"- ... and {len(summary.skipped) - _LISTED_SKIPS} more")
    lines += _score_lines(summary)
    latency = summary.latency
    lines += [
        "",
        "## Latency",
        "",
        f"{setup.latency}.",
        "",
        "| frames | mean ms | median ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
        f"| {latency.n} | {_ms(latency.mean_ms)} | {_ms(latency.median_ms)} | "
        f"{_ms(latency.p90_ms)} | {_ms(latency.p99_ms)} | {_ms(latency.max_ms)} |",
    ]
    lines += ["", "## Frames", ""]
    if summary.video is not None:
        lines += [
            f"Video of all overlays: [{_relative(summary.video, out_dir)}]"
            f"({_relative(summary.video, out_dir)}) ({summary.fps:.2f} fps).",
            "",
        ]
    for title, frame, frame_score in summary.shown:
        caption = f"{title}: {frame.stem}"
        if frame_score is not None:
            caption += f", mIoU {frame_score.miou:.1f}, Acc {frame_score.accuracy:.1f}"
        link = f"{OVERLAYS_DIR}/{frame.stem}.png"
        lines += [
            f"**{caption}** ([labels]({LABELS_DIR}/{frame.stem}.png))",
            "",
            f"![{title}]({link})",
            "",
        ]
        comparison = _relative(summary.comparisons.get(frame.position), out_dir)
        if comparison is not None:
            lines += [f"![{title}: RGB, matched prediction, ground truth]({comparison})", ""]
    if summary.output_bag is not None:
        lines += [f"Node outputs recorded in `{_relative(summary.output_bag, out_dir)}`.", ""]
    lines.append(f"All numbers: [{JSON_FILE}]({JSON_FILE}).")
    return "\n".join(lines) + "\n"


def _score_lines(summary: _Summary) -> list[str]:
    sequence = summary.sequence
    lines = ["", "## Scores", ""]
    if sequence is None:
        reason = "no ground truth" if summary.setup.ground_truth is None else "no labelled pixel"
        return [*lines, f"Not scored: {reason}."]
    scores = sequence.scores
    lines += [
        f"**mIoU {scores.miou:.2f}**, pixel accuracy {scores.accuracy:.2f} over "
        f"{len(sequence.frame_scores)} frames (Hungarian-matched, one confusion matrix over "
        f"every frame with output and ground truth; ignore index {summary.ignore_index}).",
        "",
        "| class | IoU |",
        "|---|---|",
    ]
    for name, value in zip(sequence.class_names, scores.per_class_iou.tolist(), strict=True):
        lines.append(f"| {name} | {'n/a' if math.isnan(value) else f'{value:.2f}'} |")
    lines += ["", f"![confusion matrix]({CONFUSION_FILE})"]
    return lines


def _write_text(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise DataError(f"cannot write {str(path)!r}: {err}") from err
