"""Nearest-neighbour pairs for the kNN loss term (design.md §3).

Each training view is described by its spatially mean-pooled, L2-normalised RGB backbone
features; its ``keep`` most cosine-similar other views are stored, and the loss draws one
uniformly from the first ``neighbours`` of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unim2_core.errors import CacheError
from unim2_core.training.feature_cache import FeatureStore, atomic_save_npy


def pooled_descriptors(features: np.ndarray, *, chunk: int = 256) -> torch.Tensor:
    """Mean-pooled, L2-normalised descriptors: [V, C, h, w] -> [V, C]."""
    parts = []
    for start in range(0, features.shape[0], chunk):
        block = torch.from_numpy(np.asarray(features[start : start + chunk], dtype=np.float32))
        parts.append(block.mean(dim=(2, 3)))  # [b, C]
    return F.normalize(torch.cat(parts), dim=1)


def nearest_neighbours(descriptors: torch.Tensor, *, keep: int, chunk: int = 1024) -> np.ndarray:
    """Indices of each row's ``keep`` most similar other rows, most similar first: [V, keep].

    A row is never its own neighbour; with fewer than ``keep + 1`` rows the available
    neighbours repeat cyclically.
    """
    count = descriptors.shape[0]
    if count < 2:
        raise ValueError(f"nearest neighbours need at least 2 views, got {count}")
    available = min(keep, count - 1)
    out = np.empty((count, keep), dtype=np.int64)
    for start in range(0, count, chunk):
        block = descriptors[start : start + chunk]
        similarity = block @ descriptors.T  # [b, V]
        rows = torch.arange(block.shape[0])
        similarity[rows, rows + start] = -float("inf")
        top = similarity.topk(available, dim=1).indices.numpy()  # [b, available]
        repeats = -(-keep // available)
        out[start : start + block.shape[0]] = np.tile(top, (1, repeats))[:, :keep]
    return out


def cached_neighbours(store: FeatureStore, *, keep: int, modality: str = "rgb") -> np.ndarray:
    """The store's neighbour table by ``modality`` features, computed once and saved beside them."""
    features = store.features[modality]
    entry = Path(str(getattr(features, "filename", modality))).stem
    path = Path(store.path) / f"knn-{entry}-{keep}.npy"
    if path.is_file():
        try:
            table = np.load(path)
        except (OSError, ValueError) as err:
            raise CacheError(f"unreadable neighbour table {str(path)!r}: {err}") from err
        if table.shape == (store.n_views, keep):
            cached: np.ndarray = table
            return cached
    table = nearest_neighbours(pooled_descriptors(features), keep=keep)
    atomic_save_npy(path, table)
    return table
