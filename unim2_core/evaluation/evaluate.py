"""Evaluation of a trained model on a labelled split, through the Segmenter the node runs.

Protocol (design.md §3): the Segmenter outputs raw cluster ids frame by frame; ONE confusion
matrix is accumulated over the whole split, clusters are matched to classes once with the
Hungarian algorithm, and mIoU, pixel accuracy and per-class IoU are computed from it. Two
protocols: ``paper`` (raw arrays and labels resized with nearest neighbour so the shorter side
is ``crop_size``, then centre-cropped to ``crop_size`` squared; the model processes the crop at
that size) and ``full`` (the frame as recorded, scored at label resolution).

Each frame's own confusion matrix is kept as well, so every frame can be scored under the
split's global mapping; the best and worst frames are segmented once more for their overlays
(that costs 2 k extra frames instead of holding every prediction in memory).

When the checkpoint was selected on the test split, every output says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
from tqdm import tqdm

from unim2_core.atomic import atomic_write_text
from unim2_core.data.datasets import FrameGroup
from unim2_core.data.preprocess import paper_protocol_view
from unim2_core.errors import DataError, EncodingError
from unim2_core.evaluation.metrics import SegmentationScores, apply_mapping, confusion_matrix, score
from unim2_core.evaluation.plots import plot_confusion, plot_overlay
from unim2_core.model.checkpoint import Bundle
from unim2_core.runtime.segmenter import SegmentationResult

EvalProtocol = Literal["paper", "full"]
PROTOCOLS: tuple[EvalProtocol, ...] = ("paper", "full")
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
CONFUSION_FILE = "confusion.png"
OVERLAY_DIR = "overlays"


class FrameSegmenter(Protocol):
    """What evaluation needs of a segmenter (``unim2_core.runtime.segmenter.Segmenter``)."""

    bundle: Bundle

    @property
    def modalities(self) -> tuple[str, ...]: ...

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> SegmentationResult: ...


class Selection(NamedTuple):
    """How the evaluated checkpoint was selected (from the bundle's training metrics).

    Attributes:
        split: Name of the split the checkpoint was selected on, or None (unlabelled training:
            last step).
        step: Training step of the selected heads, when known.
        on_test: True when the checkpoint was selected on the test split.
        note: One human-readable line; starts with ``SELECTED ON TEST`` when ``on_test``.
    """

    split: str | None
    step: int | None
    on_test: bool
    note: str


def describe_selection(bundle: Bundle) -> Selection:
    """Read how ``bundle`` was selected from its training config and metrics."""
    selection = bundle.metrics.get("selection")
    train_section = bundle.training.get("train")
    chosen = train_section.get("selection_split") if isinstance(train_section, dict) else None
    if not isinstance(selection, dict):
        return Selection(None, None, False, "checkpoint holds no selection record")
    split = selection.get("split")
    step = selection.get("step")
    on_test = chosen == "test" or (isinstance(split, str) and "(selected on test)" in split)
    criterion = selection.get("criterion")
    if split is None:
        note = f"no labelled selection split: heads of the last step ({step})"
    elif selection.get("labelled") is False:
        note = (
            f"checkpoint selected on {split!r} at step {step} by the label-free criterion "
            f"{criterion!r} (the split has no labels)"
        )
    else:
        note = f"checkpoint selected on {split!r} at step {step}"
        if on_test:
            note = (
                f"SELECTED ON TEST: {note}; scores on the test split are optimistic and not "
                "comparable to validation-selected results"
            )
    health = bundle.metrics.get("health")
    if bundle.metrics.get("collapsed") is True and isinstance(health, dict):
        note = f"{note}; COLLAPSED at the end of training: {health.get('collapse_reason')}"
    return Selection(split, step, on_test, note)


class FrameScore(NamedTuple):
    """One frame's scores under the split's global cluster -> class mapping."""

    position: int
    stem: str
    miou: float
    accuracy: float


class FrameView(NamedTuple):
    """A frame as segmented, kept for an overlay."""

    stem: str
    rgb: np.ndarray
    predicted: np.ndarray
    truth: np.ndarray
    score: FrameScore


class EvaluationReport(NamedTuple):
    """Scores of one split and what is needed to write its report.

    Attributes:
        scores: Hungarian-matched scores of the split's confusion matrix (percent).
        confusion: [K, n_classes] raw cluster x class counts.
        split: Split name.
        protocol: ``paper`` or ``full``.
        crop_size: Paper-protocol crop size (None for ``full``).
        n_frames: Number of (labelled) frames evaluated.
        class_names: Class names of the dataset.
        palette: [n_classes, 3] uint8 class colours.
        selection: How the checkpoint was selected.
        frame_scores: Every frame's scores under the global mapping, in split order.
        best: The best frames (highest mIoU first), with their images.
        worst: The worst frames (lowest mIoU first), with their images.
        n_unlabelled: Frames of the split skipped because they have no labels.
    """

    scores: SegmentationScores
    confusion: np.ndarray
    split: str
    protocol: EvalProtocol
    crop_size: int | None
    n_frames: int
    class_names: tuple[str, ...]
    palette: np.ndarray
    selection: Selection
    frame_scores: tuple[FrameScore, ...]
    best: tuple[FrameView, ...]
    worst: tuple[FrameView, ...]
    n_unlabelled: int = 0


def score_with_mapping(confusion: np.ndarray, mapping: np.ndarray) -> tuple[float, float]:
    """mIoU and pixel accuracy (percent) of a [K, n_classes] confusion under a fixed mapping.

    Same rules as ``metrics.score`` (pixels of unmatched clusters are false negatives; classes
    with TP + FP + FN = 0 are left out of the mean), but the mapping is given, not matched, so
    a frame is scored as the split-level matching labels it. NaN when nothing is labelled.
    """
    n_classes = confusion.shape[1]
    matched = np.zeros((n_classes, n_classes), dtype=np.int64)
    rows = mapping >= 0
    np.add.at(matched, mapping[rows], confusion[rows])
    tp = np.diag(matched)
    union = matched.sum(axis=1) + confusion.sum(axis=0) - tp
    total = int(confusion.sum())
    if total == 0:
        return math.nan, math.nan
    defined = union > 0
    miou = float(np.mean(100.0 * tp[defined] / union[defined]))
    return miou, 100.0 * float(tp.sum()) / total


def _frame_view(
    group: FrameGroup, modalities: Sequence[str], protocol: EvalProtocol, crop_size: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    missing = [m for m in modalities if m not in group.arrays]
    if missing:
        raise DataError(f"frame {group.stem!r} lacks modality {missing}")
    if group.labels is None:
        raise DataError(f"frame {group.stem!r} has no labels; evaluation needs a labelled split")
    arrays = {m: group.arrays[m] for m in modalities}
    if protocol == "paper":
        arrays, labels = paper_protocol_view(arrays, group.labels, size=crop_size)
        assert labels is not None
        return arrays, labels
    return arrays, group.labels


def _segment(
    segmenter: FrameSegmenter, group: FrameGroup, protocol: EvalProtocol, crop_size: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    arrays, labels = _frame_view(group, segmenter.modalities, protocol, crop_size)
    try:
        predicted = segmenter(arrays).labels
    except EncodingError as err:
        raise DataError(f"frame {group.stem!r}: {err}") from err
    return arrays, labels, predicted


def evaluate_split(
    segmenter: FrameSegmenter,
    dataset: Any,
    *,
    protocol: EvalProtocol,
    crop_size: int = 320,
    split_name: str | None = None,
    keep_frames: int = 3,
    progress: bool = True,
) -> EvaluationReport:
    """Score a trained model on every frame of a labelled split.

    Args:
        segmenter: A ``Segmenter`` built with ``apply_mapping=False`` (raw cluster ids); for
            the paper protocol, with ``shorter_side=crop_size`` so the crop is processed as the
            trainer's validation processes it.
        dataset: A split reader (``open_dataset``) or any indexable of ``FrameGroup`` with
            ``info`` and ``stems``.
        protocol: ``paper`` or ``full``.
        crop_size: Paper protocol crop (and shorter side) size.
        split_name: Name used in the report (default: the reader's ``split``).
        keep_frames: Number k of best and of worst frames kept for overlays.
        progress: Show a progress bar.

    Raises:
        ValueError: unknown protocol, non-positive crop size, or negative ``keep_frames``.
        DataError: a frame is missing, unreadable or inconsistent, no frame is labelled
            (unlabelled frames of a mixed split are skipped and counted), or one holds labels
            outside the class range (the message names the file or frame); or the split is
            empty.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if crop_size < 1 or keep_frames < 0:
        raise ValueError(
            f"crop_size must be >= 1 and keep_frames >= 0, got {crop_size}, {keep_frames}"
        )
    name = split_name or str(getattr(dataset, "split", "?"))
    n_frames = len(dataset)
    if n_frames == 0:
        raise DataError(f"split {name!r} has no frames")
    info = dataset.info
    n_classes = len(info.class_names)
    n_clusters = segmenter.bundle.heads_config.n_clusters
    per_frame = np.zeros((n_frames, n_clusters, n_classes), dtype=np.int64)
    labelled: list[int] = []
    for index in tqdm(range(n_frames), desc=f"eval {name}", disable=not progress):
        group = dataset[index]
        if group.labels is None:
            continue  # a mixed split: only its labelled frames are scored
        labelled.append(index)
        _, labels, predicted = _segment(segmenter, group, protocol, crop_size)
        try:
            per_frame[index] = confusion_matrix(
                predicted,
                labels,
                n_clusters=n_clusters,
                n_classes=n_classes,
                ignore_index=info.ignore_index,
            )
        except DataError as err:
            raise DataError(f"frame {group.stem!r} of split {name!r}: {err}") from err
    if not labelled:
        raise DataError(
            f"frame {dataset.stems[0]!r} has no labels, nor has any other frame of split "
            f"{name!r}; evaluation needs labelled frames"
        )
    confusion = per_frame.sum(axis=0)
    scores = score(confusion)
    frame_scores = tuple(
        FrameScore(i, str(dataset.stems[i]), *score_with_mapping(per_frame[i], scores.mapping))
        for i in labelled
    )
    ranked = sorted(
        (f for f in frame_scores if not math.isnan(f.miou)),
        key=lambda f: (f.miou, f.accuracy, -f.position),
    )
    n_best = min(keep_frames, (len(ranked) + 1) // 2)  # best and worst never share a frame
    n_worst = min(keep_frames, len(ranked) - n_best)
    best = tuple(ranked[::-1][:n_best])
    worst = tuple(ranked[:n_worst])

    def view(frame: FrameScore) -> FrameView:
        arrays, labels, predicted = _segment(
            segmenter, dataset[frame.position], protocol, crop_size
        )
        mapped = apply_mapping(predicted, scores.mapping, unmatched_value=-1)
        return FrameView(frame.stem, arrays["rgb"], mapped, labels, frame)

    return EvaluationReport(
        scores=scores,
        confusion=confusion,
        split=name,
        protocol=protocol,
        crop_size=crop_size if protocol == "paper" else None,
        n_frames=len(labelled),
        n_unlabelled=n_frames - len(labelled),
        class_names=tuple(info.class_names),
        palette=np.asarray(info.palette, dtype=np.uint8),
        selection=describe_selection(segmenter.bundle),
        frame_scores=frame_scores,
        best=tuple(view(f) for f in best),
        worst=tuple(view(f) for f in worst),
    )


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _protocol_text(report: EvaluationReport) -> str:
    if report.protocol == "paper":
        return f"paper (shorter side {report.crop_size} + centre crop {report.crop_size}, nearest)"
    return "full resolution"


def report_dict(report: EvaluationReport, *, class_names: Sequence[str]) -> dict[str, Any]:
    """The plain-type content of ``metrics.json``."""
    mapping = {
        f"cluster_{k}": (class_names[c] if c >= 0 else None)
        for k, c in enumerate(report.scores.mapping.tolist())
    }
    return {
        "split": report.split,
        "protocol": report.protocol,
        "crop_size": report.crop_size,
        "n_frames": report.n_frames,
        "n_unlabelled_frames": report.n_unlabelled,
        "miou": report.scores.miou,
        "accuracy": report.scores.accuracy,
        "per_class_iou": {
            name: _finite(value)
            for name, value in zip(class_names, report.scores.per_class_iou.tolist(), strict=True)
        },
        "selection": {
            "split": report.selection.split,
            "step": report.selection.step,
            "selected_on_test": report.selection.on_test,
            "note": report.selection.note,
        },
        "n_clusters": int(report.confusion.shape[0]),
        "cluster_to_class": mapping,
        "best_frames": [_frame_dict(v.score) for v in report.best],
        "worst_frames": [_frame_dict(v.score) for v in report.worst],
    }


def _frame_dict(frame: FrameScore) -> dict[str, Any]:
    return {"stem": frame.stem, "miou": _finite(frame.miou), "accuracy": _finite(frame.accuracy)}


def format_report(report: EvaluationReport, *, class_names: Sequence[str] | None = None) -> str:
    """Markdown summary: headline scores, the selection note and the per-class IoU table."""
    names = class_names or report.class_names
    lines = [
        f"# Evaluation on split {report.split!r}",
        "",
        f"- protocol: {_protocol_text(report)}",
        f"- frames: {report.n_frames}"
        + (f" labelled ({report.n_unlabelled} unlabelled skipped)" if report.n_unlabelled else ""),
        f"- selection: {report.selection.note}",
        f"- **mIoU {report.scores.miou:.2f}**, pixel accuracy {report.scores.accuracy:.2f} "
        "(Hungarian-matched, one confusion matrix over the split)",
        "",
        "| class | IoU |",
        "|---|---|",
    ]
    for name, value in zip(names, report.scores.per_class_iou.tolist(), strict=True):
        lines.append(f"| {name} | {'n/a' if math.isnan(value) else f'{value:.2f}'} |")
    if report.selection.on_test:
        lines += ["", f"> **{report.selection.note}**"]
    return "\n".join(lines) + "\n"


def write_report(
    report: EvaluationReport,
    out_dir: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    palette: np.ndarray | None = None,
    selection_note: str | None = None,
) -> list[Path]:
    """Write ``metrics.json``, ``report.md``, ``confusion.png`` and the best/worst overlays.

    Args:
        report: Output of :func:`evaluate_split`.
        out_dir: Output folder (created).
        class_names: Class names to print (default: the dataset's).
        palette: [n_classes, 3] uint8 colours of the overlays (default: the dataset's).
        selection_note: Replaces the note derived from the checkpoint (the ``SELECTED ON
            TEST`` flag is kept whatever the note says).

    Returns:
        The written files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = tuple(class_names or report.class_names)
    colours = report.palette if palette is None else np.asarray(palette, dtype=np.uint8)
    if len(names) != report.confusion.shape[1] or colours.shape != (len(names), 3):
        raise ValueError(
            f"{len(names)} class names and palette {colours.shape} do not fit "
            f"{report.confusion.shape[1]} classes"
        )
    if selection_note is not None:
        note = selection_note
        if report.selection.on_test and not note.startswith("SELECTED ON TEST"):
            note = f"SELECTED ON TEST: {note}"
        report = report._replace(selection=report.selection._replace(note=note))
    metrics_path = out / METRICS_FILE
    atomic_write_text(
        metrics_path, json.dumps(report_dict(report, class_names=names), indent=2) + "\n"
    )
    markdown_path = out / REPORT_FILE
    atomic_write_text(markdown_path, format_report(report, class_names=names))
    title = (
        f"{report.split} - {_protocol_text(report)} - mIoU {report.scores.miou:.1f}, "
        f"Acc {report.scores.accuracy:.1f}\n{report.selection.note}"
    )
    written = [
        metrics_path,
        markdown_path,
        plot_confusion(
            report.scores.confusion,
            report.scores.unmatched,
            names,
            out / CONFUSION_FILE,
            title=title,
        ),
    ]
    for kind, views in (("best", report.best), ("worst", report.worst)):
        for rank, frame in enumerate(views, start=1):
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in frame.stem)
            written.append(
                plot_overlay(
                    frame.rgb,
                    frame.predicted,
                    frame.truth,
                    names,
                    colours,
                    out / OVERLAY_DIR / f"{kind}_{rank}_{safe}.png",
                    title=f"{kind} #{rank}: {frame.stem} - mIoU {frame.score.miou:.1f}, "
                    f"Acc {frame.score.accuracy:.1f} ({report.split}, {report.protocol})",
                )
            )
    return written
