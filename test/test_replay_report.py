"""Tests of the replay outputs (unim2_core.evaluation.replay_scores, replay_video,
replay_writer, replay_report): latency statistics, sequence scoring, video, output folder.

Scores are checked against confusion matrices and IoUs worked out by hand, latency statistics
against hand-computed order statistics, videos by decoding them with OpenCV.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from unim2_core.data.image_io import read_image
from unim2_core.errors import DataError
from unim2_core.evaluation.replay_report import (
    COMPARISONS_DIR,
    CONFUSION_FILE,
    JSON_FILE,
    LABELS_DIR,
    OVERLAYS_DIR,
    REPORT_FILE,
    VIDEO_FILE,
    ReplaySetup,
    frame_stem,
)
from unim2_core.evaluation.replay_scores import SequenceScorer, latency_stats, score_sequence
from unim2_core.evaluation.replay_video import fps_from_stamps, write_video
from unim2_core.evaluation.replay_writer import ReplayWriter, check_output_folder
from unim2_core.runtime.segmenter import LabelInfo
from unim2_core.runtime.visualize import colorize, overlay

TABLE = (
    LabelInfo(0, "cluster_0", (255, 0, 0)),
    LabelInfo(1, "cluster_1", (0, 255, 0)),
    LabelInfo(2, "cluster_2", (0, 0, 255)),
)
SETUP = ReplaySetup(
    mode="offline",
    bag=Path("/bags/run1"),
    topics={"rgb": "/cam/rgb"},
    model="test model",
    latency="Segmenter call time",
    ground_truth="label topic '/cam/labels'",
    settings={"slop_s": 0.05},
)

# Two frames, 3 predicted ids, 2 classes (255 = unlabelled). Counted by hand:
#   frame a: (0,0) x2, (1,1) x2, (2,1) x1, one ignored pixel
#   frame b: (1,1), (1,0), (0,0)
# confusion [[3, 0], [1, 3], [0, 1]] -> Hungarian maps 0->0, 1->1, 2 unmatched.
# class 0: TP 3, FP 0, FN 1 -> 75 %; class 1: TP 3, FP 1, FN 1 -> 60 %; mIoU 67.5, Acc 6/8.
PRED_A = np.array([[0, 0, 1], [2, 2, 1]], np.uint8)
TRUTH_A = np.array([[0, 0, 1], [1, 255, 1]], np.uint8)
PRED_B = np.array([[1, 1, 0]], np.uint8)
TRUTH_B = np.array([[1, 0, 0]], np.uint8)


def test_latency_stats_match_hand_computed_order_statistics() -> None:
    stats = latency_stats([4.0, 1.0, 100.0, 3.0, 2.0])
    assert stats.n == 5
    assert stats.mean_ms == pytest.approx(22.0)
    assert stats.median_ms == pytest.approx(3.0)
    assert stats.p90_ms == pytest.approx(4.0 + 0.6 * 96.0)  # rank 3.6 of 0..4
    assert stats.p99_ms == pytest.approx(4.0 + 0.96 * 96.0)
    assert stats.max_ms == 100.0
    assert stats.to_dict()["median_ms"] == pytest.approx(3.0)


def test_latency_stats_of_no_frame_are_nan_and_null_in_json() -> None:
    stats = latency_stats([])
    assert stats.n == 0 and math.isnan(stats.mean_ms) and math.isnan(stats.max_ms)
    assert stats.to_dict() == dict.fromkeys(stats._fields, None) | {"n": 0}


def test_latency_stats_reject_non_finite_values() -> None:
    with pytest.raises(ValueError, match="finite numbers"):
        latency_stats([1.0, math.nan])


def test_sequence_scores_equal_the_hand_computed_confusion() -> None:
    result = score_sequence(
        [(PRED_A, TRUTH_A), (PRED_B, TRUTH_B)], n_predicted=3, class_names=("floor", "wall")
    )
    assert result is not None
    np.testing.assert_array_equal(result.confusion, [[3, 0], [1, 3], [0, 1]])
    np.testing.assert_array_equal(result.scores.mapping, [0, 1, -1])
    np.testing.assert_allclose(result.scores.per_class_iou, [75.0, 60.0])
    assert result.scores.miou == pytest.approx(67.5)
    assert result.scores.accuracy == pytest.approx(75.0)
    assert result.class_names == ("floor", "wall")
    # Per frame under the global mapping: a: class 0 2/2, class 1 2/3; b: 1/2 and 1/2.
    frame_a, frame_b = result.frame_scores
    assert (frame_a.stem, frame_a.position) == ("frame_0", 0)
    assert frame_a.miou == pytest.approx((100.0 + 200.0 / 3) / 2)
    assert frame_a.accuracy == pytest.approx(80.0)
    assert frame_b.miou == pytest.approx(50.0)
    assert frame_b.accuracy == pytest.approx(200.0 / 3)


def test_a_perfect_permuted_prediction_scores_100() -> None:
    rng = np.random.default_rng(0)
    permutation = np.array([3, 0, 4, 1])  # class -> predicted id; id 2 is never predicted
    pairs = []
    for _ in range(3):
        truth = rng.integers(0, 4, size=(12, 16)).astype(np.uint8)
        truth[rng.random(truth.shape) < 0.1] = 255
        predicted = permutation[np.minimum(truth, 3)].astype(np.uint8)
        predicted[truth == 255] = 2  # whatever is predicted on unlabelled pixels never counts
        pairs.append((predicted, truth))
    result = score_sequence(pairs, n_predicted=5)
    assert result is not None
    assert result.scores.miou == pytest.approx(100.0)
    assert result.scores.accuracy == pytest.approx(100.0)
    np.testing.assert_allclose(result.scores.per_class_iou, 100.0)
    np.testing.assert_array_equal(result.scores.mapping, [1, 3, -1, 0, 2])
    assert all(frame.miou == pytest.approx(100.0) for frame in result.frame_scores)


def test_unnamed_classes_are_sized_from_the_largest_id_seen() -> None:
    scorer = SequenceScorer(4)
    scorer.update(np.array([[0, 1]]), np.array([[0, 1]]), stem="a")
    assert scorer.class_names == ("class 0", "class 1")
    scorer.update(np.array([[3, 0]]), np.array([[3, 0]]), stem="b")
    result = scorer.result()
    assert result is not None
    assert result.class_names == ("class 0", "class 1", "class 2", "class 3")
    assert result.confusion.shape == (4, 4)
    iou = result.scores.per_class_iou
    assert np.isnan(iou[2]) and iou[[0, 1, 3]].tolist() == [100.0, 100.0, 100.0]
    assert result.scores.miou == pytest.approx(100.0)


def test_nothing_labelled_gives_no_scores() -> None:
    assert score_sequence([(PRED_A, np.full_like(TRUTH_A, 255))], n_predicted=3) is None


@pytest.mark.parametrize(
    ("predicted", "truth", "names", "match"),
    [
        (PRED_A, TRUTH_A[:, :2], None, r"frame 'frame_0': ground truth \(2, 2\) and label map"),
        (PRED_A + 3, TRUTH_A, None, r"frame 'frame_0': cluster ids \[3, 4, 5\] are outside 0..2"),
        (PRED_A, TRUTH_A + 1, ("a", "b"), r"frame 'frame_0': label values \[2\] are outside"),
        (PRED_A, np.full((2, 3), 300), None, r"ground-truth id 300 cannot be a class .* 255"),
        (PRED_A, TRUTH_A.astype(np.float32), None, r"must hold integer ids"),
    ],
    ids=["size", "predicted-id", "class-id", "above-ignore", "float"],
)
def test_bad_frames_are_refused_naming_the_frame(
    predicted: np.ndarray, truth: np.ndarray, names: tuple[str, ...] | None, match: str
) -> None:
    with pytest.raises(DataError, match=match):
        score_sequence([(predicted, truth)], n_predicted=3, class_names=names)


def test_scorer_rejects_impossible_class_layouts() -> None:
    with pytest.raises(ValueError, match="non-empty and distinct"):
        SequenceScorer(3, class_names=("a", "a"))
    with pytest.raises(ValueError, match="ignore_index 1 is a class id"):
        SequenceScorer(3, class_names=("a", "b"), ignore_index=1)
    with pytest.raises(ValueError, match="n_predicted must be >= 1"):
        SequenceScorer(0)


def test_fps_comes_from_the_distinct_stamps() -> None:
    stamps = [1_000_000_000 + k * 100_000_000 for k in (0, 1, 1, 2, 3)]
    assert fps_from_stamps(stamps) == pytest.approx(10.0)
    assert fps_from_stamps([5, 5]) == 10.0
    assert fps_from_stamps([], default=30.0) == 30.0
    with pytest.raises(ValueError, match="default fps"):
        fps_from_stamps([], default=0.0)


def _decoded(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_video_holds_every_frame_padded_to_even_sides(tmp_path: Path) -> None:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    frames = [np.full((49, 65, 3), colour, np.uint8) for colour in colours]
    path = tmp_path / "out" / "video.mp4"
    assert write_video(frames, path, fps=5.0) == 3
    decoded = _decoded(path)
    assert len(decoded) == 3
    assert decoded[0].shape == (50, 66, 3)
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
    capture.release()
    for frame, colour in zip(decoded, colours, strict=True):  # lossy codec: colours approximate
        np.testing.assert_allclose(frame[10:40, 10:50].mean(axis=(0, 1)), colour[::-1], atol=12)
    assert [p.name for p in path.parent.iterdir()] == ["video.mp4"]


def test_video_of_no_frame_writes_nothing(tmp_path: Path) -> None:
    assert write_video([], tmp_path / "video.mp4", fps=10.0) == 0
    assert not (tmp_path / "video.mp4").exists()
    with pytest.raises(ValueError, match="fps must be"):
        write_video([], tmp_path / "video.mp4", fps=math.inf)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        write_video([np.zeros((4, 4), np.uint8)], tmp_path / "video.mp4", fps=1.0)
    assert list(tmp_path.iterdir()) == []


def test_output_folder_must_be_new_or_empty(tmp_path: Path) -> None:
    assert check_output_folder(tmp_path / "new").is_dir()
    assert check_output_folder(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "new" / "old.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"output folder '.*new' exists and is not empty"):
        check_output_folder(tmp_path / "new")


def test_writer_writes_frames_scores_video_json_and_report(tmp_path: Path) -> None:
    rgb_a = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 10
    rgb_b = np.full((1, 3, 3), 90, np.uint8)
    rgb_b = np.resize(rgb_b, (2, 3, 3))  # the frames of one bag have one size
    pred_b = np.resize(PRED_B, (2, 3)).astype(np.uint8)
    truth_b = np.vstack([TRUTH_B, np.full((1, 3), 255, np.uint8)])
    out = tmp_path / "replay"
    writer = ReplayWriter(out, setup=SETUP, labels_table=TABLE, ground_truth=True)
    stamps = [1_700_000_000_000_000_000, 1_700_000_000_100_000_000, 1_700_000_000_200_000_000]
    writer.add_frame(0, stamps[0], rgb_a, PRED_A, TRUTH_A, 12.0)
    writer.add_frame(1, stamps[1], rgb_b, None, truth_b, None)  # no output: not scored
    writer.add_frame(2, stamps[2], rgb_b, pred_b, truth_b, 20.0)
    asked: list[frozenset[int]] = []

    def frame_source(positions: frozenset[int]) -> list[tuple[int, np.ndarray, np.ndarray]]:
        asked.append(positions)
        frames = {0: (rgb_a, TRUTH_A), 2: (rgb_b, truth_b)}
        return [(i, *frames[i]) for i in sorted(positions)]

    result = writer.finish(
        skipped=[("/cam/rgb", 5, "corrupt message: boom")],
        not_in_group={"/cam/rgb": 1},
        counts={"frames refused by the model": 0},
        frame_source=frame_source,
    )

    assert (result.n_frames, result.missing, result.output_bag) == (3, 1, None)
    assert result.scores is not None
    assert result.scores.miou == pytest.approx(67.5)
    assert result.class_names == ("class 0", "class 1")
    assert (result.latency.n, result.latency.mean_ms) == (2, 16.0)
    stems = [frame_stem(i, s) for i, s in enumerate(stamps)]
    assert stems[0] == "000000_1700000000000000000"
    assert sorted(p.name for p in (out / LABELS_DIR).iterdir()) == [
        f"{stems[0]}.png",
        f"{stems[2]}.png",
    ]
    np.testing.assert_array_equal(read_image(out / LABELS_DIR / f"{stems[2]}.png"), pred_b)
    palette = np.array([label.color for label in TABLE], np.uint8)
    np.testing.assert_array_equal(
        read_image(out / OVERLAYS_DIR / f"{stems[0]}.png"),
        overlay(rgb_a, colorize(PRED_A, palette), 0.5),
    )
    assert result.video == out / VIDEO_FILE and len(_decoded(out / VIDEO_FILE)) == 2
    assert (out / CONFUSION_FILE).stat().st_size > 0

    document = json.loads((out / JSON_FILE).read_text())
    assert document["frames"] == 3 and document["missing_outputs"] == 1
    assert document["scores"]["miou"] == pytest.approx(67.5)
    assert document["scores"]["per_class_iou"] == {"class 0": 75.0, "class 1": 60.0}
    assert document["scores"]["label_to_class"] == {
        "cluster_0": "class 0",
        "cluster_1": "class 1",
        "cluster_2": None,
    }
    assert document["latency"]["n"] == 2 and document["latency"]["max_ms"] == 20.0
    assert document["skipped_messages"] == [
        {"topic": "/cam/rgb", "timestamp_ns": 5, "reason": "corrupt message: boom"}
    ]
    assert document["video"] == VIDEO_FILE
    assert document["video_fps"] == pytest.approx(5.0)  # stamps 0 s and 0.2 s
    assert [f["output"] for f in document["per_frame"]] == [True, False, True]
    assert document["per_frame"][0]["miou"] == pytest.approx((100.0 + 200.0 / 3) / 2)
    assert "miou" not in document["per_frame"][1]
    assert [f["title"] for f in document["shown_frames"]] == ["best #1", "worst #1"]
    assert asked == [frozenset({0, 2})]
    assert [f["comparison"] for f in document["shown_frames"]] == [
        f"{COMPARISONS_DIR}/best_1_{stems[0]}.png",
        f"{COMPARISONS_DIR}/worst_1_{stems[2]}.png",
    ]

    report = (out / REPORT_FILE).read_text()
    assert "**mIoU 67.50**, pixel accuracy 75.00 over 2 frames" in report
    assert "| class 0 | 75.00 |" in report and "| missing outputs | 1 |" in report
    assert "`/cam/rgb` at 5 ns: corrupt message: boom" in report
    assert "| 2 | 16.0 | 16.0 |" in report
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert f"{OVERLAYS_DIR}/{stems[0]}.png" in links and CONFUSION_FILE in links
    assert f"{COMPARISONS_DIR}/worst_1_{stems[2]}.png" in links
    assert all((out / link).is_file() for link in links), links


def test_writer_without_ground_truth_shows_evenly_spaced_frames(tmp_path: Path) -> None:
    writer = ReplayWriter(
        tmp_path / "out",
        setup=SETUP._replace(ground_truth=None),
        labels_table=TABLE,
        ground_truth=False,
        video=False,
    )
    rgb = np.zeros((2, 3, 3), np.uint8)
    for index in range(7):
        writer.add_frame(index, 1000 + index, rgb, PRED_A, None, 1.0)
    result = writer.finish()
    assert result.scores is None and result.video is None and result.class_names == ()
    document = json.loads(result.json.read_text())
    assert [f["title"] for f in document["shown_frames"]] == [
        "frame 0",
        "frame 2",
        "frame 4",
        "frame 6",
    ]
    assert document["scores"] is None
    assert "Not scored: no ground truth." in result.report.read_text()
    assert not (tmp_path / "out" / VIDEO_FILE).exists()


def test_writer_refuses_label_ids_outside_the_table(tmp_path: Path) -> None:
    writer = ReplayWriter(tmp_path / "out", setup=SETUP, labels_table=TABLE, ground_truth=False)
    with pytest.raises(DataError, match=r"frame '000004_99': label id 3 has no colour"):
        writer.add_frame(4, 99, np.zeros((2, 3, 3), np.uint8), PRED_A + 1, None, 1.0)
    with pytest.raises(DataError, match=r"frame '000005_99': label map \(2, 3\) differs"):
        writer.add_frame(5, 99, np.zeros((3, 3, 3), np.uint8), PRED_A, None, 1.0)
