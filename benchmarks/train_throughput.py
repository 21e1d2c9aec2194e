"""Training cost: cached features vs recomputing the backbone, and a default-length run's wall time.

    python -m benchmarks.train_throughput [--frames 795] [--steps 3300] [--measure-steps 20]
        [--backbone dinov3_vits16] [--device cpu] [--workdir runs/bench-train]

Builds an NYU-sized generated dataset (``--frames`` 640x480 synthetic RGB-D frames with labels;
NYU-Depth-v2's training split has 795), a backbone of the chosen architecture with random
weights in the real layout (DINOv3 weights are licence-gated), and the NYU reference config.
Then it reports:

1. feature extraction wall time (five-crop views of every training frame + the held-out split);
2. training throughput with cached features vs the same steps recomputing the backbone for every
   anchor and neighbour view (the ratio is the speed-up the cache buys);
3. the wall time of a ``--steps`` run: measured in full with ``--full-run``, else extrapolated
   from ``--measure-steps`` steps (said so in the output).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from benchmarks.common import machine, write_random_backbone
from unim2_core.data.datasets.base import FrameGroup
from unim2_core.data.datasets.folder import write_frame_group
from unim2_core.data.preprocess import (
    centre_crop_box,
    encode_group,
    shorter_side_size,
    to_backbone_batch,
    view_boxes,
)
from unim2_core.training.config import parse_config, read_yaml
from unim2_core.training.trainer import Trainer
from unim2_demo.synthetic_scenes import CLASS_NAMES, PALETTE, generate_sequence

REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, frames: int) -> None:
    """Write ``frames`` 640x480 labelled RGB-D frames once (kept between runs)."""
    done = root / ".complete"
    if done.exists() and done.read_text() == str(frames):
        return
    for index, frame in enumerate(generate_sequence(frames, width=640, height=480, seed=0)):
        arrays: dict[str, np.ndarray] = {"rgb": frame.rgb, "depth": frame.depth_mm}
        write_frame_group(root, FrameGroup(f"{index:05d}", arrays, frame.labels))
    names = {"class_names": list(CLASS_NAMES), "palette": PALETTE.tolist()}
    (root / "dataset.yaml").write_text(yaml.safe_dump(names))
    done.write_text(str(frames))


class RecomputingTrainer(Trainer):
    """The same training step, but every view's features come from the backbone each time."""

    def batch_features(self, views: np.ndarray) -> Tensor:
        crops = self.config.crops
        pixels = []
        for view in views.tolist():
            frame, crop = divmod(view, self.data.train.views_per_frame)
            group = self.splits.train[frame]
            encoded = encode_group(group.arrays, self.config.modalities)  # [M, H, W, 3]
            top, left, h, w = view_boxes(*encoded.shape[1:3], five_crop=crops.five_crop)[crop]
            size = shorter_side_size(h, w, crops.crop_size)
            batch = to_backbone_batch(
                encoded[:, top : top + h, left : left + w], size, device=self.device
            )
            y0, x0 = centre_crop_box(size[0], size[1], crops.crop_size)
            pixels.append(batch[:, :, y0 : y0 + crops.crop_size, x0 : x0 + crops.crop_size])
        stacked = torch.stack(pixels)  # [B, M, 3, S, S]
        features: Tensor = self.backbone(stacked.flatten(0, 1))  # one batch: [B * M, C, h, w]
        return features.reshape(*stacked.shape[:2], *features.shape[1:]).float()


def time_steps(trainer: Trainer, steps: int) -> float:
    """Seconds per training step, over ``steps`` steps after one warm-up step."""
    trainer._train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer._train_step()
        trainer.step += 1
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=795)
    parser.add_argument("--steps", type=int, default=3300)
    parser.add_argument("--measure-steps", type=int, default=20)
    parser.add_argument("--recompute-steps", type=int, default=2)
    parser.add_argument("--backbone", default="dinov3_vits16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-train")
    parser.add_argument("--full-run", action="store_true", help="train all --steps steps")
    args = parser.parse_args()

    work = args.workdir
    data = work / "data"
    start = time.perf_counter()
    make_dataset(data, args.frames)
    generate_s = time.perf_counter() - start
    weights = work / f"{args.backbone}-random.safetensors"
    if not weights.exists():
        write_random_backbone(args.backbone, weights)
    raw = read_yaml(REPO / "config" / "train_nyu.yaml")
    raw["dataset"] = {"kind": "folder", "root": str(data), "val_split": None, "test_split": None}
    raw["modalities"]["depth"] = {"kind": "depth", "low": 0.3, "high": 10.0}
    raw["backbone"] = {"name": args.backbone, "weights": str(weights), "feature_layer": "last"}
    raw["train"].update({"steps": args.steps, "device": args.device})
    raw["output_dir"] = str(work / "run")
    raw["cache_dir"] = str(work / "cache")
    config = parse_config(raw)

    start = time.perf_counter()
    trainer = Trainer(config, restart=True)
    extract_s = time.perf_counter() - start
    print(f"machine: {machine()}")
    print(f"dataset: {args.frames} frames 640x480 RGB-D (generated in {generate_s:.0f} s if new)")
    print(f"backbone: {args.backbone}, random weights, device {trainer.device}")
    print(f"feature extraction (train views + held-out split, or cache hit): {extract_s:8.1f} s")
    print(f"  train views cached: {trainer.data.train.n_views}")

    cached = time_steps(trainer, args.measure_steps)
    recomputing = RecomputingTrainer(config, restart=True, progress=False)
    recompute = time_steps(recomputing, args.recompute_steps)
    print(f"training step, cached features:     {1000 * cached:9.1f} ms")
    print(f"training step, recomputed backbone: {1000 * recompute:9.1f} ms")
    print(f"speed-up of the cache: {recompute / cached:6.1f}x   (target >= 10x)")
    if args.full_run:
        trainer = Trainer(config, restart=True)
        start = time.perf_counter()
        trainer.run()
        train_s = time.perf_counter() - start
        print(f"training {args.steps} steps (measured, incl. validation): {train_s / 60:8.1f} min")
    else:
        train_s = cached * args.steps
        note = f"extrapolated from {args.measure_steps}"
        print(f"training {args.steps} steps ({note}): {train_s / 60:8.1f} min")
    print(
        f"default-length run: extraction {extract_s / 60:.1f} min + training {train_s / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
