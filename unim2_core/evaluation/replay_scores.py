"""Scores of a replay: latency statistics and one Hungarian-matched confusion over a sequence.

Scoring is the training evaluator's protocol (``unim2_core.evaluation.evaluate``): one
confusion matrix of predicted ids x ground-truth classes accumulated over every scored frame
with ``metrics.confusion_matrix``, one Hungarian matching (``metrics.score``), and each frame
scored under that global matching (``evaluate.score_with_mapping``) to pick the best and worst
frames. Only frames with both an output and ground truth are scored; frames that got no output
are counted, never scored as wrong.

Class names of the ground truth, when nobody names them, are ``class 0 .. class n-1`` with n one
more than the largest id seen (the ignore index excluded).

Latency statistics are over the per-frame values in milliseconds: count, mean, median, 90th and
99th percentiles (numpy's linear interpolation between order statistics) and maximum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from unim2_core.errors import DataError
from unim2_core.evaluation.evaluate import FrameScore, score_with_mapping
from unim2_core.evaluation.metrics import (
    IGNORE_INDEX,
    SegmentationScores,
    confusion_matrix,
    score,
)

__all__ = [
    "LatencyStats",
    "SequenceScorer",
    "SequenceScores",
    "finite_or_none",
    "generic_class_names",
    "latency_stats",
    "score_sequence",
]


def generic_class_names(n_classes: int) -> tuple[str, ...]:
    """``class 0 .. class n-1``, for ground truth whose classes nobody named."""
    return tuple(f"class {i}" for i in range(n_classes))


def finite_or_none(value: float | int) -> float | int | None:
    """``value`` for JSON: None for NaN or an infinite float."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
        return {key: finite_or_none(value) for key, value in self._asdict().items()}


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
