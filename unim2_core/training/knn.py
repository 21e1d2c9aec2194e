"""Nearest-neighbour pairs for the kNN loss term (design.md §3), also for small recordings.

Each training view is described by its spatially mean-pooled, L2-normalised RGB backbone
features; its ``keep`` most cosine-similar candidate views are stored, and the loss draws one
uniformly from the first ``neighbours`` of them.

Candidates (``loss.knn_candidates``):

- ``other_frames`` (default): only views of *other* frames. The five crops of one frame share
  their scene and overlap (the centre crop covers a quarter of each corner crop), so a kNN pair
  of two crops of one frame is partly the anchor paired with a shifted copy of itself, which
  the self pair already covers. On diverse frames this is rare (on the 10 NYU sample frames
  17 % of the 7 nearest views are crops of the anchor's own frame, ``benchmarks/
  shift_quantiles.py``), but nothing bounds it on a short recording of one place, and a small
  data set is exactly where every kNN pair counts. Excluding the anchor's frame keeps the kNN
  pair what it is meant to be: another image of similar content.
- ``all_views``: every other view, crops of the same frame included (the reference's choice).

Small data: a view has ``V - views_per_frame`` candidates (other frames) or ``V - 1`` (all
views). ``keep`` and ``neighbours`` are cut to what exists, so ``knn_keep: 30`` works with any
number of frames; with a single frame, other-frame candidates do not exist and the frame's
other crops are used instead. ``NeighbourPlan`` says what was used, and the trainer logs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from unim2_core.errors import CacheError
from unim2_core.training.feature_cache import FeatureStore, atomic_save_npy

KnnCandidates = Literal["other_frames", "all_views"]


def pooled_descriptors(features: np.ndarray, *, chunk: int = 256) -> torch.Tensor:
    """Mean-pooled, L2-normalised descriptors: [V, C, h, w] -> [V, C]."""
    parts = []
    for start in range(0, features.shape[0], chunk):
        block = torch.from_numpy(np.asarray(features[start : start + chunk], dtype=np.float32))
        parts.append(block.mean(dim=(2, 3)))  # [b, C]
    return F.normalize(torch.cat(parts), dim=1)


def nearest_neighbours(
    descriptors: torch.Tensor,
    *,
    keep: int,
    groups: np.ndarray | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """Indices of each row's most similar candidate rows, most similar first: [V, k].

    A row is never its own neighbour, and with ``groups`` (a group id per row, e.g. the frame
    of each view) never a row of its own group. ``k = min(keep, fewest candidates of a row)``.

    Raises:
        ValueError: some row has no candidate at all.
    """
    count = descriptors.shape[0]
    group_ids = np.arange(count) if groups is None else np.asarray(groups)
    if group_ids.shape != (count,):
        raise ValueError(f"groups must hold one id per row ({count}), got shape {group_ids.shape}")
    _, group_sizes = np.unique(group_ids, return_counts=True)
    available = count - int(group_sizes.max())
    if available < 1:
        raise ValueError(f"nearest neighbours need rows of at least 2 groups, got {count} rows")
    width = min(keep, available)
    ids = torch.from_numpy(group_ids)
    out = np.empty((count, width), dtype=np.int64)
    for start in range(0, count, chunk):
        block = descriptors[start : start + chunk]
        similarity = block @ descriptors.T  # [b, V]
        same = ids[start : start + block.shape[0], None] == ids[None, :]  # [b, V]
        similarity[same] = -float("inf")
        out[start : start + block.shape[0]] = similarity.topk(width, dim=1).indices.numpy()
    return out


class NeighbourPlan(NamedTuple):
    """The kNN table of a training store and how it was chosen.

    Attributes:
        table: [V, keep] candidate views per view, most similar first.
        keep: Neighbours kept per view (``loss.knn_keep``, or fewer on small data).
        draw: The loss draws uniformly among the first ``draw`` (``loss.knn_neighbours`` or
            fewer).
        candidates: ``other_frames`` or ``all_views``, as used (a single frame falls back to
            ``all_views``: its own other crops).
        requested_keep: ``loss.knn_keep``.
        requested_draw: ``loss.knn_neighbours``.
        n_frames: Frames of the store.
        n_views: Views of the store.
    """

    table: np.ndarray
    keep: int
    draw: int
    candidates: KnnCandidates
    requested_keep: int
    requested_draw: int
    n_frames: int
    n_views: int

    def summary(self) -> dict[str, object]:
        """Plain-type description for the run log and metrics."""
        return {
            "candidates": self.candidates,
            "keep": self.keep,
            "draw": self.draw,
            "requested_keep": self.requested_keep,
            "requested_draw": self.requested_draw,
            "frames": self.n_frames,
            "views": self.n_views,
        }

    def describe(self) -> str:
        """One line for logs: what the kNN pairs are drawn from."""
        source = "other frames" if self.candidates == "other_frames" else "all other views"
        cut = ""
        if (self.keep, self.draw) != (self.requested_keep, self.requested_draw):
            cut = (
                f" (requested keep {self.requested_keep} / draw {self.requested_draw}; "
                "cut to the candidates available)"
            )
        return (
            f"kNN pairs: {self.n_views} views of {self.n_frames} frames; neighbours from "
            f"{source}, keep {self.keep}, drawn among the nearest {self.draw}{cut}"
        )


def cached_neighbours(
    store: FeatureStore,
    *,
    keep: int,
    draw: int | None = None,
    candidates: KnnCandidates = "other_frames",
    modality: str = "rgb",
) -> NeighbourPlan:
    """The store's neighbour plan by ``modality`` features; the table is saved beside them.

    Raises:
        CacheError: the store has a single view, or a saved table cannot be read.
    """
    n_views = store.n_views
    n_frames = len(store.stems)
    used: KnnCandidates = candidates if n_frames > 1 else "all_views"
    groups = np.arange(n_views) // store.views_per_frame if used == "other_frames" else None
    features = store.features[modality]
    entry = Path(str(getattr(features, "filename", modality))).stem
    path = Path(store.path) / f"knn-{entry}-{keep}-{used}.npy"
    available = n_views - (store.views_per_frame if used == "other_frames" else 1)
    if available < 1:
        raise CacheError(f"kNN pairs need at least 2 training views, {str(store.path)!r} has one")
    width = min(keep, available)
    table: np.ndarray | None = None
    if path.is_file():
        try:
            table = np.load(path)
        except (OSError, ValueError) as err:
            raise CacheError(f"unreadable neighbour table {str(path)!r}: {err}") from err
        if table.shape != (n_views, width):
            table = None
    if table is None:
        table = nearest_neighbours(pooled_descriptors(features), keep=keep, groups=groups)
        atomic_save_npy(path, table)
    requested_draw = keep if draw is None else draw
    return NeighbourPlan(
        table=table,
        keep=width,
        draw=min(requested_draw, width),
        candidates=used,
        requested_keep=keep,
        requested_draw=requested_draw,
        n_frames=n_frames,
        n_views=n_views,
    )
