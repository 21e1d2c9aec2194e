"""Plots: training curves from metrics.jsonl, confusion matrix, colouring, overlays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unim2_core.data.image_io import read_image
from unim2_core.errors import TrainingError
from unim2_core.evaluation.plots import (
    IGNORE_COLOR,
    UNMATCHED_COLOR,
    colorize_classes,
    confusion_figure,
    loss_figure,
    overlay_figure,
    plot_confusion,
    plot_overlay,
    read_metrics_log,
    validation_figure,
    write_training_plots,
)

TRAIN_RECORDS: list[dict[str, Any]] = [
    {
        "step": step,
        "kind": "train",
        "loss": -0.1 * step,
        "cluster_loss": -0.5,
        "linear_loss": 2.0 / step,
        "loss/rgb/self": -0.01 * step,
        "loss/rgb/knn": 0.02,
        "loss/depth/rand": 0.3,
    }
    for step in (10, 20, 30)
]
VAL_RECORDS: list[dict[str, Any]] = [
    {"kind": "val", "step": 20, "split": "val", "miou": 20.0, "accuracy": 50.0},
    {"kind": "val", "step": 30, "split": "val", "miou": 25.0, "accuracy": 55.0},
]


def _write_log(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_write_training_plots_writes_both_pngs(tmp_path: Path) -> None:
    _write_log(tmp_path / "metrics.jsonl", [*TRAIN_RECORDS, *VAL_RECORDS])
    written = write_training_plots(tmp_path)
    assert written == [tmp_path / "loss.png", tmp_path / "val_miou.png"]
    for path in written:
        image = read_image(path)
        assert image.ndim == 3 and min(image.shape[:2]) > 100


def test_write_training_plots_without_validation_writes_only_the_loss(tmp_path: Path) -> None:
    _write_log(tmp_path / "metrics.jsonl", TRAIN_RECORDS)
    assert write_training_plots(tmp_path) == [tmp_path / "loss.png"]
    assert not (tmp_path / "val_miou.png").exists()


def test_loss_figure_plots_every_term_against_its_steps() -> None:
    figure = loss_figure(TRAIN_RECORDS)
    left, right = figure.axes[:2]
    lines = {line.get_label(): line for line in left.get_lines()}
    assert set(lines) == {"total", "rgb/self", "rgb/knn", "depth/rand"}
    assert np.asarray(lines["total"].get_xdata()).tolist() == [10, 20, 30]
    assert np.asarray(lines["rgb/self"].get_ydata()).tolist() == pytest.approx([-0.1, -0.2, -0.3])
    probes = {line.get_label(): np.asarray(line.get_ydata()).tolist() for line in right.get_lines()}
    assert probes["linear_loss"] == pytest.approx([0.2, 0.1, 2.0 / 30])
    assert probes["cluster_loss"] == pytest.approx([-0.5] * 3)


def test_validation_figure_is_titled_with_the_selection_split() -> None:
    records = [{**r, "split": "train held-out 0.1"} for r in VAL_RECORDS]
    axes = validation_figure(records).axes[0]
    assert "train held-out 0.1" in axes.get_title()
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert np.asarray(lines["mIoU"].get_ydata()).tolist() == [20.0, 25.0]
    assert np.asarray(lines["pixel accuracy"].get_xdata()).tolist() == [20, 30]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read metrics log"),
        ('{"step": 1, "kind": "train", "loss": 1}\nnot json\n', "line 2 is not JSON"),
        ("[1, 2]\n", "line 1 is not a JSON object"),
        ('{"kind": "val", "step": 3, "miou": 1}\n', "holds no training record"),
    ],
)
def test_write_training_plots_rejects_bad_logs(
    tmp_path: Path, content: str | None, match: str
) -> None:
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    with pytest.raises(TrainingError, match=match):
        write_training_plots(tmp_path)


def test_read_metrics_log_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n')
    assert read_metrics_log(path) == [{"step": 1}, {"step": 2}]


def test_confusion_figure_normalises_ground_truth_rows() -> None:
    # matched[i, j]: predicted class i, ground truth j.
    matched = np.array([[6, 1], [2, 3]])
    unmatched = np.array([2, 0])
    figure = confusion_figure(matched, unmatched, ["a", "b"], title="t")
    shown = np.asarray(figure.axes[0].images[0].get_array())
    # ground truth a: 6 as a, 2 as b, 2 unmatched; ground truth b: 1 as a, 3 as b.
    np.testing.assert_allclose(shown, [[0.6, 0.2, 0.2], [0.25, 0.75, 0.0]])
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["a", "b", "(unmatched)"]


def test_confusion_figure_without_unmatched_pixels_has_no_extra_column() -> None:
    figure = confusion_figure(np.eye(3, dtype=int), np.zeros(3, dtype=int), list("abc"), title="")
    assert np.asarray(figure.axes[0].images[0].get_array()).shape == (3, 3)


def test_confusion_figure_rejects_mismatched_class_names() -> None:
    with pytest.raises(ValueError, match="do not fit 3 class names"):
        confusion_figure(np.eye(2, dtype=int), np.zeros(2, dtype=int), list("abc"), title="")


def test_colorize_classes_uses_palette_grey_for_unmatched_and_black_for_ignore() -> None:
    palette = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    out = colorize_classes(np.array([[0, 1], [255, -1]]), palette)
    expected = np.array([[[10, 20, 30], [40, 50, 60]], [IGNORE_COLOR, UNMATCHED_COLOR]])
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8


def test_overlay_figure_shows_frame_prediction_and_truth() -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    predicted = np.full((4, 6), -1)
    truth = np.full((4, 6), 255)
    truth[0, 0] = 1
    palette = np.array([[255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    figure = overlay_figure(rgb, predicted, truth, ["a", "b"], palette, title="frame")
    panels = [axes.images[0].get_array() for axes in figure.axes[:3]]
    np.testing.assert_array_equal(panels[0], rgb)
    np.testing.assert_array_equal(panels[1], colorize_classes(predicted, palette))
    np.testing.assert_array_equal(panels[2], colorize_classes(truth, palette))
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ["b", "(unmatched)", "(no label)"]


def test_plot_functions_write_pngs(tmp_path: Path) -> None:
    palette = np.array([[255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    labels = np.array([[0, 1], [1, 255]])
    overlay = plot_overlay(
        np.zeros((2, 2, 3), np.uint8),
        labels,
        labels,
        ["a", "b"],
        palette,
        tmp_path / "o.png",
        title="x",
    )
    confusion = plot_confusion(
        np.eye(2, dtype=int),
        np.zeros(2, dtype=int),
        ["a", "b"],
        tmp_path / "sub" / "c.png",
        title="x",
    )
    for path in (overlay, confusion):
        assert read_image(path).shape[2] in (3, 4)
