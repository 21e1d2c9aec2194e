"""The replay's documents: ``replay.json`` (every number) and ``report.md`` (the same for people).

A replay's output folder (``unim2_core.evaluation.replay_writer``) holds, besides these two:

- ``labels/<stem>.png``: the label ids as published by the node (8 bit, 16 bit beyond 255 ids);
- ``overlays/<stem>.png``: the ids in their palette colours blended over the RGB frame;
- ``overlays.mp4``: the overlays as a video (``unim2_core.evaluation.replay_video``);
- ``confusion.png``: the row-normalised confusion matrix, when there is ground truth, and
  ``comparisons/<best|worst>_<rank>_<stem>.png``: RGB | prediction through the sequence's
  matching | ground truth, for the best and worst frames.

Frames are named ``<index>_<rgb stamp ns>`` (index: position among the bag's synchronised
groups, six digits), as ``unim2_import_bag`` names them, so the labels of a replay can serve as a
label folder and an imported dataset's labels can be matched to a replay's frames.

The report shows the best and worst frames by mIoU under the sequence's matching when there are
scores (``unim2_core.evaluation.replay_scores``), else a few evenly spaced frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from unim2_core.evaluation.evaluate import FrameScore
from unim2_core.evaluation.replay_scores import LatencyStats, SequenceScores, finite_or_none
from unim2_core.runtime.segmenter import LabelInfo

__all__ = [
    "COMPARISONS_DIR",
    "CONFUSION_FILE",
    "JSON_FILE",
    "LABELS_DIR",
    "OVERLAYS_DIR",
    "REPORT_FILE",
    "VIDEO_FILE",
    "FrameRecord",
    "ReplayMode",
    "ReplaySetup",
    "ReplaySummary",
    "format_report",
    "frame_stem",
    "replay_dict",
    "shown_frames",
]

REPORT_FILE = "report.md"
JSON_FILE = "replay.json"
LABELS_DIR = "labels"
OVERLAYS_DIR = "overlays"
VIDEO_FILE = "overlays.mp4"
CONFUSION_FILE = "confusion.png"
COMPARISONS_DIR = "comparisons"

REPORT_FRAMES = 2
"""Best and worst frames linked in the report when there are scores."""
SPACED_FRAMES = 4
"""Evenly spaced frames linked in the report without scores."""
_LISTED_SKIPS = 10

ReplayMode = Literal["offline", "live"]


def frame_stem(index: int, stamp_ns: int) -> str:
    """The name of a replayed frame: ``<index, 6 digits>_<rgb stamp ns>`` (as the bag import)."""
    return f"{index:06d}_{stamp_ns}"


class ReplaySetup(NamedTuple):
    """What was replayed, as the report states it.

    Attributes:
        mode: ``offline`` (Segmenter in this process) or ``live`` (through the running node).
        bag: The input bag.
        topics: Modality -> Image topic read from the bag.
        model: One line describing the model (or node) that produced the labels.
        latency: One line saying what the latency measures.
        ground_truth: One line naming the ground truth (label topic or folder), or None.
        settings: Other settings worth recording (slop, queue size, rate, ...).
    """

    mode: ReplayMode
    bag: Path
    topics: Mapping[str, str]
    model: str
    latency: str
    ground_truth: str | None
    settings: Mapping[str, Any]


class FrameRecord(NamedTuple):
    """One frame of a replay.

    Attributes:
        position: Index among the bag's synchronised groups.
        stem: File name stem of its outputs.
        stamp_ns: RGB header stamp.
        has_output: Whether a label map was obtained (always, offline).
        has_truth: Whether ground truth was given for it.
        latency_ms: Its latency, None without output.
    """

    position: int
    stem: str
    stamp_ns: int
    has_output: bool
    has_truth: bool
    latency_ms: float | None


class ReplaySummary(NamedTuple):
    """Everything ``replay.json`` and ``report.md`` are made of."""

    setup: ReplaySetup
    frames: tuple[FrameRecord, ...]
    latency: LatencyStats
    sequence: SequenceScores | None
    labels_table: tuple[LabelInfo, ...]
    ignore_index: int
    skipped: tuple[tuple[str, int, str], ...]
    not_in_group: dict[str, int]
    counts: dict[str, int]
    video: Path | None
    fps: float
    output_bag: Path | None
    shown: tuple[tuple[str, FrameRecord, FrameScore | None], ...]
    comparisons: dict[int, Path]


def shown_frames(
    frames: Sequence[FrameRecord], sequence: SequenceScores | None
) -> tuple[tuple[str, FrameRecord, FrameScore | None], ...]:
    """The frames the report shows: best and worst by mIoU with scores, else evenly spaced."""
    by_position = {frame.position: frame for frame in frames}
    if sequence is not None:
        ranked = sorted(
            (f for f in sequence.frame_scores if not math.isnan(f.miou)),
            key=lambda f: (f.miou, f.accuracy, -f.position),
        )
        n_best = min(REPORT_FRAMES, (len(ranked) + 1) // 2)  # best and worst never share a frame
        n_worst = min(REPORT_FRAMES, len(ranked) - n_best)
        best = [(f"best #{i + 1}", f) for i, f in enumerate(ranked[::-1][:n_best])]
        worst = [(f"worst #{i + 1}", f) for i, f in enumerate(ranked[:n_worst])]
        return tuple((title, by_position[f.position], f) for title, f in best + worst)
    with_output = [frame for frame in frames if frame.has_output]
    if not with_output:
        return ()
    count = min(SPACED_FRAMES, len(with_output))
    picks = sorted({round(i * (len(with_output) - 1) / max(count - 1, 1)) for i in range(count)})
    return tuple((f"frame {with_output[i].position}", with_output[i], None) for i in picks)


def _json_value(value: Any) -> Any:
    """A setting in standard JSON: an infinite or NaN float (e.g. rate ``inf``) becomes text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _relative(path: Path | None, out_dir: Path) -> str | None:
    if path is None:
        return None
    try:
        return path.relative_to(out_dir).as_posix()
    except ValueError:
        return str(path)


def _scores_dict(summary: ReplaySummary) -> dict[str, Any] | None:
    sequence = summary.sequence
    if sequence is None:
        return None
    scores = sequence.scores
    names = sequence.class_names
    return {
        "miou": scores.miou,
        "accuracy": scores.accuracy,
        "per_class_iou": {
            name: finite_or_none(value)
            for name, value in zip(names, scores.per_class_iou.tolist(), strict=True)
        },
        "label_to_class": {
            label.name: (names[c] if c >= 0 else None)
            for label, c in zip(summary.labels_table, scores.mapping.tolist(), strict=True)
        },
        "n_classes": len(names),
        "ignore_index": summary.ignore_index,
        "scored_frames": len(sequence.frame_scores),
        "labelled_pixels": int(sequence.confusion.sum()),
        "confusion": CONFUSION_FILE,
    }


def replay_dict(summary: ReplaySummary, out_dir: Path) -> dict[str, Any]:
    frames = summary.frames
    frame_scores = (
        {f.position: f for f in summary.sequence.frame_scores} if summary.sequence else {}
    )
    per_frame = []
    for frame in frames:
        entry: dict[str, Any] = {
            "index": frame.position,
            "stem": frame.stem,
            "stamp_ns": frame.stamp_ns,
            "output": frame.has_output,
            "ground_truth": frame.has_truth,
            "latency_ms": frame.latency_ms,
        }
        scored = frame_scores.get(frame.position)
        if scored is not None:
            entry["miou"] = finite_or_none(scored.miou)
            entry["accuracy"] = finite_or_none(scored.accuracy)
        per_frame.append(entry)
    setup = summary.setup
    return {
        "mode": setup.mode,
        "bag": str(setup.bag),
        "topics": dict(setup.topics),
        "model": setup.model,
        "ground_truth": setup.ground_truth,
        "settings": {key: _json_value(value) for key, value in setup.settings.items()},
        "frames": len(frames),
        "frames_with_output": sum(f.has_output for f in frames),
        "missing_outputs": sum(not f.has_output for f in frames),
        "frames_with_ground_truth": sum(f.has_truth for f in frames),
        "skipped_messages": [
            {"topic": topic, "timestamp_ns": stamp, "reason": reason}
            for topic, stamp, reason in summary.skipped
        ],
        "not_in_group": summary.not_in_group,
        "counts": summary.counts,
        "latency": {"measures": setup.latency, **summary.latency.to_dict()},
        "scores": _scores_dict(summary),
        "shown_frames": [
            {
                "title": title,
                "stem": frame.stem,
                "overlay": f"{OVERLAYS_DIR}/{frame.stem}.png",
                "comparison": _relative(summary.comparisons.get(frame.position), out_dir),
            }
            for title, frame, _ in summary.shown
        ],
        "video": _relative(summary.video, out_dir),
        "video_fps": summary.fps if summary.video is not None else None,
        "output_bag": _relative(summary.output_bag, out_dir),
        "per_frame": per_frame,
    }


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def format_report(summary: ReplaySummary, out_dir: Path) -> str:
    setup = summary.setup
    frames = summary.frames
    missing = sum(not f.has_output for f in frames)
    lines = [
        f"# Replay of {setup.bag.name} ({setup.mode})",
        "",
        f"- bag: `{setup.bag}`",
        "- topics: " + ", ".join(f"{m} `{t}`" for m, t in setup.topics.items()),
        f"- model: {setup.model}",
        f"- ground truth: {setup.ground_truth or 'none'}",
    ]
    if setup.settings:
        lines.append("- settings: " + ", ".join(f"{k} {v}" for k, v in setup.settings.items()))
    lines += [
        "",
        "## Counts",
        "",
        "| | frames / messages |",
        "|---|---|",
        f"| synchronised frames | {len(frames)} |",
        f"| frames with output | {len(frames) - missing} |",
        f"| missing outputs | {missing} |",
        f"| frames with ground truth | {sum(f.has_truth for f in frames)} |",
        f"| undecodable messages skipped | {len(summary.skipped)} |",
    ]
    lines += [f"| {name} | {value} |" for name, value in summary.counts.items()]
    lines += [
        f"| `{topic}` messages in no group | {count} |"
        for topic, count in summary.not_in_group.items()
    ]
    if summary.skipped:
        lines += ["", "Skipped messages:", ""]
        lines += [
            f"- `{topic}` at {stamp} ns: {reason}"
            for topic, stamp, reason in summary.skipped[:_LISTED_SKIPS]
        ]
        if len(summary.skipped) > _LISTED_SKIPS:
            lines.append(f"- ... and {len(summary.skipped) - _LISTED_SKIPS} more")
    lines += _score_lines(summary)
    latency = summary.latency
    lines += [
        "",
        "## Latency",
        "",
        f"{setup.latency}.",
        "",
        "| frames | mean ms | median ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
        f"| {latency.n} | {_ms(latency.mean_ms)} | {_ms(latency.median_ms)} | "
        f"{_ms(latency.p90_ms)} | {_ms(latency.p99_ms)} | {_ms(latency.max_ms)} |",
    ]
    lines += ["", "## Frames", ""]
    if summary.video is not None:
        lines += [
            f"Video of all overlays: [{_relative(summary.video, out_dir)}]"
            f"({_relative(summary.video, out_dir)}) ({summary.fps:.2f} fps).",
            "",
        ]
    for title, frame, frame_score in summary.shown:
        caption = f"{title}: {frame.stem}"
        if frame_score is not None:
            caption += f", mIoU {frame_score.miou:.1f}, Acc {frame_score.accuracy:.1f}"
        link = f"{OVERLAYS_DIR}/{frame.stem}.png"
        lines += [
            f"**{caption}** ([labels]({LABELS_DIR}/{frame.stem}.png))",
            "",
            f"![{title}]({link})",
            "",
        ]
        comparison = _relative(summary.comparisons.get(frame.position), out_dir)
        if comparison is not None:
            lines += [f"![{title}: RGB, matched prediction, ground truth]({comparison})", ""]
    if summary.output_bag is not None:
        lines += [f"Node outputs recorded in `{_relative(summary.output_bag, out_dir)}`.", ""]
    lines.append(f"All numbers: [{JSON_FILE}]({JSON_FILE}).")
    return "\n".join(lines) + "\n"


def _score_lines(summary: ReplaySummary) -> list[str]:
    sequence = summary.sequence
    lines = ["", "## Scores", ""]
    if sequence is None:
        reason = "no ground truth" if summary.setup.ground_truth is None else "no labelled pixel"
        return [*lines, f"Not scored: {reason}."]
    scores = sequence.scores
    lines += [
        f"**mIoU {scores.miou:.2f}**, pixel accuracy {scores.accuracy:.2f} over "
        f"{len(sequence.frame_scores)} frames (Hungarian-matched, one confusion matrix over "
        f"every frame with output and ground truth; ignore index {summary.ignore_index}).",
        "",
        "| class | IoU |",
        "|---|---|",
    ]
    for name, value in zip(sequence.class_names, scores.per_class_iou.tolist(), strict=True):
        lines.append(f"| {name} | {'n/a' if math.isnan(value) else f'{value:.2f}'} |")
    lines += ["", f"![confusion matrix]({CONFUSION_FILE})"]
    return lines
