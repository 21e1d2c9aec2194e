"""The replay's output folder: each frame's label and overlay PNGs, then video, plots, report.

The replay evaluator (``unim2_ros.replay``) reads a rosbag2 recording, gets a label map for every
synchronised frame group (from the Segmenter offline, or from the running node live) and hands
each frame to a :class:`ReplayWriter`. It writes the frame's PNGs at once and adds it to the
scores (``unim2_core.evaluation.replay_scores``); :meth:`ReplayWriter.finish` writes the video
(``replay_video``), the confusion plot, the comparison figures of the best and worst frames and
the documents (``replay_report``). The folder's layout is described in ``replay_report``.

The label maps of scored frames stay in memory, compressed (zlib: label maps are large flat
areas), because the comparison figures are drawn once the sequence's matching is known;
``finish`` never reads back a label PNG it wrote.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from unim2_core.atomic import atomic_write_text
from unim2_core.data.datasets.base import default_palette
from unim2_core.data.image_io import read_image, write_png
from unim2_core.errors import DataError
from unim2_core.evaluation.evaluate import FrameScore
from unim2_core.evaluation.metrics import IGNORE_INDEX, SegmentationScores, apply_mapping
from unim2_core.evaluation.plots import plot_confusion, plot_overlay
from unim2_core.evaluation.replay_report import (
    COMPARISONS_DIR,
    CONFUSION_FILE,
    JSON_FILE,
    LABELS_DIR,
    OVERLAYS_DIR,
    REPORT_FILE,
    VIDEO_FILE,
    FrameRecord,
    ReplaySetup,
    ReplaySummary,
    format_report,
    frame_stem,
    replay_dict,
    shown_frames,
)
from unim2_core.evaluation.replay_scores import (
    LatencyStats,
    SequenceScorer,
    SequenceScores,
    latency_stats,
)
from unim2_core.evaluation.replay_video import fps_from_stamps, write_video
from unim2_core.runtime.segmenter import LabelInfo
from unim2_core.runtime.visualize import colorize, overlay

__all__ = [
    "FrameSource",
    "ReplayResult",
    "ReplayWriter",
    "check_output_folder",
]


class _PackedLabels(NamedTuple):
    """A label map kept in memory, zlib-compressed, until the comparison figures are drawn."""

    shape: tuple[int, ...]
    dtype: str
    data: bytes

    @classmethod
    def pack(cls, labels: npt.NDArray[Any]) -> _PackedLabels:
        array = np.ascontiguousarray(labels)
        return cls(array.shape, array.dtype.str, zlib.compress(array.tobytes(), 1))

    def unpack(self) -> np.ndarray:
        return np.frombuffer(zlib.decompress(self.data), dtype=self.dtype).reshape(self.shape)


FrameSource = Callable[[frozenset[int]], Iterable[tuple[int, np.ndarray, np.ndarray]]]
"""Reads frames again: given frame positions, yields ``(position, rgb, ground truth)`` of each
(the replay keeps no RGB frame in memory, so the comparison figures of the best and worst
frames are drawn from those frames read again from the bag)."""


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
        self._scored_labels: dict[int, _PackedLabels] = {}

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
                self._scored_labels[index] = _PackedLabels.pack(labels)
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
        shown = shown_frames(self.frames, sequence)
        comparisons: dict[int, Path] = {}
        if sequence is not None and frame_source is not None:
            comparisons = self._draw_comparisons(sequence, shown, frame_source)
        summary = ReplaySummary(
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
            json.dumps(replay_dict(summary, self.out_dir), indent=2, allow_nan=False) + "\n",
        )
        _write_text(report_path, format_report(summary, self.out_dir))
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
            labels = self._scored_labels[position].unpack()
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


def _write_text(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise DataError(f"cannot write {str(path)!r}: {err}") from err
