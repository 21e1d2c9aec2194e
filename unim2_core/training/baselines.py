"""Baselines of the comparison table: k-means on raw backbone features and trained variants.

Variants (design.md §3, "Baselines that must exist"):

- ``kmeans_rgb``: spherical k-means on the frozen RGB backbone features (no training at all).
- ``kmeans_rgbx``: the same on RGB+X: every modality's features L2-normalised per pixel, then
  concatenated on channels, so each modality weighs the same in the cosine.
- ``rgb_only``: the heads trained on RGB alone (STEGO-style: no modality nets, no fusion).
- ``naive``: RGB+X with conv fusion but no harmoniser (``model.align: none``).
- ``unim2``: the config as given.

k-means is fitted on pixels sampled from the cached TRAIN features and scored on the cached
selection (and test) features with the post-processing of the trainer's validation (for the
paper protocol the reference's order: features upsampled to label size, normalised, cosine with
the centroids; for ``full`` the node's: cosine similarity upsampled to processing size, argmax,
nearest to label size) and Hungarian matching. Every variant writes its own ``metrics.json``
under the run folder; all share one feature cache, so features are extracted once. The
comparison table is read back from those files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unim2_core.atomic import atomic_write_text
from unim2_core.device import resolve_device
from unim2_core.errors import ConfigError, DataError
from unim2_core.evaluation.cluster_health import ClusterUsage, assess, cluster_usage
from unim2_core.evaluation.metrics import ConfusionMatrix, SegmentationScores
from unim2_core.model.backbone import load_backbone
from unim2_core.runtime.segmenter import (
    ClusterOrder,
    clusters_from_code,
    clusters_from_similarity,
)
from unim2_core.training.config import TrainConfig
from unim2_core.training.feature_cache import FeatureStore
from unim2_core.training.kmeans import KMeansInit, kmeans_features, sample_pixels, spherical_kmeans
from unim2_core.training.trainer import Trainer, eval_cluster_order, open_splits, prepare_caches

Variant = Literal["kmeans_rgb", "kmeans_rgbx", "rgb_only", "naive", "unim2"]
VARIANTS: tuple[Variant, ...] = ("kmeans_rgb", "kmeans_rgbx", "rgb_only", "naive", "unim2")
KMEANS_VARIANTS: tuple[Variant, ...] = ("kmeans_rgb", "kmeans_rgbx")
DESCRIPTIONS: dict[Variant, str] = {
    "kmeans_rgb": "k-means on raw RGB backbone features",
    "kmeans_rgbx": "k-means on raw RGB+X backbone features",
    "rgb_only": "RGB-only heads (STEGO-style)",
    "naive": "naive conv fusion, no harmoniser",
    "unim2": "UniM2",
}
METRICS_FILE = "metrics.json"
COMPARISON_MD = "comparison.md"
COMPARISON_JSON = "comparison.json"
AUX_VARIANTS: tuple[Variant, ...] = ("kmeans_rgbx", "naive", "unim2")


def with_modalities(config: TrainConfig, names: Sequence[str]) -> TrainConfig:
    """The config restricted to ``names`` (in the config's order), loss terms included.

    Raises:
        ConfigError: a name is not a modality of the config, or ``rgb`` is not among them.
    """
    unknown = [n for n in names if n not in config.modalities]
    if unknown:
        raise ConfigError(
            f"modalities {unknown} are not in the config (it has {list(config.modalities)})"
        )
    keep = [n for n in config.modalities if n in names]
    return dataclasses.replace(
        config,
        modalities={n: config.modalities[n] for n in keep},
        loss=dataclasses.replace(
            config.loss, modalities={n: config.loss.modalities[n] for n in keep}
        ),
    )


def variant_config(
    config: TrainConfig, variant: Variant, *, output_dir: Path, cache_dir: Path
) -> TrainConfig:
    """The training config of a variant, writing to ``output_dir`` and caching to ``cache_dir``.

    Raises:
        ConfigError: an unknown variant, or a multi-modal variant on an RGB-only config.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown baseline variant {variant!r}; known: {', '.join(VARIANTS)}")
    if variant in AUX_VARIANTS and len(config.modalities) < 2:
        raise ConfigError(
            f"baseline variant {variant!r} needs an auxiliary modality; the config has only "
            f"{list(config.modalities)}"
        )
    if variant in ("kmeans_rgb", "rgb_only"):
        config = with_modalities(config, ["rgb"])
    elif variant == "naive":
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, align="none"))
    return dataclasses.replace(config, output_dir=str(output_dir), cache_dir=str(cache_dir))


@torch.no_grad()
def evaluate_centroids(
    centroids: Tensor,
    store: FeatureStore,
    *,
    n_classes: int,
    patch_size: int,
    device: torch.device,
    cluster_order: ClusterOrder = "similarity",
    chunk: int = 16,
) -> SegmentationScores:
    """Hungarian-matched scores of nearest-centroid clusters on a cached, labelled split.

    Post-processing is the trainer's validation's for the same ``cluster_order``
    (``clusters_from_similarity`` or, for the paper protocol, ``clusters_from_code`` with the
    concatenated normalised features as the code; one view at a time, as upsampled features
    are large).

    Raises:
        DataError: the split has no labels.
    """
    if store.labels is None:
        raise DataError(f"split cached at {str(store.path)!r} has no labels")
    unit = F.normalize(centroids.to(device), dim=1)  # [K, D]
    label_size = tuple(store.labels.shape[1:])
    height, width = store.feature_size
    proc = (height * patch_size, width * patch_size)
    confusion = ConfusionMatrix(unit.shape[0], n_classes)
    step = 1 if cluster_order == "code" else chunk
    for start in range(0, store.n_views, step):
        idx = np.arange(start, min(start + step, store.n_views))
        feats = kmeans_features(store.load(idx, device))  # [B, D, h, w]
        if cluster_order == "code":
            clusters, _ = clusters_from_code(feats, unit, output_size=label_size)
        else:
            similarity = torch.einsum("bdhw,kd->bkhw", F.normalize(feats, dim=1), unit)
            clusters, _ = clusters_from_similarity(
                similarity, processing_size=proc, output_size=label_size
            )
        confusion.update(clusters.cpu().numpy(), np.asarray(store.labels[idx]))
    return confusion.score()


@torch.no_grad()
def centroid_usage(
    centroids: Tensor, store: FeatureStore, *, device: torch.device, chunk: int = 16
) -> ClusterUsage:
    """Cluster usage of nearest-centroid assignments of a cached split at feature resolution
    (no labels needed)."""
    unit = F.normalize(centroids.to(device), dim=1)  # [K, D]
    counts = torch.zeros(unit.shape[0], dtype=torch.int64)
    for start in range(0, store.n_views, chunk):
        idx = np.arange(start, min(start + chunk, store.n_views))
        feats = kmeans_features(store.load(idx, device))  # [B, D, h, w]
        ids = torch.einsum("bdhw,kd->bkhw", feats, unit).argmax(dim=1).flatten().cpu()
        counts += torch.bincount(ids, minlength=unit.shape[0])
    return cluster_usage(np.repeat(np.arange(unit.shape[0]), counts.numpy()), unit.shape[0])


def _split_record(split: str | None, scores: SegmentationScores) -> dict[str, Any]:
    return {
        "split": split,
        "miou": scores.miou,
        "accuracy": scores.accuracy,
        "per_class_iou": [None if math.isnan(v) else float(v) for v in scores.per_class_iou],
    }


def run_kmeans(
    config: TrainConfig,
    variants: Sequence[Variant],
    *,
    out_dir: Path,
    cache_dir: Path,
    max_pixels: int = 200_000,
    iterations: int = 30,
    init: KMeansInit = "kmeans++",
    progress: bool = True,
) -> dict[Variant, Path]:
    """Fit and score the k-means variants; write ``<out_dir>/<variant>/metrics.json`` each.

    K is ``model.n_clusters``, or the number of classes; seeded by ``train.seed``.

    The selection split may be unlabelled: k-means is then not scored there, but its cluster
    usage is recorded (``health``) as for every variant.

    Raises:
        ConfigError: no ``model.n_clusters`` and no class names to take K from.
    """
    written: dict[Variant, Path] = {}
    if not variants:
        return written
    device = resolve_device(config.train.device)
    backbone = load_backbone(
        config.backbone.name, config.backbone.weights, feature_layer=config.backbone.feature_layer
    ).to(device)
    for variant in variants:
        derived = variant_config(config, variant, output_dir=out_dir / variant, cache_dir=cache_dir)
        splits = open_splits(derived)
        stores = prepare_caches(
            derived, splits, backbone, device=device, cache_root=cache_dir, progress=progress
        )
        n_classes = len(splits.info.class_names)
        n_clusters = config.model.n_clusters or n_classes
        if n_clusters < 1:
            raise ConfigError("model.n_clusters must be set for unlabelled data")
        points = sample_pixels(
            stores.train, max_pixels=max_pixels, seed=config.train.seed, device=device
        )
        centroids = spherical_kmeans(
            points, n_clusters, iterations=iterations, init=init, seed=config.train.seed
        )
        score = functools.partial(
            evaluate_centroids,
            centroids,
            n_classes=n_classes,
            patch_size=backbone.patch_size,
            device=device,
            cluster_order=eval_cluster_order(config),
        )
        metrics: dict[str, Any] = {
            "variant": variant,
            "modalities": list(derived.modalities),
            "n_clusters": n_clusters,
            "train_pixels": int(points.shape[0]),
            "iterations": iterations,
            "init": init,
            "selection": (
                _split_record(splits.selection_name, score(stores.selection))
                if stores.selection.labels is not None
                else {"split": splits.selection_name, "labelled": False}
            ),
            "health": assess(
                centroid_usage(centroids, stores.selection, device=device), None, None
            ).to_record(),
            "collapsed": False,
        }
        if stores.test is not None and stores.test.labels is not None:
            metrics["test"] = _split_record(splits.test_name, score(stores.test))
        path = out_dir / variant / METRICS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
        written[variant] = path
    return written


class ComparisonRow(NamedTuple):
    """One variant's scores as read from its ``metrics.json``.

    Selection scores are None when the selection split is unlabelled; ``selected_by`` names
    how a trained variant's checkpoint was chosen (``miou`` or a label-free criterion; None for
    k-means). ``largest_cluster_share`` and ``collapsed`` are the cluster health on the
    selection split (``unim2_core.evaluation.cluster_health``).
    """

    variant: str
    description: str
    modalities: tuple[str, ...]
    selection_split: str
    selection_miou: float | None
    selection_accuracy: float | None
    test_split: str | None
    test_miou: float | None
    test_accuracy: float | None
    metrics_path: Path
    selected_by: str | None = None
    largest_cluster_share: float | None = None
    collapsed: bool = False


class ComparisonTable(NamedTuple):
    """Rows of the comparison and how model selection was done."""

    rows: tuple[ComparisonRow, ...]
    selection_split: str
    selected_on_test: bool
    protocol: str


def read_row(variant: Variant, path: Path, modalities: Sequence[str]) -> ComparisonRow:
    """A comparison row from a variant's ``metrics.json`` (trainer's or k-means's).

    Raises:
        DataError: the file is missing or unreadable, or holds no selection record.
    """
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read metrics {str(path)!r}: {err}") from err
    selection = metrics.get("selection")
    if not isinstance(selection, dict) or "split" not in selection:
        raise DataError(f"{str(path)!r} holds no selection record")
    test = metrics.get("test")
    health = metrics.get("health")
    share = health.get("largest_cluster_share") if isinstance(health, dict) else None
    labelled = "miou" in selection
    return ComparisonRow(
        variant=variant,
        description=DESCRIPTIONS[variant],
        modalities=tuple(modalities),
        selection_split=str(selection["split"]),
        selection_miou=float(selection["miou"]) if labelled else None,
        selection_accuracy=float(selection["accuracy"]) if labelled else None,
        test_split=None if test is None else str(test["split"]),
        test_miou=None if test is None else float(test["miou"]),
        test_accuracy=None if test is None else float(test["accuracy"]),
        metrics_path=path,
        selected_by=selection.get("criterion"),
        largest_cluster_share=None if share is None else float(share),
        collapsed=bool(metrics.get("collapsed", False)),
    )


def compare(
    config: TrainConfig,
    variants: Sequence[Variant] = VARIANTS,
    out_dir: str | Path | None = None,
    *,
    restart: bool = False,
    progress: bool = True,
    kmeans_pixels: int = 200_000,
) -> ComparisonTable:
    """Run every variant (resuming trained ones) and collect the comparison table.

    Args:
        config: The UniM2 config; the other variants are derived from it.
        variants: Variants to run, in table order.
        out_dir: Run folder (default ``<output_dir>/baselines``); variant ``v`` writes to
            ``<out_dir>/v``. Features are cached once in ``cache_dir`` (default
            ``<out_dir>/cache``).
        restart: Discard the trained variants' previous states.
        progress: Show progress bars.
        kmeans_pixels: Training pixels sampled for k-means.

    Raises:
        ConfigError: an unknown or inapplicable variant, or a repeated one.
        DataError: bad input (naming the file).
    """
    if not variants:
        raise ConfigError("no baseline variant requested")
    repeated = sorted({v for v in variants if list(variants).count(v) > 1})
    if repeated:
        raise ConfigError(f"baseline variants repeated: {repeated}")
    out = Path(out_dir) if out_dir is not None else Path(config.output_dir) / "baselines"
    cache_dir = Path(config.cache_dir) if config.cache_dir else out / "cache"
    derived = {
        v: variant_config(config, v, output_dir=out / v, cache_dir=cache_dir) for v in variants
    }
    paths = run_kmeans(
        config,
        [v for v in variants if v in KMEANS_VARIANTS],
        out_dir=out,
        cache_dir=cache_dir,
        max_pixels=kmeans_pixels,
        progress=progress,
    )
    for variant in variants:
        if variant not in KMEANS_VARIANTS:
            result = Trainer(derived[variant], restart=restart, progress=progress).run()
            paths[variant] = result.output_dir / METRICS_FILE
    rows = tuple(read_row(v, paths[v], tuple(derived[v].modalities)) for v in variants)
    return ComparisonTable(
        rows=rows,
        selection_split=rows[0].selection_split,
        selected_on_test=config.train.selection_split == "test",
        protocol=config.eval.protocol,
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_comparison(table: ComparisonTable) -> str:
    """The comparison as a markdown table (selection split named, flagged when it is test)."""
    selection = table.selection_split
    if table.selected_on_test:
        selection = f"{selection} **(SELECTED ON TEST)**"
    test_split = next((r.test_split for r in table.rows if r.test_split is not None), None)
    lines = [
        f"Model selection on: {selection}. Protocol: {table.protocol}. Scores in percent, "
        "Hungarian-matched.",
        "",
        f"| variant | modalities | {table.selection_split} mIoU | {table.selection_split} Acc"
        + (f" | {test_split} mIoU | {test_split} Acc" if test_split else "")
        + " | selected by | largest cluster | collapsed |",
        "|---|---|---|---" + ("|---|---" if test_split else "") + "|---|---|---|",
    ]
    for row in table.rows:
        cells = [
            f"{row.description} (`{row.variant}`)",
            "+".join(row.modalities),
            _number(row.selection_miou),
            _number(row.selection_accuracy),
        ]
        if test_split:
            cells += [_number(row.test_miou), _number(row.test_accuracy)]
        cells += [
            row.selected_by or "-",
            "-" if row.largest_cluster_share is None else f"{100 * row.largest_cluster_share:.0f}%",
            "**COLLAPSED**" if row.collapsed else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if any(row.collapsed for row in table.rows):
        lines += [
            "",
            "> **Collapsed**: "
            + ", ".join(f"`{row.variant}`" for row in table.rows if row.collapsed)
            + " put most pixels into one cluster (or give nearly identical codes) while k-means "
            "on the same features does not; see `health` in the variant's metrics.json.",
        ]
    if not any(row.selection_miou is not None for row in table.rows):
        lines += [
            "",
            "> The selection split has no labels: trained variants were selected by their "
            "label-free criterion (`selected by`), and no variant is scored on it.",
        ]
    if table.selected_on_test:
        lines += [
            "",
            "> **Selected on test**: trained variants were selected on the test split; their "
            "numbers are optimistic and not comparable to validation-selected results.",
        ]
    return "\n".join(lines) + "\n"


def write_comparison(table: ComparisonTable, out_dir: str | Path) -> list[Path]:
    """Write ``comparison.md`` and ``comparison.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / COMPARISON_MD
    atomic_write_text(markdown, format_comparison(table))
    data = {
        "selection_split": table.selection_split,
        "selected_on_test": table.selected_on_test,
        "protocol": table.protocol,
        "rows": [
            {
                **row._asdict(),
                "modalities": list(row.modalities),
                "metrics_path": str(row.metrics_path),
            }
            for row in table.rows
        ],
    }
    path = out / COMPARISON_JSON
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return [markdown, path]
