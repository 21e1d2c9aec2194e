"""Tests of unim2_core.evaluation.metrics against confusion matrices and IoUs worked out by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from unim2_core.errors import DataError
from unim2_core.evaluation.metrics import (
    ConfusionMatrix,
    apply_mapping,
    confusion_matrix,
    score,
    score_with_mapping,
)


def test_confusion_matrix_counts_pairs_by_hand() -> None:
    pred = np.array([[0, 1, 2], [2, 2, 0]])
    labels = np.array([[1, 1, 0], [255, 0, 1]])
    # pairs (cluster, class): (0,1) (1,1) (2,0) (2,0) (0,1); (2,255) is ignored
    expected = np.array([[0, 2], [0, 1], [2, 0]])
    result = confusion_matrix(pred, labels, n_clusters=3, n_classes=2)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, expected)


def test_score_three_by_three_with_known_permutation() -> None:
    confusion = np.array(
        [
            [2, 10, 1],
            [8, 1, 0],
            [0, 2, 6],
        ]
    )
    result = score(confusion)
    # best assignment: cluster 0 -> class 1 (10), 1 -> 0 (8), 2 -> 2 (6): 24 of 30 pixels
    np.testing.assert_array_equal(result.mapping, [1, 0, 2])
    np.testing.assert_array_equal(result.confusion, [[8, 1, 0], [2, 10, 1], [0, 2, 6]])
    # class 0: TP 8, FP 1, FN 2; class 1: TP 10, FP 3, FN 3; class 2: TP 6, FP 2, FN 1
    expected_iou = 100 * np.array([8 / 11, 10 / 16, 6 / 9])
    np.testing.assert_allclose(result.per_class_iou, expected_iou)
    assert result.miou == pytest.approx(expected_iou.mean())
    assert result.accuracy == pytest.approx(100 * 24 / 30)
    np.testing.assert_array_equal(result.unmatched, [0, 0, 0])


def test_score_more_clusters_than_classes_counts_unmatched_as_false_negatives() -> None:
    confusion = np.array(
        [
            [5, 1],
            [0, 4],
            [3, 2],
        ]
    )
    result = score(confusion)
    # best: cluster 0 -> class 0 (5), cluster 1 -> class 1 (4); cluster 2 unmatched
    np.testing.assert_array_equal(result.mapping, [0, 1, -1])
    np.testing.assert_array_equal(result.confusion, [[5, 1], [0, 4]])
    np.testing.assert_array_equal(result.unmatched, [3, 2])
    # class 0: TP 5, FP 1, FN 8 - 5 = 3; class 1: TP 4, FP 0, FN 7 - 4 = 3
    np.testing.assert_allclose(result.per_class_iou, [100 * 5 / 9, 100 * 4 / 7])
    assert result.miou == pytest.approx((100 * 5 / 9 + 100 * 4 / 7) / 2)
    assert result.accuracy == pytest.approx(100 * 9 / 15)


def test_score_fewer_clusters_than_classes_gives_zero_iou_to_classes_without_cluster() -> None:
    confusion = np.array(
        [
            [6, 1, 2],
            [1, 5, 3],
        ]
    )
    result = score(confusion)
    np.testing.assert_array_equal(result.mapping, [0, 1])
    np.testing.assert_array_equal(result.confusion, [[6, 1, 2], [1, 5, 3], [0, 0, 0]])
    # class 0: TP 6, FP 3, FN 1; class 1: TP 5, FP 4, FN 1; class 2: TP 0, FP 0, FN 5
    np.testing.assert_allclose(result.per_class_iou, [60.0, 50.0, 0.0])
    assert result.miou == pytest.approx(110 / 3)
    assert result.accuracy == pytest.approx(100 * 11 / 18)


def test_score_excludes_class_without_ground_truth_or_prediction() -> None:
    confusion = np.array(
        [
            [4, 0, 0],
            [1, 3, 0],
            [0, 0, 0],
        ]
    )
    result = score(confusion)
    np.testing.assert_array_equal(result.mapping, [0, 1, 2])
    # class 0: TP 4, FP 0, FN 1; class 1: TP 3, FP 1, FN 0; class 2: nothing at all
    assert result.per_class_iou[0] == pytest.approx(80.0)
    assert result.per_class_iou[1] == pytest.approx(75.0)
    assert np.isnan(result.per_class_iou[2])
    assert result.miou == pytest.approx(77.5)
    assert result.accuracy == pytest.approx(100 * 7 / 8)


def test_score_keeps_predicted_class_without_ground_truth_in_mean() -> None:
    confusion = np.array(
        [
            [3, 0],
            [2, 0],
        ]
    )
    result = score(confusion)
    np.testing.assert_array_equal(result.mapping, [0, 1])
    # class 1 has no ground truth but 2 false positives: IoU 0, still averaged
    np.testing.assert_allclose(result.per_class_iou, [60.0, 0.0])
    assert result.miou == pytest.approx(30.0)
    assert result.accuracy == pytest.approx(60.0)


def _brute_force_best_agreement(confusion: np.ndarray) -> int:
    n_clusters, n_classes = confusion.shape
    best = 0
    if n_clusters >= n_classes:
        for clusters in itertools.permutations(range(n_clusters), n_classes):
            best = max(best, sum(confusion[k, c] for c, k in enumerate(clusters)))
    else:
        for classes in itertools.permutations(range(n_classes), n_clusters):
            best = max(best, sum(confusion[k, c] for k, c in enumerate(classes)))
    return int(best)


@pytest.mark.parametrize(("n_clusters", "n_classes"), [(4, 4), (5, 3), (3, 5)])
def test_matching_reaches_brute_force_optimum(n_clusters: int, n_classes: int) -> None:
    rng = np.random.default_rng(n_clusters * 10 + n_classes)
    for _ in range(20):
        confusion = rng.integers(0, 50, size=(n_clusters, n_classes))
        result = score(confusion)
        assert int(np.trace(result.confusion)) == _brute_force_best_agreement(confusion)
        assert result.accuracy == pytest.approx(
            100 * _brute_force_best_agreement(confusion) / confusion.sum()
        )


def test_permuted_perfect_prediction_scores_exactly_100() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(4, 24, 32))
    labels[:, :3] = 255
    permutation = np.array([3, 0, 4, 1, 2])
    pred = permutation[np.where(labels == 255, 0, labels)]
    pred[labels == 255] = 99  # out of range on ignored pixels: never looked at
    cm = ConfusionMatrix(n_clusters=5, n_classes=5)
    cm.update(pred, labels)
    result = cm.score()
    assert result.miou == 100.0
    assert result.accuracy == 100.0
    np.testing.assert_array_equal(result.mapping[permutation], np.arange(5))
    np.testing.assert_array_equal(
        apply_mapping(pred[labels != 255], result.mapping), labels[labels != 255]
    )


def test_predictions_on_ignored_pixels_change_nothing() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=(24, 32))
    labels[rng.random((24, 32)) < 0.3] = 255
    pred = rng.integers(0, 6, size=(24, 32))
    changed = pred.copy()
    ignored = labels == 255
    changed[ignored] = rng.integers(0, 1000, size=int(ignored.sum()))
    first = confusion_matrix(pred, labels, n_clusters=6, n_classes=4)
    second = confusion_matrix(changed, labels, n_clusters=6, n_classes=4)
    np.testing.assert_array_equal(first, second)
    assert first.sum() == (~ignored).sum()


def test_accumulating_frames_equals_one_big_frame() -> None:
    rng = np.random.default_rng(2)
    frames = [
        (rng.integers(0, 7, size=shape), rng.integers(0, 5, size=shape))
        for shape in [(24, 32), (10, 8), (48, 64)]
    ]
    for _, labels in frames:
        labels[rng.random(labels.shape) < 0.2] = 255
    cm = ConfusionMatrix(n_clusters=7, n_classes=5)
    for pred, labels in frames:
        cm.update(pred, labels)
    big_pred = np.concatenate([p.reshape(-1) for p, _ in frames])
    big_labels = np.concatenate([lab.reshape(-1) for _, lab in frames])
    big = confusion_matrix(big_pred, big_labels, n_clusters=7, n_classes=5)
    np.testing.assert_array_equal(cm.matrix, big)
    assert cm.pixel_count == int((big_labels != 255).sum())
    accumulated, single = cm.score(), score(big)
    assert accumulated.miou == single.miou
    assert accumulated.accuracy == single.accuracy
    np.testing.assert_array_equal(accumulated.mapping, single.mapping)


def test_update_accepts_uint8_label_images_and_batches() -> None:
    labels = np.array([[[0, 1], [255, 2]], [[2, 2], [1, 0]]], dtype=np.uint8)
    pred = np.array([[[1, 0], [0, 2]], [[2, 2], [0, 1]]], dtype=np.int64)
    cm = ConfusionMatrix(n_clusters=3, n_classes=3)
    cm.update(pred, labels)
    np.testing.assert_array_equal(cm.matrix, [[0, 2, 0], [2, 0, 0], [0, 0, 3]])
    cm.reset()
    assert cm.pixel_count == 0


def test_cluster_id_out_of_range_is_named_and_leaves_matrix_unchanged() -> None:
    cm = ConfusionMatrix(n_clusters=3, n_classes=2)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    before = cm.matrix
    with pytest.raises(DataError, match=r"cluster ids \[3, 7\] are outside 0\.\.2"):
        cm.update(np.array([3, 1, 7]), np.array([0, 1, 1]))
    np.testing.assert_array_equal(cm.matrix, before)


def test_label_out_of_range_is_named() -> None:
    with pytest.raises(DataError, match=r"label values \[9\] are outside 0\.\.1"):
        confusion_matrix(np.array([0, 1]), np.array([9, 255]), n_clusters=2, n_classes=2)


def test_negative_cluster_id_is_named() -> None:
    with pytest.raises(DataError, match=r"cluster ids \[-1\]"):
        confusion_matrix(np.array([-1, 1]), np.array([0, 1]), n_clusters=2, n_classes=2)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"prediction shape \(2,\) differs from label shape"):
        confusion_matrix(np.zeros(2, int), np.zeros(3, int), n_clusters=2, n_classes=2)


def test_float_predictions_are_rejected() -> None:
    with pytest.raises(ValueError, match="pred must hold integer ids, got dtype float32"):
        confusion_matrix(np.zeros(2, np.float32), np.zeros(2, int), n_clusters=2, n_classes=2)


def test_ignore_index_inside_class_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="ignore_index 3 is a valid class id"):
        ConfusionMatrix(n_clusters=5, n_classes=5, ignore_index=3)


def test_empty_confusion_cannot_be_scored() -> None:
    cm = ConfusionMatrix(n_clusters=3, n_classes=2)
    cm.update(np.array([0, 1]), np.array([255, 255]))
    with pytest.raises(DataError, match="counts no labelled pixel"):
        cm.score()


def test_score_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="negative counts"):
        score(np.array([[1, -1], [0, 2]]))


def test_apply_mapping_maps_clusters_and_fills_unmatched() -> None:
    pred = np.array([[0, 1, 2], [2, 1, 0]])
    mapping = np.array([1, -1, 0])
    np.testing.assert_array_equal(apply_mapping(pred, mapping), [[1, -1, 0], [0, -1, 1]])
    np.testing.assert_array_equal(
        apply_mapping(pred, mapping, unmatched_value=255), [[1, 255, 0], [0, 255, 1]]
    )


def test_apply_mapping_rejects_unknown_cluster() -> None:
    with pytest.raises(DataError, match=r"cluster ids \[3\] are outside 0\.\.2"):
        apply_mapping(np.array([0, 3]), np.array([1, -1, 0]))


def test_score_with_a_kept_mapping_by_hand() -> None:
    # Frames where the model's cluster 0 drifted onto class 1: the Hungarian matching would
    # swap the clusters, a kept mapping (0 -> 0, 1 -> 1, 2 -> none) must not.
    confusion = np.array([[2, 6], [5, 1], [0, 2]])
    kept = score_with_mapping(confusion, np.array([0, 1, -1]))
    # class 0: TP 2, FP 6, FN 5 -> 2/13; class 1: TP 1, FP 5, FN 6+2 -> 1/14
    assert kept.per_class_iou == pytest.approx([100 * 2 / 13, 100 * 1 / 14])
    assert kept.accuracy == pytest.approx(100 * 3 / 16)
    assert kept.unmatched.tolist() == [0, 2]
    hungarian = score(confusion)
    assert hungarian.mapping.tolist() == [1, 0, -1]
    assert hungarian.miou > kept.miou
    again = score_with_mapping(confusion, hungarian.mapping)
    assert (again.miou, again.accuracy) == (hungarian.miou, hungarian.accuracy)


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ([0, 1], "each of the 3 clusters a class id in -1..1"),
        ([0, 2, -1], "each of the 3 clusters"),
        ([1, 1, -1], "two clusters the same class"),
    ],
)
def test_score_with_mapping_rejects_a_mapping_that_is_no_matching(
    mapping: list[int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        score_with_mapping(np.array([[2, 6], [5, 1], [0, 2]]), np.array(mapping))
