"""Spherical k-means on frozen backbone features: the k-means baselines and the reference
partition that collapse detection and label-free model selection compare trained heads with.

Features of every modality are L2-normalised per pixel and concatenated on channels, so each
modality weighs the same in the cosine.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unim2_core.training.feature_cache import FeatureStore

KMeansInit = Literal["kmeans++", "random"]


def kmeans_features(features: Tensor) -> Tensor:
    """Per-modality L2-normalised features concatenated on channels: [B, M, C, h, w] ->
    [B, M*C, h, w]."""
    normalised = F.normalize(features, dim=2)
    return normalised.flatten(1, 2)  # [B, M*C, h, w]


def sample_pixels(
    store: FeatureStore,
    *,
    max_pixels: int,
    seed: int,
    device: torch.device,
    chunk: int = 64,
) -> Tensor:
    """Feature vectors of pixels of a cached split, [N, M*C] (see ``kmeans_features``).

    Every pixel when there are at most ``max_pixels``; otherwise the same number of pixels
    drawn at random (seeded, without repetition) from every view.
    """
    n_views = store.n_views
    height, width = store.feature_size
    per_view = min(height * width, math.ceil(max_pixels / n_views))
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for start in range(0, n_views, chunk):
        idx = np.arange(start, min(start + chunk, n_views))
        feats = kmeans_features(store.load(idx, device)).flatten(2)  # [B, D, h*w]
        if per_view < height * width:
            keys = torch.rand(len(idx), height * width, generator=generator)
            picks = keys.argsort(dim=1)[:, :per_view].to(device)  # [B, S]
            feats = feats.gather(2, picks[:, None].expand(-1, feats.shape[1], -1))
        samples.append(feats.transpose(1, 2).reshape(-1, feats.shape[1]))  # [B*S, D]
    return torch.cat(samples)


def spherical_kmeans(
    points: Tensor,
    n_clusters: int,
    *,
    iterations: int = 30,
    init: KMeansInit = "kmeans++",
    seed: int = 0,
) -> Tensor:
    """Spherical (cosine) k-means; returns the [K, D] unit-norm centroids.

    Points are L2-normalised; each iteration assigns every point to the centroid of highest
    cosine similarity and replaces each centroid by the normalised mean direction of its
    points (an emptied cluster keeps its centroid). Stops after ``iterations`` or when no
    assignment changes.

    Args:
        points: [N, D] vectors (any norm).
        n_clusters: K.
        iterations: Maximum number of assignment/update rounds.
        init: ``kmeans++`` (seeds drawn with probability proportional to the squared cosine
            distance to the nearest seed so far) or ``random`` (K distinct points).
        seed: Seed of the initialisation.

    Raises:
        ValueError: fewer points than clusters, K < 1, ``iterations`` < 1 or an unknown init.
    """
    if init not in ("kmeans++", "random"):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    if n_clusters < 1 or iterations < 1:
        raise ValueError(
            f"need n_clusters >= 1 and iterations >= 1, got {n_clusters}, {iterations}"
        )
    if points.ndim != 2 or points.shape[0] < n_clusters:
        raise ValueError(f"need [N >= {n_clusters}, D] points, got shape {list(points.shape)}")
    x = F.normalize(points.float(), dim=1)
    generator = torch.Generator().manual_seed(seed)
    n_points = x.shape[0]
    if init == "random":
        chosen = torch.randperm(n_points, generator=generator)[:n_clusters]
        centroids = x[chosen.to(x.device)].clone()
    else:
        first = int(torch.randint(n_points, (1,), generator=generator))
        centroids = x[first : first + 1].clone()
        closest = 1.0 - (x @ centroids[0]).clamp(max=1.0)  # [N] cosine distance
        for _ in range(1, n_clusters):
            weights = closest.clamp(min=0.0).square().cpu()
            if float(weights.sum()) > 0:
                pick = int(torch.multinomial(weights, 1, generator=generator))
            else:
                pick = int(torch.randint(n_points, (1,), generator=generator))
            centroids = torch.cat([centroids, x[pick : pick + 1]])
            closest = torch.minimum(closest, 1.0 - (x @ x[pick]).clamp(max=1.0))
    assignment: Tensor | None = None
    for _ in range(iterations):
        new = (x @ centroids.T).argmax(dim=1)  # [N]
        if assignment is not None and torch.equal(new, assignment):
            break
        assignment = new
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
        filled = sums.norm(dim=1) > 0
        centroids = torch.where(filled[:, None], F.normalize(sums, dim=1), centroids)
    return centroids
