"""Unsupervised segmentation metrics: confusion accumulation, Hungarian matching, mIoU, accuracy.

Unsupervised models output cluster ids, not class ids, so a split is scored in three steps:

1. Accumulate ONE ``K x n_classes`` confusion matrix over the whole split
   (:class:`ConfusionMatrix`, rows = predicted cluster, columns = ground-truth class). Pixels
   labelled with the ignore index never count, whatever was predicted there.
2. Match clusters to classes with the Hungarian algorithm, maximising the number of pixels on
   which cluster and class agree (``scipy.optimize.linear_sum_assignment(..., maximize=True)``).
   Each class receives at most one cluster and each cluster at most one class.
3. Score the matched assignment (:func:`score`): per-class IoU = TP / (TP + FP + FN), its mean
   (mIoU) and pixel accuracy, all in percent.

Unequal numbers of clusters and classes follow the spirit of STEGO's ``UnsupervisedMetrics``
(mhamilton723/STEGO ``src/utils.py``), where the pixels of unmatched extra clusters are gathered
into one extra "no class" row of the histogram; here the rule is stated explicitly:

- K > n_classes: the K - n_classes clusters left unmatched predict *no* class. Their pixels are
  false negatives of their ground-truth class (they enlarge that class's IoU denominator), are
  false positives of no class, and count as errors in pixel accuracy (which divides by every
  labelled pixel).
- K < n_classes: the n_classes - K classes left without a cluster have TP = FP = 0, so their IoU
  is 0 whenever they have ground-truth pixels.
- A class with neither ground-truth pixels nor pixels of its matched cluster (TP + FP + FN = 0)
  has an undefined IoU: it is NaN in ``per_class_iou`` and excluded from the mIoU mean. A class
  with no ground-truth pixels whose cluster predicts pixels has IoU 0 and stays in the mean.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from unim2_core.errors import DataError

IGNORE_INDEX = 255
"""Label value of pixels that carry no ground truth (the benchmarks' convention)."""

_MAX_LISTED_VALUES = 8


class SegmentationScores(NamedTuple):
    """Scores of one split after Hungarian matching.

    Attributes:
        miou: Mean over classes of TP / (TP + FP + FN), in percent; classes with
            TP + FP + FN = 0 are excluded from the mean.
        accuracy: Correctly matched labelled pixels over all labelled pixels, in percent.
        per_class_iou: [n_classes] float64 IoU in percent, NaN for excluded classes.
        mapping: [K] int64 class id matched to each cluster, -1 for unmatched clusters.
        confusion: [n_classes, n_classes] int64 matched confusion matrix: entry (i, j) counts
            pixels whose cluster is matched to class i and whose ground truth is class j. Pixels
            of unmatched clusters are not in it (see ``unmatched``).
        unmatched: [n_classes] int64 labelled pixels per ground-truth class that fell into
            unmatched clusters (all zero unless K > n_classes). They are false negatives.
    """

    miou: float
    accuracy: float
    per_class_iou: np.ndarray
    mapping: np.ndarray
    confusion: np.ndarray
    unmatched: np.ndarray


def _check_layout(n_clusters: int, n_classes: int, ignore_index: int) -> None:
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if 0 <= ignore_index < n_classes:
        raise ValueError(f"ignore_index {ignore_index} is a valid class id (n_classes={n_classes})")


def _check_integer(name: str, array: np.ndarray) -> None:
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {array.dtype}")


def _out_of_range(values: np.ndarray, upper: int) -> np.ndarray:
    """Sorted distinct entries of ``values`` outside [0, upper), at most a few."""
    bad = values[(values < 0) | (values >= upper)]
    return np.unique(bad)[:_MAX_LISTED_VALUES]


def confusion_matrix(
    pred: np.ndarray,
    labels: np.ndarray,
    *,
    n_clusters: int,
    n_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Count (cluster, class) pairs over the labelled pixels of one prediction.

    Args:
        pred: Integer cluster ids, any shape.
        labels: Integer class ids, same shape as ``pred``; ``ignore_index`` marks unlabelled
            pixels, whose prediction is neither counted nor checked.
        n_clusters: K, the number of cluster ids (valid ids are 0..K-1).
        n_classes: Number of ground-truth classes (valid ids are 0..n_classes-1).
        ignore_index: Label value that never counts; must not be a class id.

    Returns:
        [n_clusters, n_classes] int64 counts.

    Raises:
        ValueError: The shapes differ, an array is not integer, or the layout is impossible.
        DataError: A labelled pixel has a cluster id >= K (or < 0) or a label outside the
            class range that is not ``ignore_index``; the message lists the values.
    """
    _check_layout(n_clusters, n_classes, ignore_index)
    pred = np.asarray(pred)
    labels = np.asarray(labels)
    if pred.shape != labels.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape {labels.shape}")
    _check_integer("pred", pred)
    _check_integer("labels", labels)
    flat_labels = labels.reshape(-1)
    flat_pred = pred.reshape(-1)
    valid = flat_labels != ignore_index
    if not valid.all():
        flat_labels = flat_labels[valid]
        flat_pred = flat_pred[valid]
    flat_labels = flat_labels.astype(np.int64, copy=False)
    flat_pred = flat_pred.astype(np.int64, copy=False)
    if flat_labels.size:
        if flat_labels.min() < 0 or flat_labels.max() >= n_classes:
            bad = _out_of_range(flat_labels, n_classes)
            raise DataError(
                f"label values {bad.tolist()} are outside 0..{n_classes - 1} "
                f"and are not the ignore index {ignore_index}"
            )
        if flat_pred.min() < 0 or flat_pred.max() >= n_clusters:
            bad = _out_of_range(flat_pred, n_clusters)
            raise DataError(f"cluster ids {bad.tolist()} are outside 0..{n_clusters - 1}")
    counts = np.bincount(flat_pred * n_classes + flat_labels, minlength=n_clusters * n_classes)
    return counts.reshape(n_clusters, n_classes)


def score(confusion: np.ndarray) -> SegmentationScores:
    """Match clusters to classes and compute mIoU, pixel accuracy and per-class IoU.

    The rules for unmatched clusters, classes without a cluster and excluded classes are those
    of the module docstring.

    Args:
        confusion: [K, n_classes] non-negative integer counts (rows clusters, columns classes),
            for example :attr:`ConfusionMatrix.matrix`.

    Returns:
        The scores; see :class:`SegmentationScores`.

    Raises:
        ValueError: ``confusion`` is not a 2-D non-negative integer matrix.
        DataError: ``confusion`` counts no labelled pixel at all (nothing to score).
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or 0 in confusion.shape:
        raise ValueError(f"confusion must be a non-empty 2-D matrix, got shape {confusion.shape}")
    _check_integer("confusion", confusion)
    if (confusion < 0).any():
        raise ValueError("confusion holds negative counts")
    confusion = confusion.astype(np.int64, copy=False)
    if int(confusion.sum()) == 0:
        raise DataError("the confusion matrix counts no labelled pixel; nothing to score")

    clusters, classes = linear_sum_assignment(confusion, maximize=True)
    mapping = np.full(confusion.shape[0], -1, dtype=np.int64)
    mapping[clusters] = classes
    return score_with_mapping(confusion, mapping)


def score_with_mapping(confusion: np.ndarray, mapping: np.ndarray) -> SegmentationScores:
    """Score ``confusion`` under a given one-to-one cluster -> class ``mapping`` (-1: no class).

    :func:`score` with the Hungarian matching; called directly it keeps a matching found on
    other frames, e.g. a model's label meanings when one of its sensors drops out.

    Raises:
        ValueError: ``mapping`` does not give each of the K clusters one class id in
            -1..n_classes-1, or gives two clusters the same class.
        DataError: ``confusion`` counts no labelled pixel at all.
    """
    confusion = np.asarray(confusion).astype(np.int64, copy=False)
    mapping = np.asarray(mapping)
    n_clusters, n_classes = confusion.shape
    if mapping.shape != (n_clusters,) or mapping.min() < -1 or mapping.max() >= n_classes:
        raise ValueError(
            f"mapping must give each of the {n_clusters} clusters a class id in "
            f"-1..{n_classes - 1}, got {mapping.tolist()}"
        )
    clusters = np.flatnonzero(mapping >= 0)
    classes = mapping[clusters]
    if len(np.unique(classes)) != len(classes):
        raise ValueError(f"mapping gives two clusters the same class: {mapping.tolist()}")
    total = int(confusion.sum())
    if total == 0:
        raise DataError("the confusion matrix counts no labelled pixel; nothing to score")
    matched = np.zeros((n_classes, n_classes), dtype=np.int64)
    matched[classes] = confusion[clusters]
    unmatched = confusion[mapping < 0].sum(axis=0)

    tp = np.diag(matched)
    fp = matched.sum(axis=1) - tp
    fn = confusion.sum(axis=0) - tp
    union = tp + fp + fn
    defined = union > 0
    per_class_iou = np.full(n_classes, np.nan, dtype=np.float64)
    per_class_iou[defined] = 100.0 * tp[defined] / union[defined]
    return SegmentationScores(
        miou=float(per_class_iou[defined].mean()),
        accuracy=100.0 * float(tp.sum()) / total,
        per_class_iou=per_class_iou,
        mapping=mapping,
        confusion=matched,
        unmatched=unmatched,
    )


def apply_mapping(
    pred: np.ndarray, mapping: np.ndarray, *, unmatched_value: int = -1
) -> np.ndarray:
    """Turn cluster ids into matched class ids.

    Args:
        pred: Integer cluster ids, any shape.
        mapping: [K] cluster -> class ids, -1 for unmatched clusters
            (:attr:`SegmentationScores.mapping`).
        unmatched_value: Value given to pixels of unmatched clusters, for example 255 to
            render them as "ignore" in a uint8 label image.

    Returns:
        int64 array shaped like ``pred``.

    Raises:
        ValueError: ``mapping`` is not a 1-D integer array of ids >= -1, or ``pred`` is not
            integer.
        DataError: ``pred`` holds a cluster id outside 0..K-1.
    """
    mapping = np.asarray(mapping)
    pred = np.asarray(pred)
    if mapping.ndim != 1 or mapping.size == 0:
        raise ValueError(f"mapping must be a non-empty 1-D array, got shape {mapping.shape}")
    _check_integer("mapping", mapping)
    _check_integer("pred", pred)
    if (mapping < -1).any():
        raise ValueError(f"mapping holds ids below -1: {np.unique(mapping[mapping < -1]).tolist()}")
    if pred.size and (pred.min() < 0 or pred.max() >= mapping.size):
        bad = _out_of_range(pred.reshape(-1), mapping.size)
        raise DataError(f"cluster ids {bad.tolist()} are outside 0..{mapping.size - 1}")
    lookup = mapping.astype(np.int64)
    lookup[lookup < 0] = unmatched_value
    mapped: np.ndarray = lookup[pred]
    return mapped


class ConfusionMatrix:
    """Accumulates one K x n_classes confusion matrix over a whole split.

    Scoring per frame and averaging would weight small frames like large ones and let the
    matching differ between frames; accumulating first and matching once is the protocol.

    Example:
        >>> cm = ConfusionMatrix(n_clusters=27, n_classes=13)
        >>> for pred, labels in frames:  # doctest: +SKIP
        ...     cm.update(pred, labels)
        >>> cm.score().miou  # doctest: +SKIP
    """

    def __init__(self, n_clusters: int, n_classes: int, *, ignore_index: int = IGNORE_INDEX):
        """Create an empty accumulator.

        Args:
            n_clusters: K, the number of cluster ids the model can output.
            n_classes: Number of ground-truth classes.
            ignore_index: Label value that never counts; must not be a class id.

        Raises:
            ValueError: K or n_classes < 1, or ``ignore_index`` is a class id.
        """
        _check_layout(n_clusters, n_classes, ignore_index)
        self.n_clusters = n_clusters
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        self._counts = np.zeros((n_clusters, n_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, labels: np.ndarray) -> None:
        """Add one prediction (or a batch: any matching shapes) to the matrix.

        Raises:
            ValueError: Shapes differ or an array is not integer.
            DataError: An out-of-range cluster id or label on a labelled pixel; the matrix is
                left unchanged.
        """
        self._counts += confusion_matrix(
            pred,
            labels,
            n_clusters=self.n_clusters,
            n_classes=self.n_classes,
            ignore_index=self.ignore_index,
        )

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the [K, n_classes] int64 counts accumulated so far."""
        return self._counts.copy()

    @property
    def pixel_count(self) -> int:
        """Number of labelled pixels accumulated so far."""
        return int(self._counts.sum())

    def score(self) -> SegmentationScores:
        """Score the accumulated matrix with :func:`score`."""
        return score(self._counts)

    def reset(self) -> None:
        """Forget every accumulated pixel."""
        self._counts[:] = 0
