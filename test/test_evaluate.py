"""Split evaluation: one confusion matrix under both protocols, per-frame ranking, reports, CLI.

The protocol tests use a stand-in segmenter whose output is read off the RGB image (cluster =
red channel // 100), on hand-made 4x4 frames, so every confusion matrix is computed by hand.
The end-to-end tests train the tiny model and check the CLI against the trainer's own numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from tiny_setup import tiny_config, write_tiny_config, write_tiny_dataset

from unim2_core.data.datasets import FrameGroup, open_dataset, write_frame_group
from unim2_core.data.image_io import read_image
from unim2_core.errors import DataError
from unim2_core.evaluation.evaluate import (
    EvaluationReport,
    evaluate_split,
    format_report,
    score_with_mapping,
    write_report,
)
from unim2_core.runtime.segmenter import SegmentationResult
from unim2_core.training.trainer import Trainer
from unim2_train.evaluate import main

# Frame "a" and "b": ground truth (255 = unlabelled) and the clusters the stand-in predicts.
LABELS = {
    "a": [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 1], [2, 2, 2, 1]],
    "b": [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]],
}
CLUSTERS = {
    "a": [[1, 1, 0, 0], [1, 1, 0, 0], [2, 2, 2, 0], [2, 0, 2, 0]],
    "b": [[1, 1, 1, 1], [1, 1, 1, 2], [0, 0, 0, 0], [0, 0, 0, 0]],
}
# Counted by hand, rows = cluster, columns = class.
FULL_CONFUSION = [[0, 14, 1], [11, 0, 0], [1, 0, 4]]
# Paper protocol with crop 2: nearest resize 4 -> 2 keeps pixels (1,1), (1,3), (3,1), (3,3).
PAPER_CONFUSION = [[0, 4, 1], [2, 0, 0], [1, 0, 0]]
CLASS_NAMES = ["floor", "wall", "box"]
PALETTE = [[200, 0, 0], [0, 200, 0], [0, 0, 200]]


class ColourSegmenter:
    """Predicts cluster = red // 100; remembers the sizes it was given."""

    def __init__(
        self, *, selection_split: str = "val", modalities: tuple[str, ...] = ("rgb", "depth")
    ) -> None:
        self.bundle: Any = SimpleNamespace(
            heads_config=SimpleNamespace(n_clusters=3),
            metrics={"selection": {"split": "val", "step": 40, "miou": 1.0, "accuracy": 2.0}},
            training={"train": {"selection_split": selection_split}},
        )
        self.sizes: list[tuple[int, int]] = []
        self._modalities = modalities

    @property
    def modalities(self) -> tuple[str, ...]:
        return self._modalities

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> SegmentationResult:
        assert set(arrays) == set(self._modalities)
        self.sizes.append(arrays["rgb"].shape[:2])
        return SegmentationResult((arrays["rgb"][..., 0] // 100).astype(np.uint8), None)


def _write_frames(
    root: Path, labels: Mapping[str, Any] = LABELS, clusters: Mapping[str, Any] = CLUSTERS
) -> Path:
    for stem, lab in labels.items():
        rgb = np.zeros((4, 4, 3), dtype=np.uint8)
        rgb[..., 0] = np.asarray(clusters[stem], dtype=np.uint8) * 100
        depth = np.full((4, 4), 1000, dtype=np.uint16)
        group = FrameGroup(stem, {"rgb": rgb, "depth": depth}, np.asarray(lab, dtype=np.uint8))
        write_frame_group(root, group)
    (root / "dataset.yaml").write_text(
        yaml.safe_dump({"class_names": CLASS_NAMES, "palette": PALETTE})
    )
    return root


@pytest.fixture
def frames(tmp_path: Path) -> Any:
    return open_dataset("folder", _write_frames(tmp_path / "data"), split="all")


def test_score_with_mapping_scores_a_frame_under_a_given_mapping() -> None:
    # frame "a": clusters 1 -> class 0, 0 -> class 1, 2 -> class 2.
    confusion = np.array([[0, 6, 1], [4, 0, 0], [0, 0, 4]])
    miou, accuracy = score_with_mapping(confusion, np.array([1, 0, 2]))
    assert miou == pytest.approx(100 * (4 / 4 + 6 / 7 + 4 / 5) / 3)
    assert accuracy == pytest.approx(100 * 14 / 15)
    nothing = score_with_mapping(np.zeros((3, 3), dtype=np.int64), np.array([1, 0, 2]))
    assert np.isnan(nothing).all()


def test_score_with_mapping_counts_unmatched_clusters_as_misses() -> None:
    confusion = np.array([[5, 0], [0, 5], [3, 1]])  # cluster 2 unmatched
    miou, accuracy = score_with_mapping(confusion, np.array([0, 1, -1]))
    assert miou == pytest.approx(100 * (5 / 8 + 5 / 6) / 2)
    assert accuracy == pytest.approx(100 * 10 / 14)


def test_full_protocol_accumulates_one_confusion_matrix(frames: Any) -> None:
    segmenter = ColourSegmenter()
    report = evaluate_split(segmenter, frames, protocol="full", keep_frames=1, progress=False)
    np.testing.assert_array_equal(report.confusion, FULL_CONFUSION)
    assert segmenter.sizes[:2] == [(4, 4), (4, 4)]
    assert report.scores.mapping.tolist() == [1, 0, 2]
    assert report.scores.miou == pytest.approx(100 * (11 / 12 + 14 / 15 + 4 / 6) / 3)
    assert report.scores.accuracy == pytest.approx(100 * 29 / 31)
    assert (report.split, report.protocol, report.n_frames) == ("all", "full", 2)
    by_stem = {f.stem: f for f in report.frame_scores}
    assert by_stem["a"].miou == pytest.approx(100 * (1 + 6 / 7 + 4 / 5) / 3)
    assert by_stem["b"].miou == pytest.approx(100 * (7 / 8 + 1 + 0) / 3)
    assert by_stem["b"].accuracy == pytest.approx(100 * 15 / 16)
    assert [v.stem for v in report.best] == ["a"]
    assert [v.stem for v in report.worst] == ["b"]
    worst = report.worst[0]
    # the overlay's prediction is the frame's clusters through the split mapping
    np.testing.assert_array_equal(worst.predicted, np.array([1, 0, 2])[CLUSTERS["b"]])
    np.testing.assert_array_equal(worst.truth, LABELS["b"])


def test_paper_protocol_resizes_and_crops_arrays_and_labels_with_nearest(frames: Any) -> None:
    segmenter = ColourSegmenter()
    report = evaluate_split(segmenter, frames, protocol="paper", crop_size=2, progress=False)
    assert segmenter.sizes[:2] == [(2, 2), (2, 2)]
    np.testing.assert_array_equal(report.confusion, PAPER_CONFUSION)
    assert report.crop_size == 2


def test_a_permuted_perfect_prediction_scores_100(tmp_path: Path) -> None:
    permuted = {stem: np.array([2, 0, 1])[np.array(c)] for stem, c in CLUSTERS.items()}
    data = open_dataset("folder", _write_frames(tmp_path, permuted), split="all")
    report = evaluate_split(ColourSegmenter(), data, protocol="full", progress=False)
    assert report.scores.miou == pytest.approx(100.0)
    assert report.scores.accuracy == pytest.approx(100.0)


def test_keep_frames_never_puts_a_frame_in_both_lists(frames: Any) -> None:
    report = evaluate_split(ColourSegmenter(), frames, protocol="full", keep_frames=5)
    assert [v.stem for v in report.best] == ["a"]
    assert [v.stem for v in report.worst] == ["b"]
    none = evaluate_split(ColourSegmenter(), frames, protocol="full", keep_frames=0)
    assert none.best == none.worst == ()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"protocol": "tiled"}, "protocol must be one of"),
        ({"protocol": "paper", "crop_size": 0}, "crop_size must be >= 1"),
        ({"protocol": "full", "keep_frames": -1}, "keep_frames >= 0"),
    ],
)
def test_evaluate_split_rejects_impossible_options(
    frames: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_split(ColourSegmenter(), frames, progress=False, **kwargs)


def _break(root: Path, how: str) -> str:
    """Damage frame "b" of a dataset written by ``_write_frames``; return the expected match."""
    if how == "missing modality file":
        (root / "depth" / "b.png").unlink()
        (root / "splits").mkdir()
        (root / "splits" / "test.txt").write_text("a\nb\n")
        return r"depth.*b"
    if how == "unreadable image":
        (root / "rgb" / "b.png").write_bytes(b"not a png")
        return r"rgb/b\.png"
    if how == "sizes differ":
        write_frame_group(
            root / "other", FrameGroup("b", {"rgb": np.zeros((4, 5, 3), np.uint8)}, None)
        )
        (root / "rgb" / "b.png").write_bytes((root / "other" / "rgb" / "b.png").read_bytes())
        return "sizes differ"
    if how == "labels out of range":
        bad = np.asarray(LABELS["b"], dtype=np.uint8)
        bad[0, 0] = 7
        write_frame_group(
            root / "other", FrameGroup("b", {"rgb": np.zeros((4, 4, 3), np.uint8)}, bad)
        )
        (root / "labels" / "b.png").write_bytes((root / "other" / "labels" / "b.png").read_bytes())
        return r"labels/b\.png.*7"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["missing modality file", "unreadable image", "sizes differ", "labels out of range"]
)
def test_bad_input_is_a_data_error_naming_the_file(tmp_path: Path, how: str) -> None:
    root = _write_frames(tmp_path / "data")
    match = _break(root, how)
    with pytest.raises(DataError, match=match):
        split = "test" if how == "missing modality file" else "all"
        data = open_dataset("folder", root, split=split)
        evaluate_split(ColourSegmenter(), data, protocol="full", progress=False)


def test_unlabelled_frames_are_refused_by_name(tmp_path: Path) -> None:
    write_frame_group(tmp_path, FrameGroup("x", {"rgb": np.zeros((4, 4, 3), np.uint8)}, None))
    data = open_dataset("folder", tmp_path, split="all", modalities=["rgb"])
    segmenter = ColourSegmenter(modalities=("rgb",))
    with pytest.raises(DataError, match="frame 'x' has no labels"):
        evaluate_split(segmenter, data, protocol="full", progress=False)


def _report(frames: Any, *, selection_split: str = "val") -> EvaluationReport:
    segmenter = ColourSegmenter(selection_split=selection_split)
    return evaluate_split(segmenter, frames, protocol="full", keep_frames=1, progress=False)


def test_write_report_writes_metrics_markdown_confusion_and_overlays(
    frames: Any, tmp_path: Path
) -> None:
    report = _report(frames)
    written = write_report(report, tmp_path / "out")
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in written)
    assert names == [
        "confusion.png",
        "metrics.json",
        "overlays/best_1_a.png",
        "overlays/worst_1_b.png",
        "report.md",
    ]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(report.scores.miou)
    assert metrics["per_class_iou"] == pytest.approx(
        {"floor": 100 * 11 / 12, "wall": 100 * 14 / 15, "box": 100 * 4 / 6}
    )
    assert metrics["cluster_to_class"] == {
        "cluster_0": "wall",
        "cluster_1": "floor",
        "cluster_2": "box",
    }
    assert (metrics["split"], metrics["protocol"], metrics["n_frames"]) == ("all", "full", 2)
    assert metrics["selection"]["split"] == "val"
    assert metrics["selection"]["selected_on_test"] is False
    assert "SELECTED ON TEST" not in (tmp_path / "out" / "report.md").read_text()
    assert [f["stem"] for f in metrics["worst_frames"]] == ["b"]
    overlay = read_image(tmp_path / "out" / "overlays" / "best_1_a.png")
    assert overlay.shape[1] > overlay.shape[0]  # three panels side by side


def test_selection_on_test_is_flagged_in_every_output(frames: Any, tmp_path: Path) -> None:
    report = _report(frames, selection_split="test")
    write_report(report, tmp_path, selection_note="picked by hand")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["selection"]["selected_on_test"] is True
    assert metrics["selection"]["note"] == "SELECTED ON TEST: picked by hand"
    assert "SELECTED ON TEST" in (tmp_path / "report.md").read_text()
    assert "SELECTED ON TEST" in format_report(report)


def test_per_class_iou_of_an_absent_class_is_null(tmp_path: Path) -> None:
    # clusters 0 and 1 only, labels 0 and 1 only: class "box" has neither ground truth nor a
    # predicting cluster, so its IoU is undefined and left out of the mean.
    halves = {"c": [[0, 0, 1, 1]] * 4}
    data = open_dataset("folder", _write_frames(tmp_path / "d", halves, halves), split="all")
    report = evaluate_split(ColourSegmenter(), data, protocol="full", progress=False)
    assert report.scores.miou == pytest.approx(100.0)
    write_report(report, tmp_path / "out")
    per_class = json.loads((tmp_path / "out" / "metrics.json").read_text())["per_class_iou"]
    assert per_class == {"floor": 100.0, "wall": 100.0, "box": None}
    assert "| box | n/a |" in (tmp_path / "out" / "report.md").read_text()


# --- end to end: a trained bundle through the unim2_eval CLI --------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    base = tmp_path_factory.mktemp("eval-e2e")
    root = write_tiny_dataset(base / "data")
    config_path = write_tiny_config(base / "cfg.yaml", root, base / "run", base / "cache")
    result = Trainer(tiny_config(root, base / "run", base / "cache"), progress=False).run()
    return config_path, result.bundle_path, result.metrics


def test_cli_reproduces_the_trainers_validation_and_test_scores(
    trained: tuple[Path, Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, bundle, metrics = trained
    for split, expected in (("val", metrics["selection"]), ("test", metrics["test"])):
        out = tmp_path / split
        args = ["--config", str(config_path), "--checkpoint", str(bundle), "--out", str(out)]
        assert main([*args, "--split", split, "--no-progress"]) == 0
        written = json.loads((out / "metrics.json").read_text())
        # the trainer scores fp16-cached features, the CLI runs the backbone in fp32
        assert written["miou"] == pytest.approx(expected["miou"], abs=0.5)
        assert written["accuracy"] == pytest.approx(expected["accuracy"], abs=0.5)
        assert (written["split"], written["protocol"], written["n_frames"]) == (split, "paper", 2)
        assert written["selection"]["split"] == "val"
        assert (out / "confusion.png").is_file()
        assert len(list((out / "overlays").glob("*.png"))) == 2
    printed = capsys.readouterr().out
    assert "Evaluation on split 'test'" in printed and "selected on 'val'" in printed


def test_cli_full_protocol_scores_at_label_resolution(
    trained: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    config_path, bundle, _ = trained
    args = ["--config", str(config_path), "--checkpoint", str(bundle), "--no-progress"]
    assert main([*args, "--protocol", "full", "--frames", "1", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert (written["split"], written["protocol"], written["crop_size"]) == ("test", "full", None)
    overlay = read_image(next((tmp_path / "overlays").glob("best_1_*.png")))
    assert overlay.shape[0] > 0
    assert 0.0 <= written["miou"] <= 100.0


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--checkpoint", "missing.unim2.pt"], "missing.unim2.pt"),
        (
            [
                "--checkpoint",
                "BUNDLE",
                "--set",
                "modalities={rgb: {kind: rgb}}",
                "--set",
                "loss.modalities={rgb: {shift: {self: 1, knn: 1, rand: 1}, "
                "weight: {self: 1, knn: 1, rand: 1}, modality_weight: 1}}",
            ],
            "needs modalities \\['depth'\\]",
        ),
        (["--checkpoint", "BUNDLE", "--split", "nosuchsplit"], "nosuchsplit"),
    ],
)
def test_cli_errors_print_error_and_exit_1(
    trained: tuple[Path, Path, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    match: str,
) -> None:
    config_path, bundle, _ = trained
    extra = [str(bundle) if item == "BUNDLE" else item for item in extra]
    assert main(["--config", str(config_path), "--no-progress", *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ")
    assert re.search(match, err)
