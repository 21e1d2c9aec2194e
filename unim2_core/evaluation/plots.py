"""PNG plots of a training run and of an evaluation: loss terms, validation scores, confusion
matrix, prediction overlays.

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure`` rendered
by the Agg canvas), never through ``pyplot``, so plotting needs no display, changes no global
backend and is safe from worker threads. Files are written through a temporary file and a
rename, so a reader never sees half a PNG.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from unim2_core.atomic import atomic_write_bytes
from unim2_core.errors import TrainingError
from unim2_core.evaluation.metrics import IGNORE_INDEX

LOSS_PLOT = "loss.png"
VAL_PLOT = "val_miou.png"
METRICS_LOG = "metrics.jsonl"
UNMATCHED_COLOR = (128, 128, 128)
"""Colour of pixels whose cluster was matched to no class."""
IGNORE_COLOR = (0, 0, 0)
"""Colour of ground-truth pixels without a label."""
_ANNOTATE_MAX_CLASSES = 20
_PROBE_KEYS = ("cluster_loss", "linear_loss")


def save_figure(figure: Figure, path: Path, *, dpi: int = 100) -> Path:
    """Render ``figure`` with the Agg canvas and write it as PNG atomically; return ``path``."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_metrics_log(path: Path) -> list[dict[str, Any]]:
    """Records of a run's ``metrics.jsonl``, in file order.

    Raises:
        TrainingError: the file is missing, unreadable or holds a line that is not a JSON
            object (the message names the file and line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TrainingError(f"cannot read metrics log {str(path)!r}: {err.strerror}") from err
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TrainingError(f"{str(path)!r} line {number} is not JSON: {err.msg}") from err
        if not isinstance(record, dict):
            raise TrainingError(f"{str(path)!r} line {number} is not a JSON object")
        records.append(record)
    return records


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for record in records:
        if key in record:
            steps.append(int(record["step"]))
            values.append(float(record[key]))
    return steps, values


def write_training_plots(run_dir: str | Path) -> list[Path]:
    """Plot a run's ``metrics.jsonl`` into ``loss.png`` and (with validation) ``val_miou.png``.

    ``loss.png`` shows the total CMCS loss and every ``loss/<modality>/<pair>`` term against
    the step (left), and the probe losses (right). ``val_miou.png`` shows validation mIoU and
    pixel accuracy (and the linear probe's, when logged), titled with the selection split.

    Args:
        run_dir: A training output folder holding ``metrics.jsonl``.

    Returns:
        The written files.

    Raises:
        TrainingError: the log is missing or malformed, or holds no training record.
    """
    run_dir = Path(run_dir)
    log_path = run_dir / METRICS_LOG
    records = read_metrics_log(log_path)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    if not train:
        raise TrainingError(f"{str(log_path)!r} holds no training record to plot")
    written = [save_figure(loss_figure(train), run_dir / LOSS_PLOT)]
    if any("miou" in record for record in val):
        written.append(save_figure(validation_figure(val), run_dir / VAL_PLOT))
    return written


def loss_figure(train: Sequence[dict[str, Any]]) -> Figure:
    """Total loss and ``loss/<modality>/<pair>`` terms (left), probe losses (right) vs step."""
    terms = sorted({key for record in train for key in record if key.startswith("loss/")})
    probes = [key for key in _PROBE_KEYS if any(key in record for record in train)]
    figure = Figure(figsize=(12, 4.5))
    left, right = figure.subplots(1, 2)
    left.plot(*_series(train, "loss"), color="black", linewidth=2, label="total")
    for key in terms:
        left.plot(*_series(train, key), linewidth=1, label=key.removeprefix("loss/"))
    left.set_title("CMCS loss (weighted total; unweighted terms)")
    left.set_xlabel("step")
    left.legend(fontsize="small", ncol=2)
    for key in probes:
        right.plot(*_series(train, key), label=key)
    right.set_title("probe losses")
    right.set_xlabel("step")
    if probes:
        right.legend(fontsize="small")
    for axes in (left, right):
        axes.grid(alpha=0.3)
    return figure


def validation_figure(val: Sequence[dict[str, Any]]) -> Figure:
    """Validation mIoU and accuracy (and the linear probe's) vs step, titled with the split."""
    splits = sorted({str(record.get("split")) for record in val})
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for key, label, style in (
        ("miou", "mIoU", "-o"),
        ("accuracy", "pixel accuracy", "-s"),
        ("linear_probe_miou", "linear probe mIoU", "--"),
        ("linear_probe_accuracy", "linear probe accuracy", "--"),
    ):
        steps, values = _series(val, key)
        if steps:
            axes.plot(steps, values, style, label=label)
    axes.set_title(f"validation on {', '.join(splits)} (Hungarian-matched)")
    axes.set_xlabel("step")
    axes.set_ylabel("%")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def plot_confusion(
    matched: np.ndarray,
    unmatched: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    *,
    title: str,
) -> Path:
    """Write :func:`confusion_figure` as a PNG; return ``path``."""
    return save_figure(confusion_figure(matched, unmatched, class_names, title=title), path)


def confusion_figure(
    matched: np.ndarray,
    unmatched: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str,
) -> Figure:
    """Confusion matrix: rows ground truth (normalised to 1), columns matched prediction.

    Args:
        matched: [n_classes, n_classes] counts, entry (i, j) = pixels predicted as class i
            (through the Hungarian mapping) whose ground truth is j
            (``SegmentationScores.confusion``).
        unmatched: [n_classes] labelled pixels per ground-truth class that fell into clusters
            matched to no class; shown as an extra column when any exist.
        class_names: Name of each class.
        title: Figure title (split, protocol, selection note).

    Raises:
        ValueError: the shapes do not fit the class names.
    """
    n_classes = len(class_names)
    if matched.shape != (n_classes, n_classes) or unmatched.shape != (n_classes,):
        raise ValueError(
            f"confusion {matched.shape} / unmatched {unmatched.shape} do not fit "
            f"{n_classes} class names"
        )
    table = matched.T.astype(np.float64)  # rows: ground truth, columns: prediction
    columns = list(class_names)
    if unmatched.any():
        table = np.concatenate([table, unmatched[:, None].astype(np.float64)], axis=1)
        columns.append("(unmatched)")
    totals = table.sum(axis=1, keepdims=True)
    normalised = np.divide(table, totals, out=np.zeros_like(table), where=totals > 0)
    side = max(5.0, 0.45 * len(columns) + 2.5)
    figure = Figure(figsize=(side + 1.5, side))
    axes = figure.subplots()
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the class's pixels")
    axes.set_xticks(range(len(columns)), columns, rotation=60, ha="right")
    axes.set_yticks(range(n_classes), class_names)
    axes.set_xlabel("prediction (matched cluster)")
    axes.set_ylabel("ground truth")
    axes.set_title(title, fontsize="medium")
    if n_classes <= _ANNOTATE_MAX_CLASSES:
        for row in range(n_classes):
            for column in range(len(columns)):
                value = normalised[row, column]
                if value >= 0.005:
                    axes.text(
                        column,
                        row,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize="x-small",
                        color="white" if value > 0.5 else "black",
                    )
    return figure


def colorize_classes(
    ids: np.ndarray, palette: np.ndarray, *, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Colour an HxW evaluation id map with ``palette`` [n, 3]: ignore pixels black, ids outside
    the palette (unmatched clusters, given as -1) grey. Returns HxWx3 uint8. Unlike
    :func:`unim2_core.runtime.visualize.colorize` (the node's strict version) it accepts such
    ids."""
    ids = np.asarray(ids, dtype=np.int64)
    out = np.empty((*ids.shape, 3), dtype=np.uint8)
    out[:] = UNMATCHED_COLOR
    known = (ids >= 0) & (ids < len(palette))
    out[known] = palette[ids[known]]
    out[ids == ignore_index] = IGNORE_COLOR
    return out


def _unit_rgb(colour: Sequence[int] | np.ndarray) -> tuple[float, float, float]:
    red, green, blue = (int(c) / 255.0 for c in colour)
    return red, green, blue


def plot_overlay(
    rgb: np.ndarray,
    predicted: np.ndarray,
    truth: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray,
    path: Path,
    *,
    title: str,
) -> Path:
    """Write :func:`overlay_figure` as a PNG; return ``path``."""
    figure = overlay_figure(rgb, predicted, truth, class_names, palette, title=title)
    return save_figure(figure, path)


def overlay_figure(
    rgb: np.ndarray,
    predicted: np.ndarray,
    truth: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray,
    *,
    title: str,
) -> Figure:
    """Side by side: the RGB frame | the prediction | the ground truth, with a legend.

    Args:
        rgb: HxWx3 uint8 frame as segmented.
        predicted: HxW class ids (cluster ids already mapped; -1 for unmatched clusters).
        truth: HxW class ids with the ignore index on unlabelled pixels.
        class_names: Name of each class.
        palette: [n_classes, 3] uint8 class colours.
        title: Figure title (stem and the frame's scores).
    """
    height, width = truth.shape
    figure = Figure(figsize=(12.0, 12.0 / 3 * height / width + 1.2))
    panels = figure.subplots(1, 3)
    for axes, image, name in (
        (panels[0], rgb, "RGB"),
        (panels[1], colorize_classes(predicted, palette), "prediction (matched)"),
        (panels[2], colorize_classes(truth, palette), "ground truth"),
    ):
        axes.imshow(image, interpolation="nearest")
        axes.set_title(name, fontsize="medium")
        axes.set_axis_off()
    present = sorted(
        {int(v) for v in np.unique(predicted) if 0 <= v < len(class_names)}
        | {int(v) for v in np.unique(truth) if 0 <= v < len(class_names)}
    )
    handles = [Patch(color=_unit_rgb(palette[i]), label=class_names[i]) for i in present]
    if (predicted < 0).any():
        handles.append(Patch(color=_unit_rgb(UNMATCHED_COLOR), label="(unmatched)"))
    if (truth == IGNORE_INDEX).any():
        handles.append(Patch(color=_unit_rgb(IGNORE_COLOR), label="(no label)"))
    figure.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 6) or 1,
        fontsize="small",
        frameon=False,
    )
    figure.suptitle(title, fontsize="medium")
    figure.subplots_adjust(bottom=0.05 + 0.05 * math.ceil(len(handles) / 6))
    return figure
